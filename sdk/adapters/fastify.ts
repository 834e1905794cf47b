/**
 * Fastify adapter: a branch handler gets the barrier built from DTM's query parameters, and its
 * outcome is answered the way the coordinator reads it (200, 409 FAILURE, 425 ONGOING, 500 retry).
 * Structural types keep Fastify out of the SDK's dependencies.
 */
import { BranchBarrier, type BarrierSource } from '../barrier.js';
import type { Workflows } from '../workflow.js';
import { answerBranch, type BranchHandler } from './answer-branch.js';

export type { BranchHandler } from './answer-branch.js';

interface ReplyLike {
  status(code: number): ReplyLike;
  send(body: unknown): unknown;
}

/** Wraps a branch handler: `async (req, reply) => …` for `app.post(url, handler)`. */
export function fastifyBranch<B = unknown>(handler: BranchHandler<B>) {
  return async (request: { query: unknown; body: unknown }, reply: ReplyLike): Promise<unknown> => {
    const answer = await answerBranch(request.query, request.body, handler);
    return reply.status(answer.status).send(answer.body);
  };
}

/** A ready query-prepared route: answers the coordinator's check-back from the barrier table. */
export function fastifyQueryPrepared(db: BarrierSource) {
  return fastifyBranch(async ({ barrier }) => BranchBarrier.queryPrepared(db, barrier.call.gid));
}

/** The route the coordinator calls to resume a workflow (WorkflowsOptions.callback): `app.post(path, fastifyWorkflow(workflows))`. */
export function fastifyWorkflow(workflows: Pick<Workflows, 'resume'>) {
  return async (request: { query: unknown; body: unknown }, reply: ReplyLike): Promise<unknown> => {
    const answer = await workflows.resume(request.query, request.body);
    return reply.status(answer.status).send(answer.body);
  };
}
