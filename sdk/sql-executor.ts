/**
 * The barrier writes in the service's own transaction. This file is the one place that knows how
 * to run SQL in a pg client or a drizzle transaction, and how to open a transaction on each.
 */
import { createHash } from 'node:crypto';
import type { SQL } from 'drizzle-orm';
import type pg from 'pg';
import { optionalPeer } from './optional-peer.js';

export interface SqlExecutor {
  /** Which SQL the statements must be written in; Postgres when absent. */
  readonly dialect?: 'postgres' | 'mysql';
  /** Runs `text` with $1, $2… placeholders; returns the rows and how many rows it changed. */
  execute(text: string, params: unknown[]): Promise<{ rowCount: number; rows: Record<string, unknown>[] }>;
}

/** A drizzle database or transaction (node-postgres or PGlite driver). */
export interface DrizzleLike {
  execute(query: SQL): Promise<unknown>;
  transaction<T>(fn: (tx: DrizzleLike) => Promise<T>): Promise<T>;
}

/** Where a transaction can be opened: a pg Pool, a pg Client, or a drizzle database. */
export type TransactionSource = pg.Pool | pg.ClientBase | DrizzleLike;

export function pgExecutor(client: pg.ClientBase): SqlExecutor {
  return {
    async execute(text, params) {
      // The barrier's few statements are prepared once per connection (named), not parsed per call.
      const name = params.length > 0 ? `concord_${createHash('sha1').update(text).digest('hex').slice(0, 16)}` : undefined;
      const result = await client.query({ name, text, values: params });
      return { rowCount: result.rowCount ?? 0, rows: result.rows as Record<string, unknown>[] };
    },
  };
}

export function drizzleExecutor(tx: DrizzleLike): SqlExecutor {
  return {
    async execute(text, params) {
      const result = (await tx.execute(await withParams(text, params))) as {
        rows?: Record<string, unknown>[];
        rowCount?: number | null;
        affectedRows?: number;
      };
      return { rowCount: result.rowCount ?? result.affectedRows ?? 0, rows: result.rows ?? [] };
    },
  };
}

/**
 * Runs `fn` in a new transaction of `source`: committed when `fn` returns, rolled back when it
 * throws. `fn` gets an executor for the barrier and the transaction handle for its own writes
 * (a pg client, or a drizzle transaction).
 */
export async function inTransaction<T, Tx>(source: TransactionSource, fn: (exec: SqlExecutor, tx: Tx) => Promise<T>): Promise<T> {
  if (isDrizzle(source)) return source.transaction((tx) => fn(drizzleExecutor(tx), tx as Tx));
  return inPgTransaction(source, 'commit', (client) => fn(pgExecutor(client), client as Tx));
}

/**
 * `begin`, `fn`, then `end` (commit, or an XA branch's PREPARE TRANSACTION) on a client of
 * `source`; rolled back when `fn` or `end` throws. A pool's client goes back destroyed if its
 * connection broke meanwhile.
 */
export async function inPgTransaction<T>(
  source: pg.Pool | pg.ClientBase,
  end: string,
  fn: (client: pg.ClientBase) => Promise<T>,
): Promise<T> {
  const pool = isPool(source) ? source : undefined;
  const client = pool ? await pool.connect() : (source as pg.ClientBase);
  // A connection the server drops between two statements emits 'error' on the client; without a
  // listener that would crash the process. The next statement then fails and rolls back instead.
  let lost: Error | undefined;
  const onError = (err: Error) => (lost = err);
  client.on('error', onError);
  try {
    await client.query('begin');
    try {
      const result = await fn(client);
      await client.query(end);
      return result;
    } catch (err) {
      await client.query('rollback').catch(() => undefined);
      throw err;
    }
  } finally {
    client.off('error', onError);
    if (pool) (client as pg.PoolClient).release(lost);
  }
}

function isPool(source: pg.Pool | pg.ClientBase): source is pg.Pool {
  return 'totalCount' in source;
}

function isDrizzle(source: TransactionSource): source is DrizzleLike {
  return typeof (source as DrizzleLike).transaction === 'function' && typeof (source as DrizzleLike).execute === 'function';
}

/** `text` with $n placeholders as a drizzle SQL object with bound parameters. */
async function withParams(text: string, params: unknown[]): Promise<SQL> {
  const { sql } = await optionalPeer('drizzle-orm', () => import('drizzle-orm'));
  const parts = text.split(/\$(\d+)/);
  const chunks: SQL[] = [];
  parts.forEach((part, i) => chunks.push(i % 2 === 0 ? sql.raw(part) : sql`${params[Number(part) - 1]}`));
  return sql.join(chunks, sql.raw(''));
}
