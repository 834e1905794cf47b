/**
 * The sub-transaction barrier, with DTM's table and rules, in the service's own database:
 * Postgres, MySQL/MariaDB or Redis. It makes a branch handler safe against the three ways a
 * coordinator's calls can go wrong:
 * - a duplicate request (the same gid, branch and op again) runs the business once;
 * - a null compensation (cancel or compensate before its try or action arrived) succeeds without effect;
 * - a hanging request (the try or action arriving after its compensation) is skipped.
 * In SQL the rows are written in the same local transaction as the business change, so they commit
 * or roll back together; in Redis one Lua script checks the keys and applies the change.
 */
import { barrierDdlMysql, barrierDdlPostgres, barrierTable } from '../schemas/db/barrier.js';
import { branchCallQuerySchema, type BranchCallQuery } from '../schemas/dtm.js';
import { ConcordError } from '../schemas/errors.js';
import { isRedisLike, redisAdjust, redisQueryPrepared, type RedisAdjustment, type RedisLike } from './barrier-redis.js';
import { BranchFailure } from './errors.js';
import { inMysqlTransaction, isMysqlSource, type MysqlSource } from './mysql-executor.js';
import { inTransaction, type SqlExecutor, type TransactionSource } from './sql-executor.js';

/** A SQL database the barrier opens its transaction on: Postgres (pg, drizzle) or MySQL (mysql2). */
export type SqlBarrierSource = TransactionSource | MysqlSource;
/** Anything the barrier can keep its marks in. */
export type BarrierSource = SqlBarrierSource | RedisLike;

/** The op whose row a compensation leaves behind, to block a late original. */
const originOf: Record<string, string> = { cancel: 'try', compensate: 'action', rollback: 'action' };

const columns = `${barrierTable} (trans_type, gid, branch_id, op, barrier_id, reason) values ($1, $2, $3, $4, $5, $6)`;
const insertRow = {
  postgres: `insert into ${columns} on conflict on constraint uniq_barrier do nothing`,
  mysql: `insert ignore into ${columns}`,
};

/** Runs `fn` in a new transaction on a Postgres or MySQL source. */
function sqlTransaction<T, Tx>(db: SqlBarrierSource, fn: (exec: SqlExecutor, tx: Tx) => Promise<T>): Promise<T> {
  return isMysqlSource(db) ? inMysqlTransaction(db, fn) : inTransaction(db, fn);
}

export class BranchBarrier {
  private calls = 0;

  constructor(readonly call: BranchCallQuery) {}

  /** From the query parameters of a coordinator call; a 400-style error names a missing one. */
  static from(query: unknown): BranchBarrier {
    const parsed = branchCallQuerySchema.safeParse(query);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue?.path.join('.') ?? '';
      throw new ConcordError('INVALID_REQUEST', `query parameter ${field}: ${issue?.message ?? 'invalid'}`, { field });
    }
    return new BranchBarrier(parsed.data);
  }

  /**
   * Runs `business` once per (gid, branch, op) in a new local transaction opened on `db`, with the
   * barrier rows in it. Duplicates, null compensations and hanging requests return undefined
   * without running it. `business` gets the transaction: a pg client, a drizzle transaction, or a
   * mysql2 connection.
   */
  run<T, Tx = unknown>(db: SqlBarrierSource, business: (tx: Tx) => Promise<T>): Promise<T | undefined>;
  /**
   * Redis: adds `change.amount` to the integer at `change.key` once per (gid, branch, op), in one
   * script with the barrier keys; answers the new value, or undefined when the barrier skipped it.
   * A missing key, or one the change would take below zero, throws BranchFailure.
   */
  run(redis: RedisLike, change: RedisAdjustment): Promise<number | undefined>;
  async run<T, Tx>(db: BarrierSource, business: ((tx: Tx) => Promise<T>) | RedisAdjustment): Promise<T | number | undefined> {
    if (isRedisLike(db)) {
      if (typeof business === 'function') throw new TypeError('barrier: with Redis, pass the change ({ key, amount }), not a function');
      const { gid, branch_id, op } = this.call;
      return redisAdjust(db, { gid, branchId: branch_id, op, barrierId: this.nextBarrierId(), origin: originOf[op] }, business);
    }
    if (typeof business !== 'function') throw new TypeError('barrier: with a SQL database, pass the business function');
    return sqlTransaction<T | undefined, Tx>(db, (exec, tx) => this.within(exec, () => business(tx)));
  }

  /** The barrier inside a transaction the caller already opened. */
  async within<T>(exec: SqlExecutor, business: () => Promise<T>): Promise<T | undefined> {
    const barrierId = this.nextBarrierId();
    const { trans_type, gid, branch_id, op } = this.call;
    const origin = originOf[op];
    const insert = insertRow[exec.dialect ?? 'postgres'];
    const originInserted = origin ? (await exec.execute(insert, [trans_type, gid, branch_id, origin, barrierId, op])).rowCount : 0;
    const currentInserted = (await exec.execute(insert, [trans_type, gid, branch_id, op, barrierId, op])).rowCount;
    if (op === 'msg' && currentInserted === 0) {
      // The check-back already decided this message was rolled back (or the body ran before).
      throw new BranchFailure(`barrier: message ${gid} was already decided`);
    }
    if (origin && originInserted > 0) return undefined; // null compensation: nothing to undo
    if (currentInserted === 0) return undefined; // duplicate or hanging request
    return business();
  }

  /** Barrier ids count the barrier's calls (01, 02…), so that one handler may use it more than once. */
  private nextBarrierId(): string {
    return String(++this.calls).padStart(2, '0');
  }

  /**
   * Answers the coordinator's check-back of a two-phase message: SUCCESS when the local
   * transaction committed, BranchFailure when it did not. The row (or Redis key) it writes blocks
   * a local transaction still in flight from committing later, so the answer can never turn out wrong.
   */
  static async queryPrepared(db: BarrierSource, gid: string): Promise<'SUCCESS'> {
    const reason = isRedisLike(db) ? await redisQueryPrepared(db, gid) : await sqlReason(db, gid);
    if (reason === 'rollback') throw new BranchFailure(`local transaction of ${gid} did not commit`);
    return 'SUCCESS';
  }
}

/** The reason of the message's barrier row, after inserting 'rollback' where there was none. */
function sqlReason(db: SqlBarrierSource, gid: string): Promise<unknown> {
  return sqlTransaction(db, async (exec) => {
    await exec.execute(insertRow[exec.dialect ?? 'postgres'], ['msg', gid, '00', 'msg', '01', 'rollback']);
    const { rows } = await exec.execute(
      `select reason from ${barrierTable} where gid = $1 and branch_id = '00' and op = 'msg' and barrier_id = '01'`,
      [gid],
    );
    return rows[0]?.reason;
  });
}

/**
 * Creates the barrier table if it is missing (the SQL of `concord barrier-sql`), in Postgres or
 * MySQL. Redis needs none.
 */
export async function ensureBarrierTable(db: SqlBarrierSource): Promise<void> {
  await sqlTransaction(db, async (exec) => {
    const mysql = exec.dialect === 'mysql';
    // Postgres services starting together would race on CREATE ... IF NOT EXISTS; MySQL's DDL takes a metadata lock.
    if (!mysql) await exec.execute('select pg_advisory_xact_lock(4242)', []);
    for (const statement of (mysql ? barrierDdlMysql : barrierDdlPostgres)
      .split(';')
      .map((s) => s.trim())
      .filter(Boolean))
      await exec.execute(statement, []);
  });
}
