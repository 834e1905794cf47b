/** The one group-commit setup of the engine: batch size, store transactions in flight, metrics. */
import { GroupCommit, type BatchRunner } from '../store/group-commit.js';
import type { EngineContext } from './context.js';

export function batched<I, O>(ctx: Pick<EngineContext, 'metrics'>, kind: string, runner: BatchRunner<I, O>): GroupCommit<I, O> {
  return new GroupCommit(runner, {
    maxBatch: 256,
    // One store transaction of a kind at a time: requests arriving meanwhile share the next one.
    // With two, at moderate load (half of peak) each request found a free slot and committed
    // alone (1.2-1.6 per transaction), so half the rate cost nearly the CPU of the peak.
    concurrency: 1,
    onBatch: (size, seconds) => {
      ctx.metrics.batchSize.observe({ kind }, size);
      ctx.metrics.batchSeconds.observe({ kind }, seconds);
    },
  });
}

/** Rounds a batch runner makes for items whose rows other requests changed under it, before it gives up on them. */
export const raceRounds = 5;

/** A batch item's answer when another request changed its row between two statements: run it again. */
export const again = Symbol('again');

/**
 * Runs `round` over the items until each has an answer; an item still answered `again` after
 * raceRounds rounds lost its race to other requests and gets `lost(item)`, a defined answer.
 */
export async function inRounds<I, O>(items: I[], round: (items: I[]) => Promise<(O | typeof again)[]>, lost: (item: I) => O): Promise<O[]> {
  const answers = new Array<O>(items.length);
  let open = items.map((_, i) => i);
  for (let n = 0; n < raceRounds && open.length > 0; n++) {
    const got = await round(open.map((i) => items[i]!));
    open = open.filter((i, k) => {
      const answer = got[k]!;
      if (answer === again) return true;
      answers[i] = answer;
      return false;
    });
  }
  for (const i of open) answers[i] = lost(items[i]!);
  return answers;
}
