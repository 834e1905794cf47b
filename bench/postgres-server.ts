/**
 * The benchmarks' Postgres server: the throwaway one of test/services/postgres.ts with durable
 * settings (fsync, synchronous_commit and full_page_writes on), or CONCORD_TEST_PG_URL's.
 */
import pg from 'pg';
import { dropDatabases, randomDatabaseName, startPostgres } from '../test/services/postgres.js';
import type { Bench } from './lifecycle.js';
import { findPostmaster } from './proc-stats.js';
import { progress } from './report.js';

export interface BenchPostgres {
  /** A superuser URL of the server. */
  url: string;
  /** Every database the bench creates starts with it (they are dropped at the end on a given server). */
  prefix: string;
  /** The postmaster, when the server runs on this machine (its CPU can be measured). */
  postmasterPid: number | undefined;
  /** `select version()` */
  version: string;
}

/** Starts the server (stopped at the end of the bench) and reports it on stderr. */
export async function startBenchPostgres(bench: Bench, prefix: string): Promise<BenchPostgres> {
  const started = Date.now();
  const server = await startPostgres({ durable: true });
  bench.defer(() => server.stop());
  const databasePrefix = randomDatabaseName(prefix) + '_';
  // A server of CONCORD_TEST_PG_URL outlives us: drop our databases there (a throwaway one just goes).
  if (process.env.CONCORD_TEST_PG_URL) bench.defer(() => dropDatabases(server.url, databasePrefix));
  const postmasterPid = findPostmaster(Number(new URL(server.url).port));
  const version = await scalar(server.url, 'select version()');
  progress(`Postgres ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${version}`);
  if (postmasterPid === undefined) progress('Postgres runs elsewhere (container or CONCORD_TEST_PG_URL): its CPU is not measured');
  progress(`synchronous_commit=${await scalar(server.url, 'show synchronous_commit')} fsync=${await scalar(server.url, 'show fsync')}`);
  return { url: server.url, prefix: databasePrefix, postmasterPid, version };
}

/** The first column of the first row of a query, as text. */
export async function scalar(url: string, text: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<Record<string, string>>(text);
    return String(Object.values(rows[0] ?? {})[0] ?? '');
  } finally {
    await client.end();
  }
}
