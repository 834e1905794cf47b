/** Concord's batched two-phase messages (schemas/batch.ts) under /api/concord/msg. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { batchReplySchema, msgBatchSchema, type BatchItem } from '../../schemas/batch.js';
import { errorReplySchema } from '../../schemas/dtm.js';
import type { MsgEngine } from '../engine/msg.js';
import { errorReply } from './error-handler.js';
import { keepTraceContext } from './trace-headers.js';

export interface BatchRoutesOptions {
  msg: MsgEngine;
}

const summaries = {
  prepare: 'Prepare up to 500 two-phase messages; one result per message, in order.',
  submit: 'Submit up to 500 two-phase messages (prepared or not); one result per message, in order.',
  abort: 'Abort up to 500 prepared two-phase messages; one result per message, in order.',
} as const;

export const batchRoutes: FastifyPluginAsyncZod<BatchRoutesOptions> = async (app, { msg }) => {
  for (const op of ['prepare', 'submit', 'abort'] as const) {
    app.post(
      `/msg/${op}`,
      {
        schema: {
          summary: summaries[op],
          body: msgBatchSchema,
          response: { 200: batchReplySchema, 400: errorReplySchema, 503: errorReplySchema },
        },
      },
      async (request) => {
        // Each message as if it came alone: the engine's group commit stores them together.
        const results = await Promise.all(
          request.body.transactions.map(async (trans): Promise<BatchItem> => {
            try {
              keepTraceContext(request.headers, trans);
              await msg[op](trans);
              return { gid: trans.gid, status: 200, dtm_result: 'SUCCESS' };
            } catch (err) {
              const { status, body } = errorReply(err, request.log, { gid: trans.gid, trans_type: trans.trans_type });
              return { gid: trans.gid, status, ...body };
            }
          }),
        );
        return { results };
      },
    );
  }
};
