/**
 * The measured workload: N workers, each sending one two-phase message at a time (closed loop).
 * A message is prepare → local transaction (business row + barrier row) → submit, and it is done
 * when the coordinator's branch call reaches the service. Messages whose branch call arrives
 * inside the measurement window are counted (completions per second, in steady state after the
 * warm-up), with their whole latency.
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
  /** Messages whose branch call arrived inside the window. */
  completed: number;
  /** Length of the window in seconds (as measured). */
  seconds: number;
  /** Latency of each completed message, milliseconds, sorted ascending. */
  latenciesMs: number[];
  /** Messages that failed (at any time, warm-up included), with the first error seen. */
  errors: number;
  firstError?: string;
  /** Mean milliseconds of each step of the counted messages, as the client saw them. */
  phasesMs: Phases;
}

/**
 * prepare: the prepare call; localTxSubmit: the local transaction and the submit call;
 * branchWait: from submit's answer to the branch call's arrival (negative when the branch came first).
 */
export interface Phases {
  prepare: number;
  localTxSubmit: number;
  branchWait: number;
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
  const phaseSums: Phases = { prepare: 0, localTxSubmit: 0, branchWait: 0 };
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
        let prepared = NaN;
        await msg.doAndSubmit<void, pg.PoolClient>(queryPrepared, pool, async (tx) => {
          prepared = performance.now(); // doAndSubmit runs this right after prepare answered
          await tx.query('insert into bench_business (gid, amount) values ($1, $2)', [gid, 1]);
        });
        const submitted = performance.now();
        const at = await arrived;
        if (at >= windowStart && at < windowEnd) {
          latencies.push(at - started);
          phaseSums.prepare += prepared - started;
          phaseSums.localTxSubmit += submitted - prepared;
          phaseSums.branchWait += at - submitted;
        }
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
  const n = latencies.length;
  const phasesMs: Phases = {
    prepare: phaseSums.prepare / n,
    localTxSubmit: phaseSums.localTxSubmit / n,
    branchWait: phaseSums.branchWait / n,
  };
  return { completed: n, seconds, latenciesMs: latencies, errors, ...(firstError ? { firstError } : {}), phasesMs };
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
