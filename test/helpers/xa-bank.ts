/**
 * A bank for the XA tests: one account table in its own Postgres or MariaDB database, one Fastify
 * route (POST /Trans) that serves a branch's action and its phase two with the SDK's xaLocal, as
 * DTM's branches do. The action adds `amount` to `account` (negative: a withdrawal, refused as
 * BranchFailure when it would overdraw). It counts the calls per gid and op, fails on demand, and
 * can be slowed in phase two.
 */
import Fastify from 'fastify';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { BranchFailure, BranchOngoing, dtmAnswer, xaLocal, type XaDatabase } from '../../sdk/index.js';

export type BankDb = 'postgres' | 'mysql';

export interface XaBank {
  url: string;
  db: XaDatabase;
  balance(account: string): Promise<number>;
  /** Prepared xids of this bank's database whose gid starts with `gidPrefix`. */
  preparedXids(gidPrefix: string): Promise<string[]>;
  /** Rolls back what a failed test left prepared (it would hold its locks on the shared server). */
  rollbackPrepared(gidPrefix: string): Promise<void>;
  /** Answers the next `n` calls of `op` (default action) with `kind`, before any database work. */
  failNext(n: number, kind: 'failure' | 'error' | 'ongoing', op?: 'action' | 'commit' | 'rollback'): void;
  /** Makes each call of a phase (the action, or phase two) wait this long before its database work. */
  setLatency(phase: 'action' | 'phase2', ms: number): void;
  /** Calls received for a gid and op (action, commit, rollback), duplicates included. */
  received(gid: string, op: string): number;
  /** The HTTP statuses answered so far for a gid and op, in order. */
  answered(gid: string, op: string): number[];
  close(): Promise<void>;
}

export async function startXaBank(kind: BankDb, databaseUrl: string, accounts: Record<string, number>): Promise<XaBank> {
  const db: XaDatabase =
    kind === 'postgres'
      ? new pg.Pool({ connectionString: databaseUrl, max: 10 })
      : mysql.createPool({ uri: databaseUrl, connectionLimit: 10 });
  const exec = async (text: string, params: unknown[] = []): Promise<{ rows: Record<string, unknown>[]; changed: number }> => {
    if (db instanceof pg.Pool) {
      const r = await db.query(text, params);
      return { rows: r.rows as Record<string, unknown>[], changed: r.rowCount ?? 0 };
    }
    const [r] = await db.query(text.replace(/\$\d+/g, '?'), params);
    return Array.isArray(r)
      ? { rows: r as Record<string, unknown>[], changed: 0 }
      : { rows: [], changed: (r as mysql.ResultSetHeader).affectedRows };
  };
  await exec('create table accounts (id varchar(40) primary key, balance int not null)');
  for (const [id, balance] of Object.entries(accounts)) await exec('insert into accounts (id, balance) values ($1, $2)', [id, balance]);

  const calls = new Map<string, number>();
  const answers = new Map<string, number[]>();
  let failures = { n: 0, kind: 'error' as 'failure' | 'error' | 'ongoing', op: 'action' };
  const latency = { action: 0, phase2: 0 };
  const app = Fastify();
  app.post<{ Querystring: Record<string, string>; Body: { account: string; amount: number } | undefined }>(
    '/Trans',
    async (request, reply) => {
      const { gid, op } = request.query;
      const key = `${gid} ${op}`;
      calls.set(key, (calls.get(key) ?? 0) + 1);
      const answerWith = (answer: { status: number; body: unknown }) => {
        answers.set(key, [...(answers.get(key) ?? []), answer.status]);
        return reply.status(answer.status).send(answer.body);
      };
      try {
        if (op === failures.op && failures.n > 0) {
          failures.n--;
          throw failures.kind === 'failure'
            ? new BranchFailure('planned failure')
            : failures.kind === 'ongoing'
              ? new BranchOngoing('planned ongoing')
              : new Error('planned error');
        }
        const wait = latency[op === 'action' ? 'action' : 'phase2'];
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        await xaLocal(request.query, db, async (tx) => {
          const { account, amount } = request.body ?? { account: '', amount: 0 };
          const sql = 'update accounts set balance = balance + $1 where id = $2 and balance + $1 >= 0';
          const changed =
            tx instanceof pg.Client
              ? ((await tx.query(sql, [amount, account])).rowCount ?? 0)
              : ((await tx.query(sql.replace(/\$\d+/g, '?'), [amount, account, amount]))[0] as mysql.ResultSetHeader).affectedRows;
          if (changed === 0) throw new BranchFailure(`account ${account} cannot take ${amount}`);
        });
        return answerWith(dtmAnswer());
      } catch (err) {
        return answerWith(dtmAnswer(err));
      }
    },
  );
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const preparedXids = async (gidPrefix: string): Promise<string[]> => {
    const { rows } =
      kind === 'postgres'
        ? await exec('select gid as xid from pg_prepared_xacts where database = current_database()')
        : await exec('xa recover');
    const xids = rows.map((r) => (kind === 'postgres' ? String(r.xid) : String(r.data).slice(0, Number(r.gtrid_length))));
    return xids.filter((x) => x.startsWith(gidPrefix));
  };

  return {
    url,
    db,
    async balance(account) {
      const { rows } = await exec('select balance from accounts where id = $1', [account]);
      return Number(rows[0]?.balance);
    },
    preparedXids,
    async rollbackPrepared(gidPrefix) {
      for (const xid of await preparedXids(gidPrefix))
        await exec(kind === 'postgres' ? `rollback prepared '${xid}'` : `xa rollback '${xid}'`);
    },

    failNext: (n, k, op = 'action') => (failures = { n, kind: k, op }),
    setLatency: (phase, ms) => (latency[phase] = ms),
    received: (gid, op) => calls.get(`${gid} ${op}`) ?? 0,
    answered: (gid, op) => answers.get(`${gid} ${op}`) ?? [],
    async close() {
      await app.close();
      await db.end();
    },
  };
}
