import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startLocalCluster } from './postgres-cluster.js';
import { dockerAnswers } from './docker.js';

export { findPgBinDir, pgBinDir } from './postgres-install.js';

export interface PostgresService {
  /** URL of a superuser on the `postgres` database, e.g. postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  /** Stops the server and removes its files; does nothing for a server given by CONCORD_TEST_PG_URL. */
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /**
   * Keep fsync, synchronous_commit and full_page_writes on, as in production. Benchmarks want
   * this for honest figures; tests leave it off for speed. Ignored for CONCORD_TEST_PG_URL.
   */
  durable?: boolean;
}

const IMAGE = 'postgres:16';

/**
 * Provides a PostgreSQL server, in this order:
 * 1. the server at `CONCORD_TEST_PG_URL` when that is set (a superuser URL);
 * 2. a `postgres:16` container through testcontainers when a Docker engine answers;
 * 3. a throwaway cluster from Debian's packages, which are installed with apt-get if missing.
 */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresService> {
  const settings = serverSettings(options.durable ?? false);
  const given = process.env.CONCORD_TEST_PG_URL;
  if (given !== undefined && given !== '') return { url: given, stop: () => Promise.resolve() };
  if (await dockerAnswers()) {
    try {
      return await startContainer(settings);
    } catch (error) {
      console.warn(
        `[concord test services] Docker answers but ${IMAGE} did not start (${(error as Error).message}); using Debian's PostgreSQL instead`,
      );
    }
  }
  return startLocalCluster(settings);
}

function serverSettings(durable: boolean): Record<string, string> {
  // XA branches need prepared transactions; the outbox's logical-decoding mode needs wal_level logical.
  const settings: Record<string, string> = {
    max_connections: '300',
    shared_buffers: '256MB',
    max_prepared_transactions: '100',
    wal_level: 'logical',
  };
  // A crash loses a throwaway test cluster anyway; these make commits and CREATE DATABASE cheap.
  if (!durable) Object.assign(settings, { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' });
  return settings;
}

async function startContainer(settings: Record<string, string>): Promise<PostgresService> {
  // Loaded only here: testcontainers is slow to import and unused on the other paths.
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer(IMAGE)
    .withUsername('postgres')
    .withPassword('postgres')
    .withDatabase('postgres')
    .withSharedMemorySize(512 * 1024 * 1024)
    .withCommand(['postgres', ...Object.entries(settings).flatMap(([key, value]) => ['-c', `${key}=${value}`])])
    .start();
  return {
    url: container.getConnectionUri(),
    stop: async () => {
      await container.stop();
    },
  };
}

/** A fresh database name such as concord_test_3f9a0c2e1b7d. */
export function randomDatabaseName(prefix = 'concord_test_'): string {
  return `${prefix}${randomBytes(6).toString('hex')}`;
}

/** Creates a new database on the server of `adminUrl` (empty, or a copy of `template`) and returns its URL. */
export async function createDatabase(adminUrl: string, name: string = randomDatabaseName(), template?: string): Promise<string> {
  const client = new pg.Client({ connectionString: adminUrl });
  client.on('error', () => {}); // a dropped connection surfaces through the awaited calls
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${quoteIdent(name)}${template ? ` TEMPLATE ${quoteIdent(template)}` : ''}`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${encodeURIComponent(name)}`;
  return url.toString();
}

/** Drops the databases whose names start with the prefix, closing their connections (PostgreSQL 13+). */
export async function dropDatabases(adminUrl: string, prefix: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  client.on('error', () => {});
  await client.connect();
  try {
    const { rows } = await client.query<{ datname: string }>('SELECT datname FROM pg_database WHERE starts_with(datname, $1)', [prefix]);
    for (const { datname } of rows) await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(datname)} WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
