CREATE TABLE "operator_actions" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"subject_kind" varchar(45) NOT NULL,
	"subject" varchar(1024) NOT NULL,
	"action" varchar(45) NOT NULL,
	"operator" varchar(64) NOT NULL,
	"detail" text DEFAULT '' NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "operator_actions_subject_idx" ON "operator_actions" USING btree ("subject_kind","subject","id");