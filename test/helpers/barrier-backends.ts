/**
 * The three stores the barrier keeps its marks in, each with an account balance as the business
 * data, so that one suite (test/barrier.test.ts) states the rules once and runs them on each.
 */
import mysql from 'mysql2/promise';
import pg from 'pg';
import { createClient } from 'redis';
import { inject } from 'vitest';
import { BranchBarrier, BranchFailure, ensureBarrierTable, type BarrierSource, type RedisAdjustment } from '../../sdk/index.js';
import { freshDatabase, freshMysqlDatabase } from './db.js';

export interface BarrierBackend {
  /** What BranchBarrier.run and queryPrepared are given. */
  source: BarrierSource;
  /** Opens the account `gid` with `balance`, or sets it. */
  setBalance(gid: string, balance: number): Promise<void>;
  balance(gid: string): Promise<number>;
  /**
   * The business change that adds `amount` to the account, in the form this store's barrier takes
   * (a function of the transaction, or a Redis adjustment). Taking more than the balance throws
   * BranchFailure (in SQL from the business, rolling the barrier rows back).
   */
  change(gid: string, amount: number): ((tx: never) => Promise<unknown>) | RedisAdjustment;
  /** Applies `change(gid, amount)` through the barrier: true when the business ran. */
  apply(barrier: BranchBarrier, gid: string, amount: number): Promise<boolean>;
  close(): Promise<void>;
}

/** SQL: the business updates a row of `accounts` in the barrier's transaction. */
function sqlBackend<Tx>(
  source: BarrierSource,
  update: (tx: Tx, gid: string, amount: number) => Promise<number>,
  query: (text: string, params: unknown[]) => Promise<Record<string, unknown>[]>,
  close: () => Promise<void>,
): BarrierBackend {
  const change = (gid: string, amount: number) => async (tx: Tx) => {
    if ((await update(tx, gid, amount)) === 0) throw new BranchFailure(`account ${gid}: balance too low`);
    return true;
  };
  return {
    source,
    setBalance: async (gid, balance) => {
      await query('delete from accounts where id = $1', [gid]);
      await query('insert into accounts (id, balance) values ($1, $2)', [gid, balance]);
    },
    balance: async (gid) => Number((await query('select balance from accounts where id = $1', [gid]))[0]?.balance),
    change,
    apply: async (barrier, gid, amount) => (await barrier.run<boolean, Tx>(source as never, change(gid, amount))) === true,
    close,
  };
}

async function postgres(): Promise<BarrierBackend> {
  const pool = new pg.Pool({ connectionString: await freshDatabase(), max: 10 });
  await Promise.all([ensureBarrierTable(pool), ensureBarrierTable(pool)]); // racing services are fine
  await pool.query('create table accounts (id text primary key, balance int not null)');
  return sqlBackend<pg.PoolClient>(
    pool,
    async (tx, gid, amount) =>
      (await tx.query('update accounts set balance = balance + $1 where id = $2 and balance + $1 >= 0', [amount, gid])).rowCount ?? 0,
    async (text, params) => (await pool.query(text, params)).rows as Record<string, unknown>[],
    () => pool.end(),
  );
}

async function mariadb(): Promise<BarrierBackend> {
  const pool = mysql.createPool({ uri: await freshMysqlDatabase(), connectionLimit: 10 });
  await Promise.all([ensureBarrierTable(pool), ensureBarrierTable(pool)]);
  await pool.query('create table accounts (id varchar(128) primary key, balance int not null)');
  return sqlBackend<mysql.PoolConnection>(
    pool,
    async (tx, gid, amount) => {
      const [result] = await tx.execute<mysql.ResultSetHeader>(
        'update accounts set balance = balance + ? where id = ? and balance + ? >= 0',
        [amount, gid, amount],
      );
      return result.affectedRows;
    },
    async (text, params) => {
      const [rows] = await pool.query(text.replace(/\$\d+/g, '?'), params);
      return Array.isArray(rows) ? (rows as Record<string, unknown>[]) : [];
    },
    () => pool.end(),
  );
}

async function redis(): Promise<BarrierBackend> {
  const client = createClient({ url: inject('redisUrl') });
  await client.connect();
  const key = (gid: string) => `concord-test:balance:${gid}`;
  return {
    source: client,
    setBalance: async (gid, balance) => {
      await client.set(key(gid), String(balance));
    },
    balance: async (gid) => Number(await client.get(key(gid))),
    change: (gid, amount) => ({ key: key(gid), amount, expireSeconds: 600 }),
    apply: async (barrier, gid, amount) => (await barrier.run(client, { key: key(gid), amount, expireSeconds: 600 })) !== undefined,
    close: async () => {
      client.destroy();
    },
  };
}

export const barrierBackends: [string, () => Promise<BarrierBackend>][] = [
  ['Postgres', postgres],
  ['MariaDB', mariadb],
  ['Redis', redis],
];
