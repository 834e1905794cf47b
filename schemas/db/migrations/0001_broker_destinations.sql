CREATE TABLE "kv" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"cat" varchar(45) NOT NULL,
	"k" varchar(128) NOT NULL,
	"v" jsonb NOT NULL,
	"version" bigint DEFAULT 1 NOT NULL,
	"create_time" timestamp with time zone DEFAULT now() NOT NULL,
	"update_time" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "trans_branch_op" ADD COLUMN "meta" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "kv_cat_k_uniq" ON "kv" USING btree ("cat","k");