CREATE TABLE "parked_messages" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"consumer" varchar(200) NOT NULL,
	"message_id" varchar(512) NOT NULL,
	"source" varchar(1024) NOT NULL,
	"error" text NOT NULL,
	"attempts" integer NOT NULL,
	"first_failure" timestamp with time zone NOT NULL,
	"last_failure" timestamp with time zone NOT NULL,
	"state" varchar(20) DEFAULT 'parked' NOT NULL,
	"redrive_by" varchar(64),
	"redrive_at" timestamp with time zone,
	"listed_at" timestamp with time zone NOT NULL,
	"resolved_at" timestamp with time zone,
	"reported_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "parked_messages_uniq" ON "parked_messages" USING btree ("consumer","message_id");--> statement-breakpoint
CREATE INDEX "parked_messages_state_idx" ON "parked_messages" USING btree ("state","id");