/**
 * Bank transfer as a two-phase message (the README's quick start).
 *
 * TransOut is the sender's local transaction: it debits the account and writes the barrier row in
 * one commit. TransIn is the message's branch: the coordinator calls it until it succeeds, and the
 * barrier makes repeated calls harmless. A transfer larger than the balance fails inside the local
 * transaction, so the message is aborted and TransIn is never called.
 *
 *   CONCORD_URL=http://localhost:36789/api/dtmsvr DATABASE_URL=postgres://... node dist/examples/bank-transfer/index.js
 */
import Fastify from 'fastify';
import pg from 'pg';
import { BranchFailure, Msg, ensureBarrierTable, fastifyBranch, fastifyQueryPrepared } from '../../sdk/index.js';

const coordinator = process.env.CONCORD_URL ?? 'http://localhost:36789/api/dtmsvr';
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@localhost:5432/postgres' });

await ensureBarrierTable(pool);
await pool.query('create table if not exists accounts (id int primary key, balance int not null check (balance >= 0))');
await pool.query('insert into accounts values (1, 100), (2, 0) on conflict (id) do update set balance = excluded.balance');

// The receiving side: the message's branch, called by the coordinator (maybe more than once).
const app = Fastify();
app.post(
  '/TransIn',
  fastifyBranch<{ to: number; amount: number }>(async ({ barrier, body }) => {
    await barrier.run<void, pg.PoolClient>(pool, async (tx) => {
      await tx.query('update accounts set balance = balance + $1 where id = $2', [body.amount, body.to]);
    });
  }),
);
// The check-back: did the sender's local transaction commit? The barrier table knows.
app.get('/QueryPrepared', fastifyQueryPrepared(pool));
const service = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });

/** The sending side: debit locally and publish the credit, atomically. */
async function transfer(amount: number): Promise<string> {
  const gid = `transfer-${Date.now()}-${amount}`;
  const msg = new Msg(coordinator, gid, { waitResult: true }).add(`${service}/TransIn`, { to: 2, amount });
  try {
    await msg.doAndSubmit<void, pg.PoolClient>(`${service}/QueryPrepared`, pool, async (tx) => {
      const { rowCount } = await tx.query('update accounts set balance = balance - $1 where id = 1 and balance >= $1', [amount]);
      if (rowCount === 0) throw new BranchFailure('insufficient balance');
    });
    return `${gid}: transferred ${amount}`;
  } catch (err) {
    return `${gid}: rolled back (${(err as Error).message})`;
  }
}

const balances = async () => (await pool.query<{ id: number; balance: number }>('select id, balance from accounts order by id')).rows;

console.log(await transfer(30));
console.log(await transfer(500));
console.log('balances', JSON.stringify(await balances()));

await app.close();
await pool.end();
