/** What both HTTP adapters do: build the barrier from DTM's query, run the handler, map the outcome. */
import { BranchBarrier } from '../barrier.js';
import { dtmAnswer } from '../errors.js';

export type BranchHandler<B> = (ctx: { barrier: BranchBarrier; body: B; query: Record<string, string> }) => Promise<unknown>;

/** The status and body DTM expects for this handler's outcome on this request. */
export async function answerBranch<B>(
  query: unknown,
  body: unknown,
  handler: BranchHandler<B>,
): Promise<{ status: number; body: Record<string, string> }> {
  try {
    const barrier = BranchBarrier.from(query);
    await handler({ barrier, body: body as B, query: query as Record<string, string> });
    return dtmAnswer();
  } catch (err) {
    return dtmAnswer(err);
  }
}
