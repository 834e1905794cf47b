/**
 * Local XA transactions in the service's own database, one driver per database: Postgres
 * (BEGIN … PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED) on a pg Pool, and MySQL/MariaDB (XA
 * START … END, PREPARE, XA COMMIT/ROLLBACK) on a mysql2 promise Pool. Xids are DTM's: gid-branch_id.
 */
import type { Pool as MysqlPool, PoolConnection as MysqlConnection } from 'mysql2/promise';
import type pg from 'pg';
import { inPgTransaction } from './sql-executor.js';

/** A database a branch's XA transaction runs in: a pg Pool or a mysql2/promise Pool. */
export type XaDatabase = pg.Pool | MysqlPool;
/** The connection `work` runs on: a pg client, or a mysql2 connection. */
export type XaConnection = pg.PoolClient | MysqlConnection;
/** The connection type of a database. */
export type XaConnectionOf<D extends XaDatabase> = D extends pg.Pool ? pg.PoolClient : MysqlConnection;

export interface XaDriver {
  /** Runs `work` in a new XA transaction `xid` and prepares it; rolled back when anything throws. */
  prepare<T>(xid: string, work: (tx: XaConnection) => Promise<T>): Promise<T>;
  /** Commits or rolls back the prepared `xid`; an xid that is not prepared (finished before) is no error. */
  finish(xid: string, op: 'commit' | 'rollback'): Promise<void>;
  /** The xids prepared in this database (Postgres) or server (MySQL: XA RECOVER lists every schema's). */
  preparedXids(): Promise<string[]>;
}

/** DTM's xid of a branch. */
export function xidOf(gid: string, branchId: string): string {
  return `${gid}-${branchId}`;
}

/** The gid and branch id of an xid made by xidOf (branch ids hold no "-", gids may). */
export function parseXid(xid: string): { gid: string; branchId: string } | undefined {
  const at = xid.lastIndexOf('-');
  if (at <= 0 || at === xid.length - 1) return undefined;
  return { gid: xid.slice(0, at), branchId: xid.slice(at + 1) };
}

/** A SQL string literal: the XA statements take no parameters. */
const literal = (text: string) => `'${text.replace(/'/g, "''")}'`;

export function xaDriver(db: XaDatabase): XaDriver {
  return 'totalCount' in db ? pgDriver(db) : mysqlDriver(db);
}

function pgDriver(pool: pg.Pool): XaDriver {
  return {
    prepare(xid, work) {
      // Postgres rolls the transaction back itself when PREPARE TRANSACTION fails.
      return inPgTransaction(pool, `prepare transaction ${literal(xid)}`, (client) => work(client as pg.PoolClient));
    },
    async finish(xid, op) {
      try {
        await pool.query(`${op} prepared ${literal(xid)}`);
      } catch (err) {
        // 42704: no prepared transaction with that identifier (finished before).
        if ((err as { code?: string }).code !== '42704') throw err;
      }
    },
    async preparedXids() {
      const { rows } = await pool.query<{ gid: string }>('select gid from pg_prepared_xacts where database = current_database()');
      return rows.map((r) => r.gid);
    },
  };
}

/**
 * A session holding a prepared XA transaction can run nothing else, and MariaDB lets no other
 * session commit it while the session lives: close the connection (the prepared transaction
 * stays), and wait until the server dropped the session, so that phase two can come at once.
 */
async function handOver(pool: MysqlPool, conn: MysqlConnection): Promise<void> {
  const session = conn.threadId;
  conn.destroy();
  for (let waited = 0; waited < 5_000; waited += 2) {
    const [rows] = await pool.query('select 1 from information_schema.processlist where id = ?', [session]);
    if ((rows as unknown[]).length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

function mysqlDriver(pool: MysqlPool): XaDriver {
  const preparedXids = async () => {
    const [rows] = await pool.query('xa recover');
    // data is the gtrid followed by the branch qualifier; DTM's xids and ours have none.
    return (rows as { gtrid_length: number; data: Buffer | string }[]).map((r) => r.data.toString().slice(0, r.gtrid_length));
  };
  return {
    preparedXids,
    async prepare(xid, work) {
      const conn = await pool.getConnection();
      let prepared = false;
      try {
        await conn.query(`xa start ${literal(xid)}`);
        try {
          const result = await work(conn);
          await conn.query(`xa end ${literal(xid)}`);
          await conn.query(`xa prepare ${literal(xid)}`);
          prepared = true;
          return result;
        } catch (err) {
          await conn.query(`xa end ${literal(xid)}`).catch(() => undefined);
          await conn.query(`xa rollback ${literal(xid)}`).catch(() => undefined);
          throw err;
        }
      } finally {
        if (prepared) await handOver(pool, conn);
        else conn.release();
      }
    },
    async finish(xid, op) {
      try {
        await pool.query(`xa ${op} ${literal(xid)}`);
      } catch (err) {
        // XAER_NOTA (1397): no prepared transaction with that xid we may finish. Either it finished
        // before, or the session that prepared it is still closing (MariaDB hands the xid over only
        // once it is gone): then XA RECOVER still lists it, and the call must be retried.
        if ((err as { errno?: number }).errno !== 1397) throw err;
        if ((await preparedXids()).includes(xid))
          throw new Error(`xa ${op} ${xid}: its preparing session has not closed yet`, { cause: err });
      }
    },
  };
}
