import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createClient } from 'redis';
import { aptInstall } from './apt-install.js';
import { dockerAnswers } from './docker.js';
import { runCommand, tail } from './run-command.js';
import { PortTakenError, startRestartable } from './service-dir.js';
import { freePort, startSupervised, waitUntilReady } from './supervised-process.js';

export interface RedisService {
  /** redis://host:port URL; tests keep apart by key prefixes (gids), not databases. */
  url: string;
  /** Stops the server and removes its files; does nothing for a server given by CONCORD_TEST_REDIS_URL. */
  stop(): Promise<void>;
}

const IMAGE = 'redis:7';
const SERVER = '/usr/bin/redis-server';

/**
 * Provides a Redis server, in this order:
 * 1. the server at `CONCORD_TEST_REDIS_URL` when that is set (redis://[user:password@]host:port);
 * 2. a `redis:7` container through testcontainers when a Docker engine answers;
 * 3. a throwaway instance of Debian's redis-server (installed with apt-get if missing): its own
 *    directory in a temp dir, on a free loopback port, no persistence, gone with stop() or the
 *    test process.
 */
export async function startRedis(): Promise<RedisService> {
  const given = process.env.CONCORD_TEST_REDIS_URL;
  if (given !== undefined && given !== '') {
    await waitUntilReady(() => probe(given), { what: 'Redis at CONCORD_TEST_REDIS_URL', timeoutMs: 30_000 });
    return { url: given, stop: () => Promise.resolve() };
  }
  if (await dockerAnswers()) {
    try {
      return await startContainer();
    } catch (error) {
      console.warn(
        `[concord test services] Docker answers but ${IMAGE} did not start (${(error as Error).message}); using Debian's redis-server instead`,
      );
    }
  }
  return startLocalRedis();
}

async function probe(url: string): Promise<void> {
  // No reconnecting: a refused connection fails this probe, and waitUntilReady tries again.
  const client = createClient({ url, socket: { connectTimeout: 2_000, reconnectStrategy: false } });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.ping();
  } finally {
    client.destroy();
  }
}

async function startContainer(): Promise<RedisService> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer(IMAGE)
    .withExposedPorts(6379)
    .withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/))
    .withStartupTimeout(60_000)
    .start();
  return {
    url: `redis://${container.getHost()}:${container.getMappedPort(6379)}`,
    stop: async () => {
      await container.stop();
    },
  };
}

let installing: Promise<void> | undefined;

async function ensureInstalled(): Promise<void> {
  if (existsSync(SERVER)) return;
  installing ??= (async () => {
    await aptInstall(
      ['redis-server'],
      'Redis',
      `${SERVER} was not found. Set CONCORD_TEST_REDIS_URL to a Redis server (redis://127.0.0.1:6379), or start a Docker engine, or install redis-server yourself.`,
    );
    // The package starts and enables the system server where the init system lets it; tests run their own.
    if (existsSync('/run/systemd/system'))
      await runCommand('systemctl', ['disable', '--now', 'redis-server.service']).catch(() => undefined);
  })();
  await installing;
}

export async function startLocalRedis(): Promise<RedisService> {
  await ensureInstalled();
  const service = await startRestartable({
    prefix: 'concord-redis-',
    attempts: 3,
    plan: () => freePort(),
    launch: async (work, port, run) => {
      const log = join(work, `redis-${run}.log`);
      const server = startSupervised({
        command: SERVER,
        // Arguments as a config file would have them; no RDB or AOF files: a throwaway server.
        args: ['--port', String(port), '--bind', '127.0.0.1', '--dir', work, '--save', '', '--appendonly', 'no', '--logfile', ''],
        cwd: work,
        log,
        graceMs: 5_000,
      });
      const url = `redis://127.0.0.1:${port}`;
      try {
        await waitUntilReady(() => probe(url), { what: `Redis on 127.0.0.1:${port}`, timeoutMs: 30_000, exitStatus: server.exitStatus });
      } catch (error) {
        await server.stop();
        const text = await readFile(log, 'utf8').catch(() => '');
        if (/address already in use/i.test(text)) throw new PortTakenError(`port ${port} was taken`);
        throw new Error(`Redis did not start: ${(error as Error).message}\n--- ${log} ---\n${tail(text)}`, { cause: error });
      }
      return { url, stop: () => server.stop() };
    },
  });
  return { url: service.first.url, stop: service.stop };
}
