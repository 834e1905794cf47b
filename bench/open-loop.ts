/**
 * The open loop: operations started on a fixed schedule (`ratePerSecond`), each without waiting
 * for the ones before, as independent users arrive. An operation's latency runs from its
 * scheduled start, not from when it actually started: if the client or the system fell behind,
 * the wait counts, so coordinated omission cannot hide queueing (a closed loop's workers simply
 * send less when the system slows down, and its tail then looks better than users see it).
 */
import type { Completion, LoopOptions, LoopResult, MeasuredWindow } from './closed-loop.js';
import { measureWindow } from './closed-loop.js';

export interface OpenLoopOptions extends Omit<LoopOptions, 'concurrency'> {
  /** Operations started per second, evenly spaced. */
  ratePerSecond: number;
}

export interface OpenLoopResult extends LoopResult {
  /** Operations scheduled inside the window (each counted in latenciesMs once it completed). */
  scheduled: number;
  /** Operations still running when the window closed (they are waited for, up to their own timeout). */
  outstandingAtEnd: number;
  /** How late the client started each operation of the window, sorted: its own event loop's share of the latency. */
  startLagsMs: number[];
}

/**
 * Runs `operation(index)` at `ratePerSecond` until the window closes, then waits for the ones in
 * flight. `completed` counts the completions inside the window (the rate achieved); `latenciesMs`
 * holds, for every operation scheduled inside the window, the time from its scheduled start to its
 * completion; a failure counts as an error.
 */
export async function runOpenLoop<T extends Completion>(
  options: OpenLoopOptions,
  operation: (index: number) => Promise<T>,
  counted?: (completion: T) => void,
): Promise<OpenLoopResult> {
  const intervalMs = 1000 / options.ratePerSecond;
  const window: MeasuredWindow = { start: Infinity, end: Infinity };
  let stopping = false;
  let completedInWindow = 0;
  let scheduled = 0;
  let errors = 0;
  let firstError: string | undefined;
  const latencies: number[] = [];
  const startLags: number[] = [];
  const inFlight = new Set<Promise<void>>();

  const start = (index: number, scheduledAt: number) => {
    const inWindow = scheduledAt >= window.start && scheduledAt < window.end;
    if (inWindow) {
      scheduled++;
      startLags.push(performance.now() - scheduledAt);
    }
    const done = operation(index).then(
      (completion) => {
        if (completion.doneAt >= window.start && completion.doneAt < window.end) completedInWindow++;
        if (!inWindow) return;
        latencies.push(completion.doneAt - scheduledAt);
        counted?.(completion);
      },
      (err: unknown) => {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      },
    );
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  };

  // A timer fires at the next scheduled start (or late, when the loop was busy) and starts every
  // operation due by then, each with its own scheduled time.
  const t0 = performance.now();
  let next = 0;
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    const now = performance.now();
    for (let at = t0 + next * intervalMs; at <= now && !stopping; at = t0 + next * intervalMs) start(next++, at);
    if (!stopping) timer = setTimeout(tick, Math.max(0, t0 + next * intervalMs - performance.now()));
  };
  tick();

  const stop = () => {
    stopping = true;
    clearTimeout(timer);
  };
  let outstandingAtEnd: number | undefined;
  // Scheduling stops as the window closes; what is still running then is waited for afterwards.
  await measureWindow(
    options,
    window,
    stop,
    () => Promise.all(inFlight),
    () => {
      stop();
      outstandingAtEnd = inFlight.size;
    },
  );
  latencies.sort((a, b) => a - b);
  startLags.sort((a, b) => a - b);
  return {
    completed: completedInWindow,
    seconds: (window.end - window.start) / 1000,
    latenciesMs: latencies,
    errors,
    ...(firstError ? { firstError } : {}),
    scheduled,
    outstandingAtEnd: outstandingAtEnd ?? inFlight.size,
    startLagsMs: startLags,
  };
}
