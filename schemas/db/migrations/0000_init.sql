CREATE TABLE "trans_branch_op" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"gid" varchar(128) NOT NULL,
	"url" varchar(1024) NOT NULL,
	"data" text DEFAULT '' NOT NULL,
	"branch_id" varchar(128) NOT NULL,
	"op" varchar(45) NOT NULL,
	"status" varchar(45) NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"last_error" text,
	"create_time" timestamp with time zone DEFAULT now() NOT NULL,
	"update_time" timestamp with time zone DEFAULT now() NOT NULL,
	"finish_time" timestamp with time zone,
	"rollback_time" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "trans_global" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"gid" varchar(128) NOT NULL,
	"trans_type" varchar(45) NOT NULL,
	"status" varchar(45) NOT NULL,
	"query_prepared" varchar(1024) DEFAULT '' NOT NULL,
	"protocol" varchar(45) DEFAULT 'http' NOT NULL,
	"options" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"custom_data" varchar(1024) DEFAULT '' NOT NULL,
	"content_hash" varchar(64) NOT NULL,
	"next_cron_interval" real NOT NULL,
	"next_cron_time" timestamp with time zone,
	"owner" varchar(128) DEFAULT '' NOT NULL,
	"retry_count" integer DEFAULT 0 NOT NULL,
	"rollback_reason" text DEFAULT '' NOT NULL,
	"result" text DEFAULT '' NOT NULL,
	"create_time" timestamp with time zone DEFAULT now() NOT NULL,
	"update_time" timestamp with time zone DEFAULT now() NOT NULL,
	"finish_time" timestamp with time zone,
	"rollback_time" timestamp with time zone
);
--> statement-breakpoint
CREATE UNIQUE INDEX "trans_branch_op_uniq" ON "trans_branch_op" USING btree ("gid","branch_id","op");--> statement-breakpoint
CREATE UNIQUE INDEX "trans_global_gid_uniq" ON "trans_global" USING btree ("gid");--> statement-breakpoint
CREATE INDEX "trans_global_due_idx" ON "trans_global" USING btree ("next_cron_time") WHERE "trans_global"."status" in ('prepared', 'submitted', 'aborting');