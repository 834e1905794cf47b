/**
 * The sub-transaction barrier, with DTM's table and rules, in the service's own Postgres database.
 * It makes a branch handler safe against the three ways a coordinator's calls can go wrong:
 * - a duplicate request (the same gid, branch and op again) runs the business once;
 * - a null compensation (cancel or compensate before its try or action arrived) succeeds without effect;
 * - a hanging request (the try or action arriving after its compensation) is skipped.
 * The rows are written in the same local transaction as the business change, so they commit or
 * roll back together.
 */
import { barrierDdlPostgres, barrierTable } from '../schemas/db/barrier.js';
import { branchCallQuerySchema, type BranchCallQuery } from '../schemas/dtm.js';
import { ConcordError } from '../schemas/errors.js';
import { BranchFailure } from './errors.js';
import { inTransaction, type SqlExecutor, type TransactionSource } from './sql-executor.js';

/** The op whose row a compensation leaves behind, to block a late original. */
const originOf: Record<string, string> = { cancel: 'try', compensate: 'action', rollback: 'action' };

const insertRow = `insert into ${barrierTable} (trans_type, gid, branch_id, op, barrier_id, reason)
  values ($1, $2, $3, $4, $5, $6) on conflict on constraint uniq_barrier do nothing`;

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
   * barrier rows in it. Duplicates, null compensations and hanging requests return without
   * running it. `business` gets the transaction (a pg client or a drizzle transaction).
   */
  async run<T, Tx = unknown>(db: TransactionSource, business: (tx: Tx) => Promise<T>): Promise<T | undefined> {
    return inTransaction<T | undefined, Tx>(db, (exec, tx) => this.within(exec, () => business(tx)));
  }

  /** The barrier inside a transaction the caller already opened. */
  async within<T>(exec: SqlExecutor, business: () => Promise<T>): Promise<T | undefined> {
    this.calls++;
    const barrierId = String(this.calls).padStart(2, '0');
    const { trans_type, gid, branch_id, op } = this.call;
    const origin = originOf[op];
    const originInserted = origin ? (await exec.execute(insertRow, [trans_type, gid, branch_id, origin, barrierId, op])).rowCount : 0;
    const currentInserted = (await exec.execute(insertRow, [trans_type, gid, branch_id, op, barrierId, op])).rowCount;
    if (op === 'msg' && currentInserted === 0) {
      // The check-back already decided this message was rolled back (or the body ran before).
      throw new BranchFailure(`barrier: message ${gid} was already decided`);
    }
    if (origin && originInserted > 0) return undefined; // null compensation: nothing to undo
    if (currentInserted === 0) return undefined; // duplicate or hanging request
    return business();
  }

  /**
   * Answers the coordinator's check-back of a two-phase message: SUCCESS when the local
   * transaction committed, BranchFailure when it did not. The row it writes blocks a local
   * transaction still in flight from committing later, so the answer can never turn out wrong.
   */
  static async queryPrepared(db: TransactionSource, gid: string): Promise<'SUCCESS'> {
    const reason = await inTransaction(db, async (exec) => {
      await exec.execute(insertRow, ['msg', gid, '00', 'msg', '01', 'rollback']);
      const { rows } = await exec.execute(
        `select reason from ${barrierTable} where gid = $1 and branch_id = '00' and op = 'msg' and barrier_id = '01'`,
        [gid],
      );
      return rows[0]?.reason;
    });
    if (reason === 'rollback') throw new BranchFailure(`local transaction of ${gid} did not commit`);
    return 'SUCCESS';
  }
}

/** Creates the barrier table if it is missing (the SQL of `concord barrier-sql`). */
export async function ensureBarrierTable(db: TransactionSource): Promise<void> {
  await inTransaction(db, async (exec) => {
    // Services starting together would race on CREATE ... IF NOT EXISTS.
    await exec.execute('select pg_advisory_xact_lock(4242)', []);
    for (const statement of barrierDdlPostgres
      .split(';')
      .map((s) => s.trim())
      .filter(Boolean))
      await exec.execute(statement, []);
  });
}
