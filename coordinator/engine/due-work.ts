/**
 * Due work for this node: claims the transactions whose time has come (retries, delayed messages,
 * dangling prepares, work of dead nodes) and pairs each with the pass of its type.
 */
import { claimDue, pendingBranches } from '../store/transactions.js';
import { leaseSeconds, type EngineContext } from './context.js';
import type { MsgProcessor } from './msg-process.js';
import type { SagaProcessor } from './saga-process.js';
import type { WorkflowProcessor } from './workflow-process.js';

export interface DuePass {
  /** Keyed broker messages of one key must run one after another, in this order; undefined: free to overlap. */
  key: string | undefined;
  run: () => Promise<unknown>;
}

export interface Processors {
  msg: MsgProcessor;
  saga: SagaProcessor;
  workflow: WorkflowProcessor;
}

export class DueWork {
  constructor(
    private readonly ctx: Pick<EngineContext, 'config' | 'database' | 'nodeId' | 'metrics'>,
    private readonly processors: Processors,
  ) {}

  /** Claims up to `room` due transactions and returns their passes in submit order. */
  async claim(room: number): Promise<DuePass[]> {
    const { config, database, nodeId, metrics } = this.ctx;
    const startedAt = performance.now();
    const lease = leaseSeconds(config, config.requestTimeout);
    const rows = await claimDue(database, nodeId, room, lease);
    metrics.claimed.inc(rows.length);
    // A saga pass reads its own branches; a message pass is given its pending ones.
    const branches = await pendingBranches(
      database,
      rows.filter((r) => r.trans_type !== 'saga').map((r) => r.gid),
    );
    const { msg, saga, workflow } = this.processors;
    return [...rows]
      .sort((a, b) => (a.submit_seq ?? 0) - (b.submit_seq ?? 0))
      .map((row) => {
        const pending = branches.get(row.gid) ?? [];
        return {
          key: pending.find((b) => b.order_key !== null)?.order_key ?? undefined,
          run: () =>
            row.trans_type === 'saga'
              ? saga.run(row, startedAt, lease)
              : row.trans_type === 'workflow'
                ? workflow.run(row, startedAt, lease)
                : msg.run(row, pending, startedAt, lease),
        };
      });
  }
}
