/**
 * The barrier's writes in a MySQL or MariaDB transaction, through mysql2's promise API (a pool, or
 * a connection the service already holds). Only types come from mysql2: a service without MySQL
 * never loads it.
 */
import type { Connection, Pool, PoolConnection, ResultSetHeader } from 'mysql2/promise';
import type { SqlExecutor } from './sql-executor.js';

/** Where a MySQL transaction can be opened: a mysql2/promise pool or connection. */
export type MysqlSource = Pool | PoolConnection | Connection;

export function isMysqlSource(source: object): source is MysqlSource {
  return typeof (source as Pool).getConnection === 'function' || typeof (source as Connection).beginTransaction === 'function';
}

export function mysqlExecutor(connection: Connection | PoolConnection): SqlExecutor {
  return {
    dialect: 'mysql',
    async execute(text, params) {
      // The barrier writes $n placeholders; mysql2 takes ? in order.
      const order: number[] = [];
      const sql = text.replace(/\$(\d+)/g, (_, n: string) => {
        order.push(Number(n) - 1);
        return '?';
      });
      // execute(): a statement prepared once per connection, as the pg executor does.
      const values = order.map((i) => params[i]) as Parameters<Connection['execute']>[1];
      const [result] = await connection.execute(sql, values);
      if (Array.isArray(result)) return { rowCount: result.length, rows: result as Record<string, unknown>[] };
      return { rowCount: (result as ResultSetHeader).affectedRows, rows: [] };
    },
  };
}

/**
 * Runs `fn` in a new transaction of `source`: committed when `fn` returns, rolled back when it
 * throws. `fn` gets the executor and the connection for its own writes.
 */
export async function inMysqlTransaction<T, Tx>(source: MysqlSource, fn: (exec: SqlExecutor, tx: Tx) => Promise<T>): Promise<T> {
  const pool = typeof (source as Pool).getConnection === 'function' ? (source as Pool) : undefined;
  const connection = pool ? await pool.getConnection() : (source as PoolConnection);
  let fatal = false;
  try {
    await connection.beginTransaction();
    try {
      const result = await fn(mysqlExecutor(connection), connection as Tx);
      await connection.commit();
      return result;
    } catch (err) {
      fatal = (err as { fatal?: boolean }).fatal === true;
      if (!fatal) await connection.rollback().catch(() => undefined);
      throw err;
    }
  } finally {
    // A connection that broke goes away instead of back into the pool.
    if (pool && fatal) connection.destroy();
    else if (pool) connection.release();
  }
}
