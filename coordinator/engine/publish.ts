/** The one way the engine calls a branch or sends its command: through the relay, counted in the metrics. */
import type { Delivery, DeliveryResult } from '../../relay/publisher.js';
import type { EngineContext } from './context.js';
import { traced } from './trace.js';

/**
 * Delivers to the branch's URL (an empty URL is a step with nothing to call: it succeeds).
 * `timed`: the call's duration is observed (a call that answers; not a command whose reply comes later).
 */
export async function publishBranch(
  ctx: Pick<EngineContext, 'relay' | 'metrics'>,
  delivery: Delivery & { params: { op: string }; timed: boolean },
): Promise<DeliveryResult> {
  if (delivery.url === '') return { outcome: 'SUCCESS', detail: 'no URL' };
  const { timed, ...rest } = delivery;
  const started = performance.now();
  const answer = await traced(rest, (d) => ctx.relay.publish(d));
  const op = delivery.params.op;
  ctx.metrics.branchCalls.inc({ op, outcome: answer.outcome });
  if (timed) ctx.metrics.branchSeconds.observe({ op }, (performance.now() - started) / 1000);
  return answer;
}
