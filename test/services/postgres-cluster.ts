import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { chown, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { pgBinDir } from './postgres-install.js';
import { runChecked, tail } from './run-command.js';
import { freePort, within } from './supervised-process.js';
import { alive } from './service-dir.js';
import { onExit } from './on-exit.js';

export interface LocalCluster {
  url: string;
  stop(): Promise<void>;
  /**
   * Stops the server and starts it again on the same port and data, for outage tests. `crash`
   * kills it with SIGQUIT (no checkpoint: the next start runs crash recovery) instead of a fast
   * shutdown; `downMs` is how long it stays down.
   */
  restart(options?: { crash?: boolean; downMs?: number }): Promise<void>;
}

/** A running server; its stop() leaves the files. */
interface Launched {
  url: string;
  stop(): Promise<void>;
  /** SIGQUIT, as a crash, then wait for the exit. */
  crash(): Promise<void>;
}

interface OsUser {
  uid: number;
  gid: number;
}

/**
 * The server runs under this shell so that it can never outlive the test process: the shell's
 * stdin is a pipe from us, and when it reaches EOF (stop() closed it, or we died, even by SIGKILL)
 * the watcher asks the postmaster for a fast shutdown. The shell exits when the postmaster does,
 * with its status. It prints the postmaster's pid first.
 * Background jobs of a non-interactive shell get /dev/null as stdin, hence the copy on fd 3.
 */
const SUPERVISOR = `
exec 3<&0 </dev/null
"$0" "$@" >"$CONCORD_PG_LOG" 2>&1 3<&- &
pid=$!
echo "$pid"
(cat <&3 >/dev/null; kill -INT "$pid" 2>/dev/null) >/dev/null 2>&1 &
exec 3<&-
wait "$pid"
`;

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const PORT_ATTEMPTS = 3;
const PREFIX = 'concord-pg-';
const STALE_AFTER_MS = 10 * 60_000;

/**
 * Creates a throwaway cluster with initdb in a temp dir and runs it on a free loopback port.
 * stop() shuts it down and removes the dir.
 */
export async function startLocalCluster(settings: Record<string, string>): Promise<LocalCluster> {
  const bin = await pgBinDir();
  // initdb and postgres refuse to run as root.
  const owner = process.getuid?.() === 0 ? await osUser('postgres') : undefined;
  const parent = owner === undefined || (await reachable(tmpdir(), owner)) ? tmpdir() : '/tmp';
  await removeStaleClusters(parent);
  const base = await mkdtemp(join(parent, PREFIX));
  try {
    if (owner !== undefined) await chown(base, owner.uid, owner.gid);
    const data = join(base, 'data');
    await runChecked(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'], {
      cwd: base,
      ...owner,
      timeoutMs: 120_000,
    });
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      let server: Launched;
      try {
        server = await launch({ bin, base, data, port, settings, owner });
      } catch (error) {
        // Another process may have taken the port between freePort() and the bind.
        if (!(error instanceof PortTakenError) || attempt >= PORT_ATTEMPTS) throw error;
        continue;
      }
      // Registered after launch()'s own handler, so the server is killed before its files go.
      const removeFiles = (): void => rmSync(base, { recursive: true, force: true, maxRetries: 3 });
      const forgetFiles = onExit(removeFiles);
      let stopping: Promise<void> | undefined;
      const stop = (): Promise<void> =>
        (stopping ??= (async () => {
          await server.stop();
          forgetFiles();
          await rm(base, { recursive: true, force: true, maxRetries: 3 });
        })());
      const restart = async ({ crash = false, downMs = 0 } = {}): Promise<void> => {
        await (crash ? server.crash() : server.stop());
        await delay(downMs);
        server = await launch({ bin, base, data, port, settings, owner });
      };
      return { url: server.url, stop, restart };
    }
  } catch (error) {
    await rm(base, { recursive: true, force: true, maxRetries: 3 });
    throw error;
  }
}

class PortTakenError extends Error {}

interface LaunchOptions {
  bin: string;
  base: string;
  data: string;
  port: number;
  settings: Record<string, string>;
  owner: OsUser | undefined;
}

