/**
 * Bank transfer as a saga whose steps are gRPC methods: a TypeScript service on @grpc/grpc-js,
 * written with the SDK's gRPC adapter and the barrier in Postgres. The coordinator calls
 * `host:port/bank.Accounts/TransOut` (DTM's gRPC branch URL) with the step's bytes and DTM's
 * metadata, and reads the answer from the status code. No .proto is compiled here: the request
 * bytes are JSON; a service with protobuf messages decodes `body` with its own protobuf library.
 *
 *   CONCORD_URL=http://localhost:36789/api/dtmsvr DATABASE_URL=postgres://... node dist/examples/grpc-transfer/index.js
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import pg from 'pg';
import { BranchFailure, Saga, ensureBarrierTable, grpcBranch, grpcBranchService } from '../../sdk/index.js';

const coordinator = process.env.CONCORD_URL ?? 'http://localhost:36789/api/dtmsvr';
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@localhost:5432/postgres' });

await ensureBarrierTable(pool);
await pool.query('create table if not exists accounts (id int primary key, balance int not null check (balance >= 0))');
await pool.query('insert into accounts values (1, 100), (2, 0) on conflict (id) do update set balance = excluded.balance');

interface TransferRequest {
  from: number;
  to: number;
  amount: number;
}

/** A step that adds `sign` × amount to one side's account, once per (gid, branch, op) thanks to the barrier. */
const adjust = (side: 'from' | 'to', sign: 1 | -1) =>
  grpcBranch(async ({ barrier, body }) => {
    const req = JSON.parse(body.toString('utf8')) as TransferRequest;
    await barrier.run<void, pg.PoolClient>(pool, async (tx) => {
      const { rowCount } = await tx.query('update accounts set balance = balance + $1 where id = $2 and balance + $1 >= 0', [
        sign * req.amount,
        req[side],
      ]);
      // Aborted: the saga rolls back (and the barrier row rolls back with the update).
      if (rowCount === 0) throw new BranchFailure('insufficient balance');
    });
  });

const { definition, implementation } = grpcBranchService('bank.Accounts', {
  TransOut: adjust('from', -1),
  TransOutRevert: adjust('from', 1),
  TransIn: adjust('to', 1),
  TransInRevert: adjust('to', -1),
});
const server = new Server();
server.addService(definition, implementation);
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync(`127.0.0.1:${process.env.PORT ?? 0}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
);
const accounts = `127.0.0.1:${port}/bank.Accounts`;

async function transfer(amount: number): Promise<string> {
  const gid = `grpc-transfer-${Date.now()}-${amount}`;
  const request: TransferRequest = { from: 1, to: 2, amount };
  try {
    await new Saga(coordinator, gid, { waitResult: true })
      .add(`${accounts}/TransOut`, `${accounts}/TransOutRevert`, request)
      .add(`${accounts}/TransIn`, `${accounts}/TransInRevert`, request)
      .submit();
    return `${gid}: transferred ${amount}`;
  } catch (err) {
    return `${gid}: rolled back (${(err as Error).message})`;
  }
}

const balances = async () => (await pool.query<{ id: number; balance: number }>('select id, balance from accounts order by id')).rows;

console.log(await transfer(30));
console.log(await transfer(500));
console.log('balances', JSON.stringify(await balances()));

await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
await pool.end();
