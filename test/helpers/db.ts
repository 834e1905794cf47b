import pg from 'pg';
import { expect, inject, vi } from 'vitest';
import { createMysqlDatabase } from '../services/mariadb.js';
import { createDatabase, randomDatabaseName } from '../services/postgres.js';

/** Creates a new, empty database on the test server and returns its URL. Each call gives another one. */
export async function freshDatabase(): Promise<string> {
  return createDatabase(inject('pgUrl'), randomDatabaseName(inject('pgDatabasePrefix')));
}

/** Creates a coordinator store: a clone of a database the migrations already ran on, which saves each coordinator running them. */
export async function freshStore(): Promise<string> {
  return createDatabase(inject('pgUrl'), randomDatabaseName(inject('pgDatabasePrefix')), inject('storeTemplate'));
}

/** Creates a new, empty database on the test MariaDB server and returns its URL. */
export async function freshMysqlDatabase(): Promise<string> {
  return createMysqlDatabase(inject('mysqlUrl'), randomDatabaseName(inject('pgDatabasePrefix')));
}

/** Runs `run` on a client connected to the database at `url` alone, then disconnects. */
export async function withClient<T>(url: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}

/**
 * Waits until no other client's backend is connected to the client's database. A backend publishes
 * its table counters (pg_stat_user_tables and the like) as it exits, a moment after its client went
 * away, so a test reading them after a coordinator stops waits here first. An autovacuum worker
 * passing by is not waited for.
 */
export async function othersGone(client: pg.Client): Promise<void> {
  const others = async () =>
    Number(
      (
        await client.query<{ n: string }>(
          `select count(*) as n from pg_stat_activity
           where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'`,
        )
      ).rows[0]?.n,
    );
  await vi.waitFor(async () => expect(await others()).toBe(0), { timeout: 10_000, interval: 50 });
  await client.query('select pg_stat_clear_snapshot()');
}
