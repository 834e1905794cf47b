CREATE INDEX "trans_global_status_idx" ON "trans_global" USING btree ("status","id");--> statement-breakpoint
CREATE INDEX "trans_global_type_idx" ON "trans_global" USING btree ("trans_type","id");--> statement-breakpoint
CREATE INDEX "trans_global_create_idx" ON "trans_global" USING btree ("create_time");--> statement-breakpoint
CREATE INDEX "trans_global_finished_idx" ON "trans_global" USING btree (coalesce("finish_time", "update_time")) WHERE "trans_global"."status" in ('succeed', 'failed');