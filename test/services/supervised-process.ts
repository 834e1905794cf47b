import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { onExit } from './on-exit.js';

export interface SupervisedOptions {
  command: string;
  args: string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Receives the program's stdout and stderr. */
  log: string;
  /** How long the process group gets between SIGTERM and SIGKILL. */
  graceMs: number;
}

export interface SupervisedProcess {
  /** Why the program exited ("code 1", "signal SIGKILL"), or undefined while it runs. */
  exitStatus: () => string | undefined;
  /** Resolves when the program has exited. */
  readonly exited: Promise<void>;
  /** Ends every process of the group: SIGTERM, then SIGKILL after graceMs. Safe to call twice. */
  stop: () => Promise<void>;
}

/**
 * The program runs in a process group of its own (setsid), so that everything it starts (Maven,
 * the JVM, the Erlang VM's helpers) can be ended together. This shell stays outside the group and
 * makes sure that the group never outlives the test process: its stdin is a pipe from us, and
 * when that reaches EOF (stop() closed it, or we died, even by SIGKILL) the watcher sends the group
 * SIGTERM, then SIGKILL if it is still there after the grace period. The shell prints the group's
 * id first, and exits with the program's status.
 * Background jobs of a non-interactive shell get /dev/null as stdin, hence the copy on fd 3; they
 * are not process group leaders either, so setsid needs no fork and the group id is the pid.
 */
const SUPERVISOR = `
exec 3<&0 </dev/null
setsid "$0" "$@" >"$CONCORD_SERVICE_LOG" 2>&1 3<&- &
pid=$!
echo "$pid"
(
  cat <&3 >/dev/null
  kill -TERM -"$pid" 2>/dev/null || exit 0
  ticks=$CONCORD_SERVICE_GRACE_TICKS
  while [ "$ticks" -gt 0 ] && kill -0 -"$pid" 2>/dev/null; do sleep 0.05; ticks=$((ticks - 1)); done
  kill -KILL -"$pid" 2>/dev/null
) >/dev/null 2>&1 &
exec 3<&-
wait "$pid"
`;

/** Starts the program under the supervisor above; see SupervisedProcess. */
export function startSupervised(options: SupervisedOptions): SupervisedProcess {
  const child: ChildProcessByStdio<Writable, Readable, Readable> = spawn('/bin/sh', ['-c', SUPERVISOR, options.command, ...options.args], {
    cwd: options.cwd,
    env: {
      ...(options.env ?? process.env),
      CONCORD_SERVICE_LOG: options.log,
      CONCORD_SERVICE_GRACE_TICKS: String(Math.ceil(options.graceMs / 50)),
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  // Never keep the test process alive for the service's sake; its exit closes the pipe and stops it.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as { unref(): void }).unref();
  child.stdin.on('error', () => {}); // EPIPE if the shell is already gone

  let firstLine = '';
  let group: number | undefined;
  child.stdout.on('data', (d: Buffer) => {
    firstLine += d.toString();
    const match = /^(\d+)\n/.exec(firstLine);
    if (match?.[1] !== undefined) group ??= Number(match[1]);
  });
  let shellErrors = '';
  child.stderr.on('data', (d: Buffer) => (shellErrors += d.toString()));
  let status: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      status = signal === null ? `code ${code}` : `signal ${signal}`;
      if (shellErrors !== '') status += `; ${shellErrors.trim()}`;
      resolve();
    });
    child.once('error', (error) => {
      status = `spawn error: ${error.message}`;
      resolve();
    });
  });

  // If the test process exits without stop() (a crash, process.exit), kill the group at once, so
  // that its files can go; the closed pipe alone would only start a graceful stop.
  const forgetGroup = onExit(() => {
    if (group !== undefined) signalGroup(group, 'SIGKILL');
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      child.stdin.end(); // the watcher turns EOF into SIGTERM for the group
      if (group !== undefined && !(await groupGone(group, options.graceMs + 2_000))) {
        signalGroup(group, 'SIGKILL');
        await groupGone(group, 5_000);
      }
      if (!(await within(exited, 5_000))) {
        child.kill('SIGKILL');
        await within(exited, 5_000);
      }
      forgetGroup();
    })());

  return { exitStatus: () => status, exited, stop };
}

/** Polls until no process of the group is left (zombies do not count), or the time is up. */
async function groupGone(group: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (await groupAlive(group)) {
    if (Date.now() > deadline) return false;
    await delay(50);
  }
  return true;
}

/**
 * Whether a process of the group still runs. On Linux /proc tells, so that zombies, which an init
 * that reaps lazily may keep for a while, do not count; elsewhere kill(-group, 0) does.
 */
async function groupAlive(group: number): Promise<boolean> {
  const entries = await readdir('/proc').catch(() => undefined);
  if (entries === undefined) {
    try {
      process.kill(-group, 0);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === group && state !== 'Z' && state !== 'X') return true;
  }
  return false;
}

function signalGroup(group: number, name: NodeJS.Signals): void {
  try {
    process.kill(-group, name);
  } catch {
    // already gone
  }
}

/** Resolves true if the promise settles within the time, false otherwise. */
export async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timer = new AbortController();
  const timeout = delay(ms, false, { signal: timer.signal }).catch(() => false);
  const result = await Promise.race([promise.then(() => true), timeout]);
  timer.abort();
  return result;
}

/** A TCP port that was free on 127.0.0.1 a moment ago; the caller retries if another process takes it first. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('could not find a free port');
  return address.port;
}

export interface WaitOptions {
  /** Names what is awaited, for the error: "Kafka on 127.0.0.1:9092". */
  what: string;
  timeoutMs: number;
  /** Returns why the service's process exited, if it has: waiting stops at once then. */
  exitStatus?: () => string | undefined;
}

/**
 * Calls probe every 50 ms until it resolves; it throws while the service is not ready. Fails when
 * the time is up or the process has exited, quoting the probe's last error.
 */
export async function waitUntilReady(probe: () => Promise<void>, { what, timeoutMs, exitStatus }: WaitOptions): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: string;
  for (;;) {
    const status = exitStatus?.();
    if (status !== undefined) throw new Error(`${what}: the process exited (${status})`);
    try {
      await probe();
      return;
    } catch (error) {
      lastError = (error as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not answer within ${timeoutMs / 1000} s (last error: ${lastError})`);
    await delay(50);
  }
}
