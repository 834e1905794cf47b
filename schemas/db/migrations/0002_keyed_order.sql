CREATE SEQUENCE "public"."trans_submit_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
ALTER TABLE "trans_branch_op" ADD COLUMN "order_key" text;--> statement-breakpoint
ALTER TABLE "trans_global" ADD COLUMN "submit_seq" bigint;--> statement-breakpoint
CREATE INDEX "trans_branch_op_order_idx" ON "trans_branch_op" USING btree ("order_key") WHERE "trans_branch_op"."order_key" is not null and "trans_branch_op"."status" = 'prepared';