/**
 * Opens the store: PGlite in a directory (the embedded default) or Postgres by URL, with the same
 * drizzle schema and migrations on both. Migrations run at start under an advisory lock, so
 * coordinators starting together do not race; a store migrated by a newer Concord is refused only
 * for a breaking migration (migrations.ts).
 */
import { createHash } from 'node:crypto';
import { fillPlaceholders, sql, type SQL } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import type { ClientBase } from 'pg';
import type { Logger } from 'pino';
import { ConcordError } from '../../schemas/errors.js';
import { lockDirectory } from './directory-lock.js';
import { checkNewerMigrations, migrationsFolder, recordMigrations } from './migrations.js';

export type Db = PgDatabase<PgQueryResultHKT>;

/**
 * A hot statement compiled once, its values named with sql.placeholder(): a call only fills them
 * in, instead of building and rendering the SQL and hashing its text for the prepared statement's
 * name every time (a few percent of the coordinator's CPU per message).
 */
export interface Statement {
  readonly name: string;
  readonly text: string;
  /** Values and placeholders in the order of $1, $2…; the placeholders are filled per call. */
  readonly params: readonly unknown[];
}

const dialect = new PgDialect();

/** A named prepared statement: Postgres parses and plans it once per connection, not per batch. */
function compile(query: SQL): Statement {
  const { sql: text, params } = dialect.sqlToQuery(query);
  return { name: `concord_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`, text, params };
}

/** Compiles a hot statement once, at module load; run it with `database.rows(statement, values)`. */
export const statement = compile;

/** What runs hand-written SQL: the store, or one of its transactions. */
export interface Rows {
  /**
   * Rows of a raw statement; the one way the store runs hand-written SQL: an SQL built per call,
   * or a Statement compiled once with the values of its placeholders.
   */
  rows<T>(query: SQL | Statement, values?: Record<string, unknown>): Promise<T[]>;
}

export interface Database extends Rows {
  readonly db: Db;
  readonly kind: 'pglite' | 'postgres';
  /**
   * Runs `work`'s statements in one store transaction: they commit together (one commit, one WAL
   * flush) or, when `work` throws, not at all. On Postgres it runs on the compiled statements'
   * sessions (each statement planned once), so it is for those.
   */
  transaction<T>(work: (tx: Rows) => Promise<T>): Promise<T>;
  /** Fails when the store cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

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
  return openPglite(store, options);
}

// Each store's client is loaded when that store is opened: the embedded one needs no pg, a server no PGlite.
async function openPostgres(url: string, options: OpenOptions): Promise<Database> {
  const [{ default: pg }, { drizzle: drizzlePg }, { migrate: migratePg }] = await Promise.all([
    import('pg'),
    import('drizzle-orm/node-postgres'),
    import('drizzle-orm/node-postgres/migrator'),
  ]);
  // Every store statement reaches its rows through an index. A plan made while a table is still
  // small (a new store, before autovacuum first analyzes it) scans the table instead, and a
  // prepared statement keeps that plan while the table grows: a settle cost a scan of every branch.
  // pg-pool awaits the hook before it hands a new connection out (@types/pg says it returns void).
  const session = (settings: string) => ((client: ClientBase) => client.query(settings)) as (client: ClientBase) => void;
  const { statementsMax, othersMax } = poolSizes(options.poolSize);
  const pool = new pg.Pool({
    connectionString: url,
    max: othersMax,
    connectionTimeoutMillis: 5_000,
    onConnect: session('set enable_seqscan = off'),
  });
  // The compiled hot statements (statement()) on connections of their own that plan each of them
  // once: Postgres otherwise plans a statement anew on every call whenever the plan for the values
  // at hand looks cheaper than the general one (a small batch: nearly always), and the settle's
  // planning cost more than its execution. Their plans cannot go wrong by the values: each finds
  // its rows by gid (status-filter.ts) through a unique index. SQL built per call (the operators'
  // searches, whose plans depend on the values) keeps Postgres's choice, on the other pool.
  const statements = new pg.Pool({
    connectionString: url,
    max: statementsMax,
    connectionTimeoutMillis: 5_000,
    onConnect: session('set enable_seqscan = off; set plan_cache_mode = force_generic_plan'),
  });
  // An idle client losing its connection must not crash the process; the next query reports it.
  for (const p of [pool, statements]) p.on('error', (err) => options.logger.warn({ err }, 'store connection lost'));
  const db = drizzlePg(pool) as unknown as Db;
  type Client = { query: InstanceType<typeof pg.Pool>['query'] };
  const rowsOn =
    (client: Client) =>
    async <T>(query: SQL | Statement, values: Record<string, unknown> = {}): Promise<T[]> => {
      const { name, text, params } = isStatement(query) ? query : compile(query);
      const result = await client.query({ name, text, values: fillPlaceholders(params as unknown[], values) });
      return result.rows as T[];
    };
  /** `work` between begin and commit on `client`; false in `healthy` when not even a rollback went through. */
  const transactionOn = async <T>(client: Client, work: (tx: Rows) => Promise<T>, healthy: { ok: boolean }): Promise<T> => {
    await client.query('begin');
    try {
      const result = await work({ rows: rowsOn(client) });
      await client.query('commit');
      return result;
    } catch (err) {
      await client.query('rollback').catch(() => (healthy.ok = false));
      throw err;
    }
  };
  // A transaction is hot-path work made of compiled statements (a saga step's reply and the next
  // step's attempt): it runs on their sessions.
  const transaction = async <T>(work: (tx: Rows) => Promise<T>): Promise<T> => {
    const client = await statements.connect();
    const healthy = { ok: true };
    try {
      return await transactionOn(client, work, healthy);
    } finally {
      // A connection that could not roll back is dropped, not handed to the next caller.
      client.release(!healthy.ok);
    }
  };
  const [onStatements, onPool] = [rowsOn(statements), rowsOn(pool)];
  const rows: Database['rows'] = (query, values) => (isStatement(query) ? onStatements(query, values) : onPool(query, values));
  const close = async () => {
    await Promise.all([pool.end(), statements.end()]);
  };
  const database = makeDatabase(db, 'postgres', close, rows, transaction);
  const lock = await pool.connect().catch((cause: unknown) => {
    void close();
    throw new ConcordError('STORE_UNAVAILABLE', `cannot connect to the store: ${(cause as Error).message}`, { cause });
  });
  try {
    // Every migration statement runs on the connection holding the lock: a pool of one has no other.
    const migrating = makeDatabase(
      drizzlePg(lock),
      'postgres',
      async () => undefined,
      rowsOn(lock),
      (work) => transactionOn(lock, work, { ok: true }),
    );
    await lock.query('select pg_advisory_lock($1)', [migrationLockKey]);
    await checkNewerMigrations(migrating, options.logger);
    await migratePg(drizzlePg(lock), { migrationsFolder });
    await recordMigrations(migrating);
  } finally {
    await lock.query('select pg_advisory_unlock($1)', [migrationLockKey]).catch(() => undefined);
    lock.release();
  }
  return database;
}

