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

export interface RunningCoordinator {
  /** Base URL of the DTM-compatible API, e.g. http://127.0.0.1:4000/api/dtmsvr */
  dtm: string;
  /** Base URL of the server, e.g. http://127.0.0.1:4000 */
  url: string;
  port: number;
  proc: ChildProcess;
  /** Output the process has written so far (stdout and stderr). */
  output(): string;
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
  /**
   * What "started" means: ready (/api/health answers 200, the default) or alive (/api/ping), for a
   * coordinator that is meant to start unready (an outbox already lagging, a broker down).
   */
  until?: 'ready' | 'alive';
}

/** Coordinators still running; a test process that ends (even on a failed assertion) takes them along. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/** Starts `concord start` from the built CLI (dist/) as a child process and waits until it answers. */
export async function startCoordinator(options: CoordinatorOptions): Promise<RunningCoordinator> {
  const port = options.port ?? (await freePort());
  let log = '';
  // CONCORD_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the coordinator; NODE_OPTIONS refuses those flags.
  const nodeArgs = (process.env.CONCORD_NODE_ARGS ?? '').split(' ').filter(Boolean);
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
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
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
