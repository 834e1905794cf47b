/**
 * Bank transfer as an XA transaction across two databases: Alice's bank keeps its accounts in
 * Postgres, Bob's in MySQL/MariaDB. Each bank's branch debits or credits inside a local XA
 * transaction that it prepares and registers with the coordinator; once both answered, the
 * initiator submits and the coordinator commits both (XA COMMIT / COMMIT PREPARED). A branch that
 * refuses makes the initiator abort, and the coordinator rolls back what was prepared.
 *
 *   CONCORD_URL=http://localhost:36789/api/dtmsvr DATABASE_URL=postgres://... MYSQL_URL=mysql://... \
 *     node dist/examples/xa-transfer/index.js
 *
 * Postgres needs max_prepared_transactions > 0 (e.g. 100); MySQL 5.7.7+ or MariaDB 10.5+ keep a
 * prepared XA transaction when its connection closes, which the helpers rely on.
 */
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { BranchFailure, dtmAnswer, xa, xaLocal, xaRecover, type XaConnectionOf, type XaDatabase } from '../../sdk/index.js';

const coordinator = process.env.CONCORD_URL ?? 'http://localhost:36789/api/dtmsvr';
const alicesBank = new pg.Pool({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@localhost:5432/postgres' });
const bobsBank = mysql.createPool({ uri: process.env.MYSQL_URL ?? 'mysql://root@localhost:3306/bank' });

await alicesBank.query('create table if not exists accounts (id int primary key, balance int not null check (balance >= 0))');
await alicesBank.query('insert into accounts values (1, 100) on conflict (id) do update set balance = excluded.balance');
await bobsBank.query('create table if not exists accounts (id int primary key, balance int not null)');
await bobsBank.query('insert into accounts values (2, 0) on duplicate key update balance = values(balance)');

// At start, before taking requests: settle what a crash left prepared (it holds row locks).
// MySQL's XA RECOVER lists the whole server's xids: keep to this example's gids.
await xaRecover(alicesBank, { coordinator });
await xaRecover(bobsBank, { coordinator, filter: (xid) => xid.startsWith('xa-transfer-') });

/**
 * A branch route, as DTM's branches: the action (op=action) runs `work` with the request body in
 * a local XA transaction, phase two (op=commit or rollback, no body) finishes it.
 */
const branch =
  <B, D extends XaDatabase>(db: D, work: (tx: XaConnectionOf<D>, body: B) => Promise<void>) =>
  async (request: { query: unknown; body: unknown }, reply: { status(code: number): { send(body: unknown): unknown } }) => {
    try {
      await xaLocal(request.query, db, (tx) => work(tx, request.body as B));
      return reply.status(200).send(dtmAnswer().body);
    } catch (err) {
      const answer = dtmAnswer(err);
      return reply.status(answer.status).send(answer.body);
    }
  };

const app = Fastify();
app.post(
  '/alice/TransOut',
  branch(alicesBank, async (tx, { from, amount }: { from: number; amount: number }) => {
    const { rowCount } = await tx.query('update accounts set balance = balance - $1 where id = $2 and balance >= $1', [amount, from]);
    if (rowCount === 0) throw new BranchFailure('insufficient balance');
  }),
);
app.post(
  '/bob/TransIn',
  branch(bobsBank, async (tx, { to, amount }: { to: number; amount: number }) => {
    const [result] = await tx.query<mysql.ResultSetHeader>('update accounts set balance = balance + ? where id = ?', [amount, to]);
    if (result.affectedRows === 0) throw new BranchFailure(`no account ${to}`);
  }),
);
const service = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });

async function send(from: number, to: number, amount: number): Promise<string> {
  const gid = `xa-transfer-${randomUUID()}`;
  try {
    await xa(
      coordinator,
      gid,
      async (x) => {
        await x.callBranch({ from, amount }, `${service}/alice/TransOut`);
        await x.callBranch({ to, amount }, `${service}/bob/TransIn`);
      },
      { waitResult: true },
    );
    return `${amount} from ${from} to ${to}: committed`;
  } catch (err) {
    return `${amount} from ${from} to ${to}: rolled back (${(err as Error).message})`;
  }
}

const balance = async () => {
  const { rows } = await alicesBank.query<{ balance: number }>('select balance from accounts where id = 1');
  const [bob] = await bobsBank.query<({ balance: number } & mysql.RowDataPacket)[]>('select balance from accounts where id = 2');
  return { alice: rows[0]?.balance, bob: bob[0]?.balance };
};

console.log(await send(1, 2, 30));
console.log(await send(1, 2, 500));
console.log(await send(1, 3, 10));
console.log('balances', JSON.stringify(await balance()));

await app.close();
await alicesBank.end();
await bobsBank.end();
