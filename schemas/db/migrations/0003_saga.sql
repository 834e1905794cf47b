ALTER TABLE "trans_branch_op" ADD COLUMN "result" text;--> statement-breakpoint
ALTER TABLE "trans_branch_op" ADD COLUMN "reply_due" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "trans_branch_op" ADD COLUMN "retry_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "trans_global" ADD COLUMN "attention_reason" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "trans_global" ADD COLUMN "poked" boolean DEFAULT false NOT NULL;