/**
 * Bank transfer as a workflow: the transfer is an async function whose steps are recorded at the
 * coordinator. Step 1 debits the sender, step 2 credits the receiver, each a local transaction
 * with the barrier; the debit registers its compensation (credit back) beside it. A transfer the
 * receiver refuses (a closed account) rolls back: the debit is compensated and the workflow fails.
 * Had the process died between the steps, the coordinator would call /workflow/resume and the
 * run would replay the debit from its record and go on with the credit.
 *
 *   CONCORD_URL=http://localhost:36789/api/dtmsvr DATABASE_URL=postgres://... PORT=8081 node dist/examples/workflow-transfer/index.js
 */
import Fastify from 'fastify';
import pg from 'pg';
import { BranchFailure, Workflows, ensureBarrierTable, fastifyWorkflow, type Workflow } from '../../sdk/index.js';

const coordinator = process.env.CONCORD_URL ?? 'http://localhost:36789/api/dtmsvr';
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@localhost:5432/postgres' });

await ensureBarrierTable(pool);
await pool.query(
  'create table if not exists wf_accounts (id int primary key, balance int not null check (balance >= 0), open bool not null)',
);
await pool.query(
  'insert into wf_accounts values (1, 100, true), (2, 0, true), (3, 0, false) on conflict (id) do update set balance = excluded.balance',
);

interface Transfer {
  from: number;
  to: number;
  amount: number;
}

// The route the coordinator calls to resume a workflow its service left unfinished.
const port = Number(process.env.PORT ?? 8081);
const workflows = new Workflows({ coordinator, callback: `http://127.0.0.1:${port}/workflow/resume` });
const app = Fastify();
app.post('/workflow/resume', fastifyWorkflow(workflows));
await app.listen({ port, host: '127.0.0.1' });

workflows.register('transfer', async (wf: Workflow, t: Transfer) => {
  await wf.step({
    action: ({ barrier }) =>
      barrier.run<void, pg.PoolClient>(pool, async (tx) => {
        const { rowCount } = await tx.query('update wf_accounts set balance = balance - $1 where id = $2 and balance >= $1', [
          t.amount,
          t.from,
        ]);
        if (rowCount === 0) throw new BranchFailure('insufficient balance');
      }),
    compensate: ({ barrier }) =>
      barrier.run<void, pg.PoolClient>(pool, async (tx) => {
        await tx.query('update wf_accounts set balance = balance + $1 where id = $2', [t.amount, t.from]);
      }),
  });
  await wf.step({
    action: ({ barrier }) =>
      barrier.run<void, pg.PoolClient>(pool, async (tx) => {
        const { rowCount } = await tx.query('update wf_accounts set balance = balance + $1 where id = $2 and open', [t.amount, t.to]);
        if (rowCount === 0) throw new BranchFailure(`account ${t.to} is closed`);
      }),
  });
  return { transferred: t.amount };
});

async function transfer(t: Transfer): Promise<string> {
  const gid = `wf-transfer-${Date.now()}-${t.to}-${t.amount}`;
  try {
    const result = await workflows.execute<{ transferred: number }>('transfer', gid, t);
    return `${gid}: transferred ${result.transferred}`;
  } catch (err) {
    return `${gid}: rolled back (${(err as Error).message})`;
  }
}

const balances = async () => (await pool.query<{ id: number; balance: number }>('select id, balance from wf_accounts order by id')).rows;

console.log(await transfer({ from: 1, to: 2, amount: 30 }));
console.log(await transfer({ from: 1, to: 3, amount: 20 }));
console.log(await transfer({ from: 1, to: 2, amount: 500 }));
console.log('balances', JSON.stringify(await balances()));

await app.close();
await pool.end();
