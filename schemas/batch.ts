/**
 * Batched two-phase messages: several messages prepared, submitted or aborted in one request
 * (POST /api/concord/msg/{prepare,submit,abort}). Each message is validated and stored as if sent
 * alone; the group commit writes them together. One answer per message, in order.
 */
import { z } from 'zod';
import { errorReplySchema, transRequestSchema } from './dtm.js';

/** At most this many messages per request: one request stays well under the body limit and one store round. */
export const maxBatch = 500;

export const msgBatchSchema = z
  .object({
    transactions: z
      .array(transRequestSchema)
      .min(1)
      .max(maxBatch)
      .describe(`Up to ${maxBatch} two-phase messages (trans_type msg), each as the body of DTM's prepare, submit or abort.`),
  })
  .superRefine(({ transactions }, ctx) => {
    const seen = new Set<string>();
    transactions.forEach((t, i) => {
      if (t.trans_type !== 'msg')
        ctx.addIssue({ code: 'custom', path: ['transactions', i, 'trans_type'], message: 'a batch holds two-phase messages (msg) only' });
      if (seen.has(t.gid))
        ctx.addIssue({ code: 'custom', path: ['transactions', i, 'gid'], message: `gid ${t.gid} appears twice in the batch` });
      seen.add(t.gid);
    });
  });
export type MsgBatch = z.infer<typeof msgBatchSchema>;

/** One message's outcome: its status and, when it failed, the error body the single request would have answered. */
export const batchItemSchema = errorReplySchema.partial({ code: true, message: true }).extend({
  gid: z.string(),
  status: z.number().int(),
  dtm_result: z.enum(['SUCCESS', 'FAILURE', 'ONGOING']).optional(),
});
export type BatchItem = z.infer<typeof batchItemSchema>;

export const batchReplySchema = z.object({ results: z.array(batchItemSchema) });
