/**
 * The measured workload: N workers, each sending one two-phase message at a time (closed loop).
 * A message is prepare → local transaction (business row + barrier row) → submit, and it is done
 * when the coordinator's branch call reaches the service. Only messages that both start and end
 * inside the measurement window are counted, so warm-up and drain do not leak into the figures.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { Msg } from '../sdk/index.js';
import type { BranchService } from './branch-service.js';

export interface ClosedLoopOptions {
  dtm: string;
  service: BranchService;
  pool: pg.Pool;
  concurrency: number;
  warmupMs: number;
  measureMs: number;
  /** Called when the measurement window opens and when it closes (for CPU and metrics snapshots). */
  onWindow?: (edge: 'start' | 'end') => Promise<void> | void;
  signal?: AbortSignal;
}

export interface ClosedLoopResult {
  /** Messages that started and finished inside the window. */
  completed: number;
  /** Length of the window in seconds (as measured). */
  seconds: number;
  /** Latency of each completed message, milliseconds, sorted ascending. */
  latenciesMs: number[];
  /** Messages that failed (at any time, warm-up included), with the first error seen. */
  errors: number;
  firstError?: string;
}

/** How long a message may take before it counts as failed; far above any healthy latency. */
const messageTimeoutMs = 30_000;

export const businessTableDdl = `create table if not exists bench_business (
  id bigserial primary key, gid text not null, amount int not null, created_at timestamptz default now())`;

export async function runClosedLoop(options: ClosedLoopOptions): Promise<ClosedLoopResult> {
  const { dtm, service, pool, concurrency } = options;
  const run = randomBytes(4).toString('hex');
  const transIn = `${service.url}/TransIn`;
  const queryPrepared = `${service.url}/QueryPrepared`;
  let windowStart = Infinity;
  let windowEnd = Infinity;
  let stopping = false;
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;

  const worker = async (w: number): Promise<void> => {
    for (let i = 0; !stopping; i++) {
      const gid = `bench-${run}-${w}-${i}`;
      const started = performance.now();
      const arrived = service.arrival(gid, messageTimeoutMs);
      arrived.catch(() => undefined); // awaited below; this only keeps an early failure from going unhandled
      try {
        const msg = new Msg(dtm, gid).add(transIn, { amount: 1 });
        await msg.doAndSubmit<void, pg.PoolClient>(queryPrepared, pool, async (tx) => {
          await tx.query('insert into bench_business (gid, amount) values ($1, $2)', [gid, 1]);
        });
        const at = await arrived;
        if (started >= windowStart && at < windowEnd) latencies.push(at - started);
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
        // Do not spin on a broken setup: back off a little before the next message.
        await delay(100);
      }
    }
  };

  const workers = Array.from({ length: concurrency }, (_, w) => worker(w));
  const stop = () => (stopping = true);
  options.signal?.addEventListener('abort', stop, { once: true });
  try {
    await sleep(options.warmupMs, options.signal);
    await options.onWindow?.('start');
    windowStart = performance.now();
    await sleep(options.measureMs, options.signal);
    windowEnd = performance.now();
    await options.onWindow?.('end');
  } finally {
    stop();
    await Promise.all(workers);
    options.signal?.removeEventListener('abort', stop);
  }
  latencies.sort((a, b) => a - b);
  const seconds = (windowEnd - windowStart) / 1000;
  return { completed: latencies.length, seconds, latenciesMs: latencies, errors, ...(firstError ? { firstError } : {}) };
}

/** Sleeps; resolves early (without throwing) when the signal aborts. */
async function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  await delay(ms, undefined, { signal }).catch(() => undefined);
}

/** The value below which `q` (0..1) of the sorted values lie (nearest rank). */
export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? NaN;
}
