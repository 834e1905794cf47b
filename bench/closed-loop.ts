/**
 * The closed loop: N workers, each running one operation at a time, and the measured window.
 * runWorkers is the loop itself (any operation: a two-phase message here, a saga in sagas.ts);
 * runClosedLoop is the message workload. An operation counts when it completes inside the window
 * (completions per second, in steady state after the warm-up), with its whole latency.
 *
 * The message workload: prepare → local transaction (business row + barrier row) → submit, done
 * when the coordinator's branch call reaches the service.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { Msg } from '../sdk/index.js';
import type { BranchService } from './branch-service.js';

/** The loop's shape: how many workers, and how long the warm-up and the measured window last. */
export interface LoopOptions {
  concurrency: number;
  warmupMs: number;
  measureMs: number;
  /** Called when the measurement window opens and when it closes (for CPU and metrics snapshots). */
  onWindow?: (edge: 'start' | 'end') => Promise<void> | void;
  signal?: AbortSignal;
}

export interface LoopResult {
  /** Operations that completed inside the window. */
  completed: number;
  /** Length of the window in seconds (as measured). */
  seconds: number;
  /** Latency of each counted operation, milliseconds, sorted ascending. */
  latenciesMs: number[];
  /** Operations that failed (at any time, warm-up included), with the first error seen. */
  errors: number;
  firstError?: string;
}

/** What an operation resolves with: `performance.now()` at the moment it counts as done. */
export interface Completion {
  doneAt: number;
}

/** When a loop counts completions: `performance.now()` at the window's start and end (Infinity until known). */
export interface MeasuredWindow {
  start: number;
  end: number;
}

/**
 * The warm-up and the measured window of a loop whose senders already run: fills in `window` as it
 * opens and closes (`closing` runs the moment it closes, before the end snapshot), then stops the
 * senders and waits for them (`settled`), on an abort too.
 */
export async function measureWindow(
  options: Omit<LoopOptions, 'concurrency'>,
  window: MeasuredWindow,
  stop: () => void,
  settled: () => Promise<unknown>,
  closing?: () => void,
): Promise<void> {
  options.signal?.addEventListener('abort', stop, { once: true });
  try {
    await sleep(options.warmupMs, options.signal);
    await options.onWindow?.('start');
    window.start = performance.now();
    await sleep(options.measureMs, options.signal);
    window.end = performance.now();
    closing?.();
    await options.onWindow?.('end');
  } finally {
    stop();
    await settled();
    options.signal?.removeEventListener('abort', stop);
  }
}

/**
 * Runs `operation(worker, index)` in `concurrency` workers until the window closes. A completion
 * inside the window is counted, with its latency from the operation's start, and handed to
 * `counted` (for per-step sums); a rejection counts as an error, and that worker backs off a little.
 */
export async function runWorkers<T extends Completion>(
  options: LoopOptions,
  operation: (worker: number, index: number) => Promise<T>,
  counted?: (completion: T, startedAt: number) => void,
): Promise<LoopResult> {
  const window: MeasuredWindow = { start: Infinity, end: Infinity };
  let stopping = false;
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;

  const worker = async (w: number): Promise<void> => {
    for (let i = 0; !stopping; i++) {
      const started = performance.now();
      try {
        const completion = await operation(w, i);
        if (completion.doneAt >= window.start && completion.doneAt < window.end) {
          latencies.push(completion.doneAt - started);
          counted?.(completion, started);
        }
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
        // Do not spin on a broken setup: back off a little before the next operation.
        await delay(100);
      }
    }
  };

  const workers = Array.from({ length: options.concurrency }, (_, w) => worker(w));
  await measureWindow(
    options,
    window,
    () => (stopping = true),
    () => Promise.all(workers),
  );
  latencies.sort((a, b) => a - b);
  const seconds = (window.end - window.start) / 1000;
  return { completed: latencies.length, seconds, latenciesMs: latencies, errors, ...(firstError ? { firstError } : {}) };
}

