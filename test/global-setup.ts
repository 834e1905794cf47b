import { randomBytes } from 'node:crypto';
import type { TestProject } from 'vitest/node';
import { dropDatabases, startPostgres } from './services/postgres.js';

/** Starts one PostgreSQL server for the whole run; test files get databases on it (test/helpers/db.ts). */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = Date.now();
  const server = await startPostgres({ durable: false });
  console.log(`[concord test services] PostgreSQL ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  // A prefix per run, so that teardown drops only this run's databases on a shared server.
  const prefix = `concord_test_${randomBytes(3).toString('hex')}_`;
  project.provide('pgUrl', server.url);
  project.provide('pgDatabasePrefix', prefix);
  return async () => {
    // A throwaway server goes with all its databases; on a server given by CONCORD_TEST_PG_URL, drop ours.
    if (process.env.CONCORD_TEST_PG_URL) await dropDatabases(server.url, prefix);
    await server.stop();
  };
}