/** Runs postgres on the initialised data dir and waits until it answers; its stop() leaves the files. */
async function launch({ bin, base, data, port, settings, owner }: LaunchOptions): Promise<Launched> {
  const log = join(base, 'postgres.log');
  const config = { ...settings, listen_addresses: '127.0.0.1', port: String(port), unix_socket_directories: base };
  const args = ['-D', data, ...Object.entries(config).flatMap(([key, value]) => ['-c', `${key}=${value}`])];
  const child: ChildProcessByStdio<Writable, Readable, Readable> = spawn('/bin/sh', ['-c', SUPERVISOR, join(bin, 'postgres'), ...args], {
    cwd: base,
    env: { ...process.env, CONCORD_PG_LOG: log },
    stdio: ['pipe', 'pipe', 'pipe'],
    ...owner,
  });
  // Never keep the test process alive for the server's sake; its exit closes the pipe and stops it.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as { unref(): void }).unref();
  child.stdin.on('error', () => {}); // EPIPE if the shell is already gone

  let pidLine = '';
  let postmasterPid: number | undefined;
  child.stdout.on('data', (d: Buffer) => {
    pidLine += d.toString();
    const match = /^(\d+)\n/.exec(pidLine);
    if (match?.[1] !== undefined) postmasterPid ??= Number(match[1]);
  });
  let shellErrors = '';
  child.stderr.on('data', (d: Buffer) => (shellErrors += d.toString()));
  let exitStatus: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitStatus = signal === null ? `code ${code}` : `signal ${signal}`;
      resolve();
    });
    child.once('error', (error) => {
      exitStatus = `spawn error: ${error.message}`;
      resolve();
    });
  });

  // If the test process exits without stop() (a crash, process.exit), kill the server at once,
  // so that its files can go; the closed pipe alone would only start a fast shutdown.
  const forgetServer = onExit(() => {
    if (postmasterPid !== undefined) signal(postmasterPid, 'SIGQUIT');
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      child.stdin.end(); // the supervisor turns EOF into a fast shutdown
      if (!(await within(exited, STOP_TIMEOUT_MS))) {
        if (postmasterPid !== undefined) signal(postmasterPid, 'SIGQUIT');
        if (!(await within(exited, 5_000))) {
          if (postmasterPid !== undefined) signal(postmasterPid, 'SIGKILL');
          child.kill('SIGKILL');
          await within(exited, 5_000);
        }
      }
      forgetServer();
    })());

  const crash = async (): Promise<void> => {
    if (postmasterPid !== undefined) signal(postmasterPid, 'SIGQUIT');
    await within(exited, STOP_TIMEOUT_MS);
    await stop(); // closes the supervisor's pipe (and stops the server if SIGQUIT did not)
  };

  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  try {
    await waitUntilReady(url, () => exitStatus);
  } catch (error) {
    const exitedEarly = exitStatus !== undefined;
    const serverLog = await readFile(log, 'utf8').catch(() => '');
    await stop();
    if (exitedEarly && /could not bind|could not create any TCP\/IP sockets/.test(serverLog)) {
      throw new PortTakenError(`port ${port} was taken`);
    }
    const reason = (error as Error).message;
    throw new Error(`PostgreSQL did not start on 127.0.0.1:${port}: ${reason}\n--- server log ---\n${tail(serverLog + shellErrors)}`, {
      cause: error,
    });
  }
  return { url, stop, crash };
}

/**
 * A test process killed by a signal leaves its cluster's files behind (the server itself stops
 * when our pipe closes). Remove such dirs once they are old and no postmaster runs in them.
 */
async function removeStaleClusters(parent: string): Promise<void> {
  const entries = await readdir(parent).catch(() => []);
  for (const entry of entries.filter((name) => name.startsWith(PREFIX))) {
    const dir = join(parent, entry);
    const info = await stat(dir).catch(() => undefined);
    if (info === undefined || Date.now() - info.mtimeMs < STALE_AFTER_MS) continue;
    const pidFile = await readFile(join(dir, 'data', 'postmaster.pid'), 'utf8').catch(() => undefined);
    if (pidFile !== undefined && alive(Number(pidFile.split('\n')[0]))) continue;
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

/** Polls until the server answers a query; fails early if it has exited. */
async function waitUntilReady(url: string, exitStatus: () => string | undefined): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError: string;
  for (;;) {
    const status = exitStatus();
    if (status !== undefined) throw new Error(`the server exited (${status})`);
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
      return;
    } catch (error) {
      lastError = (error as Error).message;
    } finally {
      await client.end().catch(() => {});
    }
    if (Date.now() > deadline) throw new Error(`no connection within ${READY_TIMEOUT_MS / 1000} s (last error: ${lastError})`);
    await delay(50);
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

async function osUser(name: string): Promise<OsUser> {
  try {
    const uid = Number((await runChecked('id', ['-u', name])).trim());
    const gid = Number((await runChecked('id', ['-g', name])).trim());
    return { uid, gid };
  } catch (cause) {
    throw new Error(`we run as root, so initdb and postgres must run as the "${name}" OS user, which was not found`, { cause });
  }
}

/** Whether every directory from the root down to dir can be traversed by the user. */
async function reachable(dir: string, user: OsUser): Promise<boolean> {
  for (let current = dir; ; current = dirname(current)) {
    const info = await stat(current).catch(() => undefined);
    if (info === undefined) return false;
    const bit = info.uid === user.uid ? 0o100 : info.gid === user.gid ? 0o010 : 0o001;
    if ((info.mode & bit) === 0) return false;
    if (dirname(current) === current) return true;
  }
}
