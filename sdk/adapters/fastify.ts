/**
 * Fastify adapter: a branch handler gets the barrier built from DTM's query parameters, and its
 * outcome is answered the way the coordinator reads it (200, 409 FAILURE, 425 ONGOING, 500 retry).
 * Structural types keep Fastify out of the SDK's dependencies.
 */
import { BranchBarrier } from '../barrier.js';
import { dtmAnswer } from '../errors.js';
import type { TransactionSource } from '../sql-executor.js';

interface RequestLike {
  query: unknown;
  body: unknown;
}
interface ReplyLike {
  status(code: number): ReplyLike;
  send(body: unknown): unknown;
}

export type BranchHandler<B> = (ctx: { barrier: BranchBarrier; body: B; query: Record<string, string> }) => Promise<unknown>;

/** Wraps a branch handler: `async (req, reply) => …` for `app.post(url, handler)`. */
export function fastifyBranch<B = unknown>(handler: BranchHandler<B>) {
  return async (request: RequestLike, reply: ReplyLike): Promise<unknown> => {
    let answer;
    try {
      const barrier = BranchBarrier.from(request.query);
      await handler({ barrier, body: request.body as B, query: request.query as Record<string, string> });
      answer = dtmAnswer();
    } catch (err) {
      answer = dtmAnswer(err);
    }
    return reply.status(answer.status).send(answer.body);
  };
}

/** A ready query-prepared route: answers the coordinator's check-back from the barrier table. */
export function fastifyQueryPrepared(db: TransactionSource) {
  return fastifyBranch(async ({ barrier }) => BranchBarrier.queryPrepared(db, barrier.call.gid));
}
