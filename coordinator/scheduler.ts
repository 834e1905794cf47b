/**
 * Finds due work in the store (retries, delayed messages, dangling prepares, work of dead nodes)
 * and hands it to the engine. Submitted messages are delivered right after submit; this loop is
 * only the safety net, so an idle scan every pollInterval is enough.
 */
import { leaseSeconds, type EngineContext } from './engine/context.js';
import { Pause } from './pause.js';
import type { MsgProcessor } from './engine/msg-process.js';
import type { SagaProcessor } from './engine/saga-process.js';
import type { WorkflowProcessor } from './engine/workflow-process.js';
import { claimDue, pendingBranches } from './store/transactions.js';

export class Scheduler {
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly pause = new Pause();
  private active = 0;

  constructor(
    private readonly ctx: EngineContext,
    private readonly processors: { msg: MsgProcessor; saga: SagaProcessor; workflow: WorkflowProcessor },
  ) {}

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.pause.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { config, database, logger, nodeId, metrics } = this.ctx;
    const max = config.claimBatch;
    while (this.running) {
      let claimed = 0;
      try {
        const room = max - this.active;
        if (room > 0) {
          const startedAt = performance.now();
          const lease = leaseSeconds(config, config.requestTimeout);
          const rows = await claimDue(database, nodeId, room, lease);
          claimed = rows.length;
          metrics.claimed.inc(claimed);
          // A saga pass reads its own branches; a message pass is given its pending ones.
          const branches = await pendingBranches(
            database,
            rows.filter((r) => r.trans_type !== 'saga').map((r) => r.gid),
          );
          // Keyed broker messages of one key run one after another, in submit order, so a backlog
          // of one key drains in one scan instead of one message per scan.
          const chains = new Map<string, Promise<unknown>>();
          for (const row of [...rows].sort((a, b) => (a.submit_seq ?? 0) - (b.submit_seq ?? 0))) {
            this.active++;
            const pending = branches.get(row.gid) ?? [];
            const key = pending.find((b) => b.order_key !== null)?.order_key;
            const { msg, saga, workflow } = this.processors;
            const start = (): Promise<unknown> =>
              row.trans_type === 'saga'
                ? saga.run(row, startedAt, lease)
                : row.trans_type === 'workflow'
                  ? workflow.run(row, startedAt, lease)
                  : msg.run(row, pending, startedAt, lease);
            const pass = key ? (chains.get(key) ?? Promise.resolve()).then(start) : start();
            if (key) chains.set(key, pass);
            void this.ctx.inFlight.track(pass).finally(() => {
              // Room again after being full: scan now rather than after the idle wait.
              if (this.active-- >= max) this.pause.wake();
            });
          }
        }
      } catch (err) {
        logger.error({ err }, 'scan for due work failed');
      }
      // A full claim means more may be due: scan again at once.
      if (claimed === 0 || this.active >= max) await this.pause.for(config.pollInterval * 1000);
    }
  }
}
