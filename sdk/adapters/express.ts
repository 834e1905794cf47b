/**
 * Express adapter, the twin of the Fastify one: DTM's query parameters in, DTM's answer out.
 * Structural types keep Express out of the SDK's dependencies; needs express.json() for bodies.
 */
import { BranchBarrier, type BarrierSource } from '../barrier.js';
import type { Workflows } from '../workflow.js';
import { answerBranch, type BranchHandler } from './answer-branch.js';

interface ResponseLike {
  status(code: number): ResponseLike;
  json(body: unknown): unknown;
}

/** Wraps a branch handler for `app.post(url, expressBranch(...))`. */
export function expressBranch<B = unknown>(handler: BranchHandler<B>) {
  return async (req: { query: unknown; body: unknown }, res: ResponseLike): Promise<void> => {
    const answer = await answerBranch(req.query, req.body, handler);
    res.status(answer.status).json(answer.body);
  };
}

/** A ready query-prepared route for Express. */
export function expressQueryPrepared(db: BarrierSource) {
  return expressBranch(async ({ barrier }) => BranchBarrier.queryPrepared(db, barrier.call.gid));
}

/** The route the coordinator calls to resume a workflow, for Express (with express.json()). */
export function expressWorkflow(workflows: Pick<Workflows, 'resume'>) {
  return async (req: { query: unknown; body: unknown }, res: ResponseLike): Promise<void> => {
    const answer = await workflows.resume(req.query, req.body);
    res.status(answer.status).json(answer.body);
  };
}
