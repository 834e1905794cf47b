/**
 * Express adapter, the twin of the Fastify one: DTM's query parameters in, DTM's answer out.
 * Structural types keep Express out of the SDK's dependencies; needs express.json() for bodies.
 */
import { BranchBarrier } from '../barrier.js';
import { dtmAnswer } from '../errors.js';
import type { TransactionSource } from '../sql-executor.js';
import type { BranchHandler } from './fastify.js';

interface RequestLike {
  query: unknown;
  body: unknown;
}
interface ResponseLike {
  status(code: number): ResponseLike;
  json(body: unknown): unknown;
}

/** Wraps a branch handler for `app.post(url, expressBranch(...))`. */
export function expressBranch<B = unknown>(handler: BranchHandler<B>) {
  return async (req: RequestLike, res: ResponseLike): Promise<void> => {
    let answer;
    try {
      const barrier = BranchBarrier.from(req.query);
      await handler({ barrier, body: req.body as B, query: req.query as Record<string, string> });
      answer = dtmAnswer();
    } catch (err) {
      answer = dtmAnswer(err);
    }
    res.status(answer.status).json(answer.body);
  };
}

/** A ready query-prepared route for Express. */
export function expressQueryPrepared(db: TransactionSource) {
  return expressBranch(async ({ barrier }) => BranchBarrier.queryPrepared(db, barrier.call.gid));
}
