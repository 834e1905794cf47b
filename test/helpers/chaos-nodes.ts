/** The chaos run's two coordinator processes and their store. */
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { freePort, startCoordinator, type RunningCoordinator } from './coordinator.js';

/** Retries, check-backs and lease take-overs in seconds rather than DTM's 10 s and 35 s. */
const coordinatorEnv = {
  CONCORD_LOG_LEVEL: 'error',
  CONCORD_RETRY_INTERVAL: '0.2',
  CONCORD_MAX_RETRY_INTERVAL: '1',
  CONCORD_TIMEOUT_TO_FAIL: '2',
  CONCORD_POLL_INTERVAL: '0.2',
  CONCORD_REQUEST_TIMEOUT: '3',
  CONCORD_MIN_LEASE: '6',
  CONCORD_SHUTDOWN_TIMEOUT: '2',
};

/** The two coordinators, each always on the same port, so that clients keep their URLs across restarts. */
export class Nodes {
  private readonly running: (RunningCoordinator | undefined)[] = [undefined, undefined];
  private readonly ports: number[] = [];
  unexpectedExits = 0;

  constructor(
    private readonly store: string,
    private readonly progress: (line: string) => void,
  ) {}

  dtm(i: number): string {
    return `http://127.0.0.1:${this.ports[i]}/api/dtmsvr`;
  }

  async start(i: number): Promise<void> {
    this.ports[i] ??= await freePort();
    for (let attempt = 1; ; attempt++) {
      try {
        this.running[i] = await startCoordinator({ store: this.store, port: this.ports[i], env: coordinatorEnv });
        return;
      } catch (error) {
        // The port of the killed node may linger a moment, or the store be restarting.
        if (attempt >= 10) throw error;
        await delay(500);
      }
    }
  }

  async kill(i: number): Promise<void> {
    await this.running[i]?.stop('SIGKILL');
    await delay(Math.random() * 1_000);
    await this.start(i);
  }

  /** Starts again a node that exited by itself (e.g. when its store went away), and counts it. */
  async reviveExited(): Promise<void> {
    for (const [i, node] of this.running.entries())
      if (node !== undefined && (node.proc.exitCode !== null || node.proc.signalCode !== null)) {
        this.unexpectedExits++;
        this.progress(`node ${i} exited by itself (${node.proc.exitCode ?? node.proc.signalCode}): ${node.output().slice(-500)}`);
        await this.start(i);
      }
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.running.map((node) => node?.stop('SIGKILL') ?? Promise.resolve(null)));
  }
}

/** Waits until no transaction in the store is unfinished (or the time is up); the status of every gid. */
export async function settle(storeUrl: string, seconds: number, progress: (line: string) => void): Promise<Map<string, string>> {
  const pool = new pg.Pool({ connectionString: storeUrl, max: 1 });
  try {
    const deadline = Date.now() + seconds * 1000;
    let lastReport = Date.now();
    for (;;) {
      const { rows } = await pool.query<{ n: number }>(
        `select count(*)::int as n from trans_global where status not in ('succeed', 'failed')`,
      );
      const open = rows[0]?.n ?? 0;
      if (open === 0 || Date.now() > deadline) break;
      if (Date.now() - lastReport > 5_000) {
        progress(`${open.toLocaleString('en')} transactions not final yet`);
        lastReport = Date.now();
      }
      await delay(250);
    }
    const { rows } = await pool.query<{ gid: string; status: string }>('select gid, status from trans_global');
    return new Map(rows.map((r) => [r.gid, r.status]));
  } finally {
    await pool.end();
  }
}
