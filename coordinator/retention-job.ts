/**
 * Keeps the store from growing forever: every retentionInterval seconds, deletes the transactions
 * that finished more than `retention` seconds ago (0 keeps them forever), in batches of
 * retentionBatch rows. Between batches it rests three times as long as the batch took (at least
 * 50 ms): a backlog (the first run on a big store, or after downtime) drains at a quarter of the
 * store's delete speed, and the hot path keeps the rest.
 */
import type { EngineContext } from './engine/context.js';
import { BackgroundLoop } from './background-loop.js';
import { deleteExpiredBatch } from './engine/retention.js';

export class RetentionJob {
  private readonly loop = new BackgroundLoop();

  constructor(private readonly ctx: Pick<EngineContext, 'config' | 'database' | 'logger' | 'metrics'>) {}

  start(): void {
    if (this.ctx.config.retention === 0) return;
    this.loop.start(() => this.run());
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  private async run(): Promise<void> {
    const { config, logger } = this.ctx;
    while (this.loop.running) {
      try {
        let total = 0;
        while (this.loop.running) {
          const startedAt = performance.now();
          const deleted = await deleteExpiredBatch(this.ctx);
          total += deleted.transactions;
          // Another node is at it, or nothing more is due: wait for the next round.
          if (!deleted.locked || deleted.transactions < config.retentionBatch || !this.loop.running) break;
          await this.loop.rest(Math.max(50, 3 * (performance.now() - startedAt)));
        }
        if (total > 0) logger.info({ deleted: total }, 'retention: deleted finished transactions');
      } catch (err) {
        logger.error({ err }, 'retention: deleting finished transactions failed');
      }
      if (this.loop.running) await this.loop.rest(config.retentionInterval * 1000);
    }
  }
}
