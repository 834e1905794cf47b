/**
 * The bank transfer with the barrier in MySQL/MariaDB and in Redis: Alice's bank keeps accounts in
 * MySQL and debits her in a local transaction with the barrier row (a two-phase message); Bob's
 * bank keeps balances in Redis, and its TransIn credits him with the barrier's Lua script, once
 * however often the coordinator calls. A transfer larger than the balance aborts the message.
 *
 *   CONCORD_URL=http://localhost:36789/api/dtmsvr MYSQL_URL=mysql://root@localhost:3306/bank REDIS_URL=redis://localhost:6379 \
 *     node dist/examples/bank-transfer-mysql-redis/index.js
 */
import Fastify from 'fastify';
import mysql from 'mysql2/promise';
import { createClient } from 'redis';
import { BranchFailure, Msg, ensureBarrierTable, fastifyBranch, fastifyQueryPrepared } from '../../sdk/index.js';

const coordinator = process.env.CONCORD_URL ?? 'http://localhost:36789/api/dtmsvr';
const bankA = mysql.createPool({ uri: process.env.MYSQL_URL ?? 'mysql://root@localhost:3306/bank' });
const bankB = await createClient({ url: process.env.REDIS_URL ?? 'redis://localhost:6379' }).connect();

await ensureBarrierTable(bankA); // DTM's table: dtm_barrier.barrier
await bankA.query('create table if not exists accounts (id varchar(64) primary key, balance int not null)');
await bankA.query("insert into accounts values ('alice', 100) on duplicate key update balance = 100");
const bob = `balance:bob:${Date.now()}`;
await bankB.set(bob, 0);

const app = Fastify();
// Bank B: the message's branch. Redis has no rollback: the change itself goes into the barrier's script.
app.post(
  '/TransIn',
  fastifyBranch<{ amount: number }>(async ({ barrier, body }) => {
    await barrier.run(bankB, { key: bob, amount: body.amount });
  }),
);
// Bank A: the check-back, answered from the barrier table in MySQL.
app.get('/QueryPrepared', fastifyQueryPrepared(bankA));
const service = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });

async function transfer(amount: number): Promise<string> {
  const gid = `transfer-${Date.now()}-${amount}`;
  const msg = new Msg(coordinator, gid, { waitResult: true }).add(`${service}/TransIn`, { amount });
  try {
    await msg.doAndSubmit<void, mysql.PoolConnection>(`${service}/QueryPrepared`, bankA, async (tx) => {
      const [r] = await tx.execute<mysql.ResultSetHeader>("update accounts set balance = balance - ? where id = 'alice' and balance >= ?", [
        amount,
        amount,
      ]);
      if (r.affectedRows === 0) throw new BranchFailure('insufficient balance');
    });
    return `${gid}: transferred ${amount}`;
  } catch (err) {
    return `${gid}: rolled back (${(err as Error).message})`;
  }
}

console.log(await transfer(30));
console.log(await transfer(500));
const [[alice]] = await bankA.query<mysql.RowDataPacket[]>("select balance from accounts where id = 'alice'");
console.log('balances', JSON.stringify({ alice: Number(alice?.balance), bob: Number(await bankB.get(bob)) }));

await app.close();
await bankA.end();
bankB.destroy();
