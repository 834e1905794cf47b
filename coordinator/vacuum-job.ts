/**
 * The embedded store's autovacuum: every embeddedVacuumInterval seconds, VACUUM (ANALYZE) on the
 * PGlite store (store/vacuum.ts says why). A Postgres store is left to the server's autovacuum.
 */
import type { EngineContext } from './engine/context.js';
import { BackgroundLoop } from './background-loop.js';
import { vacuumEmbedded } from './store/vacuum.js';

export class VacuumJob {
  private readonly loop = new BackgroundLoop();

  constructor(private readonly ctx: Pick<EngineContext, 'config' | 'database' | 'logger'>) {}

  start(): void {
    if (this.ctx.database.kind !== 'pglite' || this.ctx.config.embeddedVacuumInterval === 0) return;
    this.loop.start(() => this.run());
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  private async run(): Promise<void> {
    const { config, database, logger } = this.ctx;
    for (;;) {
      await this.loop.rest(config.embeddedVacuumInterval * 1000);
      if (!this.loop.running) return;
      const started = performance.now();
      try {
        await vacuumEmbedded(database);
        logger.info({ ms: Math.round(performance.now() - started) }, 'embedded store vacuumed');
      } catch (err) {
        logger.error({ err }, 'vacuuming the embedded store failed');
      }
    }
  }
}
