/**
 * Finds due work in the store (retries, delayed messages, dangling prepares, work of dead nodes)
 * and hands it to the engine. Submitted messages are delivered right after submit; this loop is
 * only the safety net, so an idle scan every pollInterval is enough.
 */
import type { EngineContext } from './engine/context.js';
import { DueWork, type Processors } from './engine/due-work.js';
import { BackgroundLoop } from './background-loop.js';

export class Scheduler {
  private readonly loop = new BackgroundLoop();
  private active = 0;
  private readonly due: DueWork;

  constructor(
    private readonly ctx: EngineContext,
    processors: Processors,
  ) {
    this.due = new DueWork(ctx, processors);
  }

  start(): void {
    this.loop.start(() => this.run());
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  private async run(): Promise<void> {
    const { config, logger } = this.ctx;
    const max = config.claimBatch;
    while (this.loop.running) {
      let claimed = 0;
      try {
        const room = max - this.active;
        if (room > 0) {
          const passes = await this.due.claim(room);
          claimed = passes.length;
          // Keyed broker messages of one key run one after another, in submit order, so a backlog
          // of one key drains in one scan instead of one message per scan.
          const chains = new Map<string, Promise<unknown>>();
          for (const { key, run } of passes) {
            this.active++;
            const pass = key ? (chains.get(key) ?? Promise.resolve()).then(run) : run();
            if (key) chains.set(key, pass);
            void this.ctx.inFlight.track(pass).finally(() => {
              // Room again after being full: scan now rather than after the idle wait.
              if (this.active-- >= max) this.loop.wake();
            });
          }
        }
      } catch (err) {
        logger.error({ err }, 'scan for due work failed');
      }
      // A full claim means more may be due: scan again at once.
      if (claimed === 0 || this.active >= max) await this.loop.rest(config.pollInterval * 1000);
    }
  }
}
