/**
 * Opens the store: PGlite in a directory (the embedded default) or Postgres by URL, with the same
 * drizzle schema and migrations on both. Migrations run at start under an advisory lock, so
 * coordinators starting together do not race, and a store migrated by a newer Concord is refused.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { sql, type SQL } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import type { Logger } from 'pino';
import { ConcordError } from '../../schemas/errors.js';
import { lockDirectory } from './directory-lock.js';

export type Db = PgDatabase<PgQueryResultHKT>;

export interface Database {
  readonly db: Db;
  readonly kind: 'pglite' | 'postgres';
  /** Rows of a raw statement; the one way the store runs hand-written SQL. */
  rows<T>(query: SQL): Promise<T[]>;
  /** Fails when the store cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const migrationsFolder = findMigrations();
const migrationLockKey = 0x636f6e63; // "conc"

export interface OpenOptions {
  poolSize: number;
  logger: Logger;
  /** Seconds to wait for another process to let go of an embedded store directory. */
  lockTimeout: number;
}

export async function openDatabase(store: string, options: OpenOptions): Promise<Database> {
  const isUrl = /^postgres(ql)?:\/\//.test(store);
  if (isUrl) return openPostgres(store, options);
  return openPglite(store, options.lockTimeout);
}

// Each store's client is loaded when that store is opened: the embedded one needs no pg, a server no PGlite.
async function openPostgres(url: string, options: OpenOptions): Promise<Database> {
  const [{ default: pg }, { drizzle: drizzlePg }, { migrate: migratePg }] = await Promise.all([
    import('pg'),
    import('drizzle-orm/node-postgres'),
    import('drizzle-orm/node-postgres/migrator'),
  ]);
  const pool = new pg.Pool({ connectionString: url, max: options.poolSize, connectionTimeoutMillis: 5_000 });
  // An idle client losing its connection must not crash the process; the next query reports it.
  pool.on('error', (err) => options.logger.warn({ err }, 'store connection lost'));
  const db = drizzlePg(pool) as unknown as Db;
  const dialect = new PgDialect();
  // Hot statements run as named prepared statements: Postgres parses and plans each once per
  // connection instead of on every batch.
  const rows = async <T>(query: SQL): Promise<T[]> => {
    const { sql: text, params } = dialect.sqlToQuery(query);
    const result = await pool.query({
      name: `concord_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`,
      text,
      values: params,
    });
    return result.rows as T[];
  };
  const database = makeDatabase(db, 'postgres', () => pool.end(), rows);
  const lock = await pool.connect().catch((cause: unknown) => {
    void pool.end();
    throw new ConcordError('STORE_UNAVAILABLE', `cannot connect to the store: ${(cause as Error).message}`, { cause });
  });
  try {
    await lock.query('select pg_advisory_lock($1)', [migrationLockKey]);
    await refuseNewerStore(database);
    await migratePg(drizzlePg(lock), { migrationsFolder });
  } finally {
    await lock.query('select pg_advisory_unlock($1)', [migrationLockKey]).catch(() => undefined);
    lock.release();
  }
  return database;
}

/** One process per directory: PGlite does not lock its files, and two writers lose each other's writes. */
async function openPglite(dir: string, lockTimeout: number): Promise<Database> {
  const [{ drizzle: drizzlePglite }, { migrate: migratePglite }, { openPgliteStore }] = await Promise.all([
    import('drizzle-orm/pglite'),
    import('drizzle-orm/pglite/migrator'),
    import('./pglite-store.js'),
  ]);
  const lock = await lockDirectory(dir, lockTimeout * 1000);
  try {
    const client = await openPgliteStore(dir);
    const db = drizzlePglite(client) as unknown as Db;
    const database = makeDatabase(db, 'pglite', async () => {
      await client.close();
      await lock.release();
    });
    await refuseNewerStore(database);
    await migratePglite(drizzlePglite(client), { migrationsFolder });
    return database;
  } catch (err) {
    await lock.release();
    throw err;
  }
}

function makeDatabase(
  db: Db,
  kind: Database['kind'],
  close: () => Promise<void>,
  rows = async <T>(query: SQL): Promise<T[]> => ((await db.execute(query)) as { rows: T[] }).rows,
): Database {
  return {
    db,
    kind,
    rows,
    async ping() {
      await db.execute(sql`select 1`);
    },
    close,
  };
}

/** A store that holds a migration this build does not know was written by a newer Concord. */
async function refuseNewerStore(database: Database): Promise<void> {
  const journal = JSON.parse(readFileSync(join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as {
    entries: { when: number; tag: string }[];
  };
  const newest = Math.max(...journal.entries.map((e) => e.when));
  const exists = await database.rows<{ t: string | null }>(sql`select to_regclass('drizzle.__drizzle_migrations')::text as t`);
  if (!exists[0]?.t) return;
  const applied = await database.rows<{ created_at: string }>(
    sql`select created_at::text from drizzle.__drizzle_migrations order by created_at desc limit 1`,
  );
  const latest = Number(applied[0]?.created_at ?? 0);
  if (latest > newest) {
    throw new ConcordError(
      'UNSUPPORTED',
      `the store was migrated by a newer Concord (migration of ${new Date(latest).toISOString()}); upgrade this coordinator`,
      { field: 'store' },
    );
  }
}

/** schemas/db/migrations, found from the source tree or from the build in dist/. */
function findMigrations(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'schemas', 'db', 'migrations');
    if (existsSync(join(candidate, 'meta', '_journal.json'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('schemas/db/migrations not found');
    dir = parent;
  }
}
