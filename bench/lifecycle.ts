/**
 * What every bench entry point needs around its work: Ctrl-C stops it cleanly, everything it
 * started is undone in reverse order at the end (on success, on failure and on Ctrl-C), and no
 * coordinator outlives the bench process.
 */
import { startCoordinator, type CoordinatorOptions, type RunningCoordinator } from '../test/helpers/coordinator.js';
import { progress } from './report.js';

export interface Bench {
  /** Aborted by SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Throws the abort reason once the bench was interrupted. */
  checkAborted(): void;
  /** Registers an undo step, run at the end in reverse order of registration. */
  defer(undo: () => Promise<unknown>): void;
  /** Starts a coordinator (dist/coordinator/cli.js) that is stopped at the end, and killed if this process exits first. */
  startCoordinator(options: CoordinatorOptions): Promise<RunningCoordinator>;
  /** SIGTERM (a graceful drain), then SIGKILL if it is still there after 15 s (3 s after Ctrl-C); its exit code. */
  stopCoordinator(coordinator: RunningCoordinator): Promise<number | null>;
}

/** Runs `main`, then the undo steps, and exits: 0, 1 on failure, 130 when interrupted. */
export async function runBench(main: (bench: Bench) => Promise<void>): Promise<never> {
  const abort = new AbortController();
  const cleanups: (() => Promise<unknown>)[] = [];
  const children = new Set<RunningCoordinator>();

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (abort.signal.aborted) process.exit(130); // a second Ctrl-C: the exit handler below still kills the children
      progress(`${signal}: stopping`);
      abort.abort(new Error(`interrupted by ${signal}`));
    });
  }
  // Last resort (process.exit, an uncaught error): a coordinator must not outlive us.
  process.on('exit', () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  });

  const stopCoordinator = async (coordinator: RunningCoordinator): Promise<number | null> => {
    // After Ctrl-C there is nothing to drain for: do not wait long for a graceful exit.
    const patienceMs = abort.signal.aborted ? 3_000 : 15_000;
    const killer = setTimeout(() => {
      progress(
        `the coordinator did not exit within ${patienceMs / 1000} s of SIGTERM; killing it. Its last output:\n${coordinator.output().slice(-1_500)}`,
      );
      coordinator.proc.kill('SIGKILL');
    }, patienceMs);
    try {
      return await coordinator.stop();
    } finally {
      clearTimeout(killer);
      children.delete(coordinator);
    }
  };

  const bench: Bench = {
    signal: abort.signal,
    checkAborted() {
      if (abort.signal.aborted) throw abort.signal.reason;
    },
    defer(undo) {
      cleanups.push(undo);
    },
    async startCoordinator(options) {
      // As the Docker image runs it (Dockerfile, docs/operations.md): glibc's malloc arena per
      // thread and V8's default 16 MiB semi-spaces each grew a loaded coordinator's RSS by 20-50 MiB.
      const env = { MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2', ...options.env };
      const coordinator = await startCoordinator({ nodeArgs: ['--max-semi-space-size=8'], ...options, env });
      children.add(coordinator);
      cleanups.push(() => stopCoordinator(coordinator));
      return coordinator;
    },
    stopCoordinator,
  };

  let exitCode = 0;
  try {
    await main(bench);
  } catch (err) {
    exitCode = abort.signal.aborted ? 130 : 1;
    progress(abort.signal.aborted ? 'interrupted' : `failed: ${(err as Error).stack ?? String(err)}`);
  } finally {
    for (const undo of cleanups.reverse()) {
      try {
        await undo();
      } catch (err) {
        progress(`cleanup step failed: ${(err as Error).message}`);
      }
    }
  }
  process.exit(exitCode);
}