/** One process per directory: PGlite does not lock its files, and two writers lose each other's writes. */
async function openPglite(dir: string, { lockTimeout, logger }: OpenOptions): Promise<Database> {
  const [{ drizzle: drizzlePglite }, { migrate: migratePglite }, { openPgliteStore }] = await Promise.all([
    import('drizzle-orm/pglite'),
    import('drizzle-orm/pglite/migrator'),
    import('./pglite-store.js'),
  ]);
  const lock = await lockDirectory(dir, lockTimeout * 1000);
  try {
    const client = await openPgliteStore(dir);
    const db = drizzlePglite(client) as unknown as Db;
    const executed = async <T>(query: SQL): Promise<T[]> => ((await db.execute(query)) as { rows: T[] }).rows;
    // Timestamps stay text, as drizzle's own PGlite queries leave them.
    const asText = (value: string) => value;
    const parsers = { 1114: asText, 1184: asText, 1186: asText, 1082: asText };
    const rows = async <T>(query: SQL | Statement, values: Record<string, unknown> = {}): Promise<T[]> => {
      if (!isStatement(query)) return executed<T>(query);
      const result = await client.query<T>(query.text, fillPlaceholders(query.params as unknown[], values), { parsers });
      return result.rows;
    };
    // PGlite runs one statement or transaction at a time: the others wait for the transaction's end.
    const transaction = <T>(work: (tx: Rows) => Promise<T>): Promise<T> =>
      client.transaction((tx) =>
        work({
          async rows<R>(query: SQL | Statement, values: Record<string, unknown> = {}): Promise<R[]> {
            const { text, params } = isStatement(query) ? query : compile(query);
            return (await tx.query<R>(text, fillPlaceholders(params as unknown[], values), { parsers })).rows;
          },
        }),
      );
    const database = makeDatabase(
      db,
      'pglite',
      async () => {
        await client.close();
        await lock.release();
      },
      rows,
      transaction,
    );
    await checkNewerMigrations(database, logger);
    await migratePglite(drizzlePglite(client), { migrationsFolder });
    await recordMigrations(database);
    return database;
  } catch (err) {
    await lock.release();
    throw err;
  }
}

/**
 * storePoolSize split between the compiled hot statements and the rest: the hot ones run from
 * group commits, one store transaction of each kind at a time, so half the pool is plenty.
 */
export function poolSizes(poolSize: number): { statementsMax: number; othersMax: number } {
  const statementsMax = Math.max(1, Math.ceil(poolSize / 2));
  return { statementsMax, othersMax: Math.max(1, poolSize - statementsMax) };
}

function isStatement(query: SQL | Statement): query is Statement {
  return 'text' in query && 'name' in query;
}

function makeDatabase(
  db: Db,
  kind: Database['kind'],
  close: () => Promise<void>,
  rows: Database['rows'],
  transaction: Database['transaction'],
): Database {
  return {
    db,
    kind,
    rows,
    transaction,
    async ping() {
      await db.execute(sql`select 1`);
    },
    close,
  };
}
