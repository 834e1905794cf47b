import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

/** A free TCP port on loopback, released before it is returned. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** A coordinator a test talks to, in this process or in its own. */
export interface TestCoordinator {
  /** Base URL of the DTM-compatible API, e.g. http://127.0.0.1:4000/api/dtmsvr */
  dtm: string;
  /** Base URL of the server, e.g. http://127.0.0.1:4000 */
  url: string;
  port: number;
  /** What it has logged so far (JSON lines; for a process, all of stdout and stderr). */
  output(): string;
  /** Stops it gracefully; 0 when it stopped cleanly (a process: its exit code). */
  stop(): Promise<number | null>;
}

/** A coordinator in its own process (`concord start`), for tests of crashes, signals and the CLI itself. */
export interface RunningCoordinator extends TestCoordinator {
  proc: ChildProcess;
  /** Sends the signal and waits for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface CoordinatorOptions {
  /** A postgres:// URL or a directory for the embedded store. */
  store: string;
  /** Extra CONCORD_* variables. */
  env?: Record<string, string>;
  port?: number;
  /** --host; 127.0.0.1 when not given, null to pass none (the coordinator's default). */
  host?: string | null;
  /** Further arguments of `concord start`, e.g. ['--insecure']. */
  args?: string[];
  /** Flags of node itself, before CONCORD_NODE_ARGS (so those win), e.g. ['--max-semi-space-size=8']. */
  nodeArgs?: string[];
  /**
   * What "started" means: ready (/api/health answers 200, the default) or alive (/api/ping), for a
   * coordinator that is meant to start unready (an outbox already lagging, a broker down).
   */
  until?: 'ready' | 'alive';
}

/** The stop functions of the in-process coordinators still running. */
const running = new Set<() => Promise<number>>();

/**
 * Starts a coordinator inside the test process, from the sources: no build needed, no process
 * start-up to wait for. Tests use it wherever no process boundary is under test; crash, signal and
 * CLI tests use startCoordinator. A Postgres store only (the embedded store's template is built
 * into dist/).
 */
export async function inProcessCoordinator(options: Omit<CoordinatorOptions, 'args' | 'until'>): Promise<TestCoordinator> {
  if (!/^postgres(ql)?:\/\//.test(options.store)) throw new Error('inProcessCoordinator takes a Postgres store; use startCoordinator');
  const [{ startCoordinator: start }, { createLogger }, { loadConfig }] = await Promise.all([
    import('../../coordinator/app.js'),
    import('../../coordinator/logger.js'),
    import('../../schemas/config.js'),
  ]);
  const port = options.port ?? (await freePort());
  const config = loadConfig({
    env: { ...process.env, CONCORD_LOG_LEVEL: 'warn', ...options.env },
    overrides: { store: options.store, port, ...(options.host === null ? {} : { host: options.host ?? '127.0.0.1' }) },
  });
  let log = '';
  const logger = await createLogger(config, { write: (line: string) => void (log += line) });
  const coordinator = await start(config, logger);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    running.delete(stop);
    await coordinator.stop();
    return 0;
  };
  running.add(stop);
  return { dtm: `${url}/api/dtmsvr`, url, port, output: () => log, stop };
}

/** Stops the in-process coordinators a test file left running (leak-check.ts), and says how many there were. */
export async function stopInProcessCoordinators(): Promise<number> {
  const left = [...running];
  await Promise.all(left.map((stop) => stop()));
  return left.length;
}

/** Coordinators still running; a test process that ends (even on a failed assertion) takes them along. */
const processes = new Set<ChildProcess>();
process.on('exit', () => {
  for (const proc of processes) proc.kill('SIGKILL');
});

/** Starts `concord start` from the built CLI (dist/) as a child process and waits until it answers. */
export async function startCoordinator(options: CoordinatorOptions): Promise<RunningCoordinator> {
  const port = options.port ?? (await freePort());
  let log = '';
  // CONCORD_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the coordinator; NODE_OPTIONS refuses those flags.
  const nodeArgs = [...(options.nodeArgs ?? []), ...(process.env.CONCORD_NODE_ARGS ?? '').split(' ').filter(Boolean)];
  const proc = spawn(
    process.execPath,
    [
      ...nodeArgs,
      cliPath(),
      'start',
      '--store',
      options.store,
      '--port',
      String(port),
      ...(options.host === null ? [] : ['--host', options.host ?? '127.0.0.1']),
      ...(options.args ?? []),
    ],
    {
      // gRPC off unless a test asks for it: coordinators run side by side, and 36790 is one port.
      env: { ...process.env, CONCORD_LOG_LEVEL: 'warn', CONCORD_GRPC_PORT: '0', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  processes.add(proc);
  proc.once('exit', () => processes.delete(proc));
  proc.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`coordinator exited with ${proc.exitCode}: ${log}`);
    try {
      const res = await fetch(`${url}${options.until === 'alive' ? '/api/ping' : '/api/health'}`);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`coordinator did not become healthy: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    dtm: `${url}/api/dtmsvr`,
    url,
    port,
    proc,
    output: () => log,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      const [code] = (await once(proc, 'exit')) as [number | null];
      return code;
    },
  };
}

/** The built CLI, dist/coordinator/cli.js. */
export function cliPath(): string {
  return fileURLToPath(new URL('dist/coordinator/cli.js', rootUrl()));
}

function rootUrl(): URL {
  // This file runs from test/helpers/ (vitest) or dist/test/helpers/ (built); find the project root either way.
  const here = new URL('.', import.meta.url);
  return here.pathname.includes('/dist/test/') ? new URL('../../../', here) : new URL('../../', here);
}