export interface ClosedLoopOptions extends LoopOptions {
  /** The coordinator's DTM API, or several coordinators': worker w sends to the (w mod n)th. */
  dtm: string | readonly string[];
  service: BranchService;
  pool: pg.Pool;
}

export interface ClosedLoopResult extends LoopResult {
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

const phaseKeys = ['prepare', 'localTxSubmit', 'branchWait'] as const;

/** How long a message may take before it counts as failed; far above any healthy latency. */
const messageTimeoutMs = 30_000;

export const businessTableDdl = `create table if not exists bench_business (
  id bigserial primary key, gid text not null, amount int not null, created_at timestamptz default now())`;

export async function runClosedLoop(options: ClosedLoopOptions): Promise<ClosedLoopResult> {
  const workload = messageWorkload(options);
  const result = await runWorkers(options, workload.send, workload.counted);
  return { ...result, phasesMs: workload.phasesMs(result.completed) };
}

/** What the message workload needs, whatever drives it (this closed loop, or open-loop.ts's schedule). */
export type MessageTarget = Pick<ClosedLoopOptions, 'dtm' | 'service' | 'pool'>;

/**
 * The two-phase message as an operation: `send(w, i)` sends message i of worker w (w picks the
 * coordinator); `counted` adds a counted message's steps to the sums `phasesMs` averages.
 */
export function messageWorkload({ dtm, service, pool }: MessageTarget) {
  const run = randomBytes(4).toString('hex');
  const transIn = `${service.url}/TransIn`;
  const queryPrepared = `${service.url}/QueryPrepared`;
  const phaseSums: Phases = { prepare: 0, localTxSubmit: 0, branchWait: 0 };
  const phaseSamples: Record<keyof Phases, number[]> = { prepare: [], localTxSubmit: [], branchWait: [] };
  const coordinators = typeof dtm === 'string' ? [dtm] : dtm;

  const send = async (w: number, i: number) => {
    const gid = `bench-${run}-${w}-${i}`;
    const arrived = service.arrival(gid, messageTimeoutMs);
    arrived.catch(() => undefined); // awaited below; this only keeps an early failure from going unhandled
    const msg = new Msg(coordinators[w % coordinators.length]!, gid).add(transIn, { amount: 1 });
    let prepared = NaN;
    const started = performance.now();
    await msg.doAndSubmit<void, pg.PoolClient>(queryPrepared, pool, async (tx) => {
      prepared = performance.now(); // doAndSubmit runs this right after prepare answered
      await tx.query('insert into bench_business (gid, amount) values ($1, $2)', [gid, 1]);
    });
    const submitted = performance.now();
    return { doneAt: await arrived, started, prepared, submitted };
  };
  const counted = (m: Awaited<ReturnType<typeof send>>) => {
    const phases: Phases = { prepare: m.prepared - m.started, localTxSubmit: m.submitted - m.prepared, branchWait: m.doneAt - m.submitted };
    for (const key of phaseKeys) {
      phaseSums[key] += phases[key];
      phaseSamples[key].push(phases[key]);
    }
  };
  const phasesMs = (n: number): Phases => ({
    prepare: phaseSums.prepare / n,
    localTxSubmit: phaseSums.localTxSubmit / n,
    branchWait: phaseSums.branchWait / n,
  });
  /** The `q` quantile of each step on its own (the slowest messages' steps need not be the same messages). */
  const phaseQuantileMs = (q: number): Phases => {
    const at = (key: keyof Phases) =>
      percentile(
        [...phaseSamples[key]].sort((a, b) => a - b),
        q,
      );
    return { prepare: at('prepare'), localTxSubmit: at('localTxSubmit'), branchWait: at('branchWait') };
  };
  return { send, counted, phasesMs, phaseQuantileMs };
}

/** Sleeps; resolves early (without throwing) when the signal aborts. */
export async function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  await delay(ms, undefined, { signal }).catch(() => undefined);
}

/** The value below which `q` (0..1) of the sorted values lie (nearest rank). */
export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? NaN;
}
