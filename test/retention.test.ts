/** Retention: finished transactions past the retention age go, with their branches; nothing else does. */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest';
import { Msg } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query } from './helpers/poll.js';

let store: pg.Pool;
let bank: BankService;
const nodes: TestCoordinator[] = [];
// An hour of retention; rows are aged in SQL. Two nodes on one store run the job every 0.1 s.
const env = { ...fastCoordinator, CONCORD_RETENTION: '3600', CONCORD_RETENTION_INTERVAL: '0.1', CONCORD_RETENTION_BATCH: '7' };

beforeAll(async () => {
  const url = await freshDatabase();
  store = new pg.Pool({ connectionString: url });
  bank = await startBankService(await freshDatabase());
  nodes.push(await inProcessCoordinator({ store: url, env }), await inProcessCoordinator({ store: url, env }));
});
afterAll(async () => {
  for (const node of nodes) await node.stop();
  await bank?.close();
  await store?.end();
});

const gid = () => `r-${randomUUID()}`;

async function count(table: 'trans_global' | 'trans_branch_op', gids: string[]): Promise<number> {
  const { rows } = await store.query<{ n: number }>(`select count(*)::int as n from ${table} where gid = any($1)`, [gids]);
  return rows[0]?.n ?? 0;
}

async function deletedByMetrics(table: string): Promise<number> {
  let sum = 0;
  for (const node of nodes) {
    const text = await (await fetch(`${node.url}/api/metrics`)).text();
    sum += Number(new RegExp(`concord_retention_deleted_total\\{table="${table}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
  }
  return sum;
}

it('deletes finished transactions older than the retention with their branches, from one node at a time, and keeps the rest', async () => {
  const [dtm] = nodes.map((n) => n.dtm) as [string];
  const succeeded = Array.from({ length: 4 }, gid);
  for (const g of succeeded) {
    await new Msg(dtm, g, { waitResult: true })
      .add(`${bank.url}/TransIn`, { amount: 1 })
      .add(`${bank.url}/TransOut`, { amount: 1 })
      .submit();
  }
  const [oldOk, noFinishTime, young, attention] = succeeded as [string, string, string, string];
  const oldFailed = gid();
  const aborted = new Msg(dtm, oldFailed).add(`${bank.url}/TransIn`, { amount: 1 });
  await aborted.prepare(`${bank.url}/QueryPrepared`);
  await aborted.abort('test');
  const prepared = gid();
  await new Msg(dtm, prepared, { timeoutToFail: 3_600 }).add(`${bank.url}/TransIn`, { amount: 1 }).prepare(`${bank.url}/QueryPrepared`);
  expect((await query(dtm, oldFailed)).transaction?.status).toBe('failed');
  // While the retention lock is taken (as by a node deleting), no node deletes anything: taken
  // before any row is old enough, so that the nodes (every 0.1 s) cannot start early.
  const holder = await store.connect();
  const releaseHolder = async () => {
    await holder.query('select pg_advisory_unlock_all()').catch(() => undefined);
    holder.release();
  };
  onTestFinished(releaseHolder);
  await holder.query('select pg_advisory_lock($1)', [0x636f6e72]);
  // Many more old rows than one batch, written straight into the store, two branches each.
  const bulk = Array.from({ length: 40 }, gid);
  await store.query(
    `insert into trans_global (gid, trans_type, status, content_hash, next_cron_interval, finish_time)
     select g, 'msg', 'succeed', '', 1, now() - interval '2 hours' from unnest($1::text[]) g`,
    [bulk],
  );
  await store.query(
    `insert into trans_branch_op (gid, url, branch_id, op, status)
     select g, 'http://x/a', b, 'action', 'succeed' from unnest($1::text[]) g, unnest(array['01', '02']) b`,
    [bulk],
  );
  const branchesBefore = await count('trans_branch_op', [oldOk, noFinishTime, oldFailed, young, attention, prepared]);

  await store.query(`update trans_global set finish_time = now() - interval '61 minutes' where gid = any($1)`, [[oldOk, oldFailed]]);
  await store.query(`update trans_global set finish_time = null, update_time = now() - interval '2 hours' where gid = $1`, [noFinishTime]);
  await store.query(`update trans_global set finish_time = now() - interval '50 minutes' where gid = $1`, [young]);
  await store.query(
    `update trans_global set status = 'needs_attention', finish_time = now() - interval '2 hours', update_time = now() - interval '2 hours' where gid = $1`,
    [attention],
  );
  await store.query(
    `update trans_global set finish_time = now() - interval '2 hours', update_time = now() - interval '2 hours', create_time = now() - interval '2 hours' where gid = $1`,
    [prepared],
  );

  const expired = [oldOk, noFinishTime, oldFailed, ...bulk];
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  expect(await count('trans_global', expired)).toBe(expired.length);
  await holder.query('select pg_advisory_unlock($1)', [0x636f6e72]);
  await expect.poll(() => count('trans_global', expired), { timeout: 15_000, interval: 100 }).toBe(0);
  expect(await count('trans_branch_op', expired)).toBe(0);
  for (const g of [young, attention, prepared]) expect(await count('trans_global', [g])).toBe(1);
  const kept = await count('trans_branch_op', [young, attention, prepared]);
  expect(kept).toBe(5);
  expect(branchesBefore - kept).toBe(5); // oldOk 2, noFinishTime 2, oldFailed 1
  expect((await query(dtm, oldOk)).transaction).toBeNull();
  expect((await query(dtm, young)).transaction?.status).toBe('succeed');
  // Each row was deleted by exactly one node: the two nodes' counts add up to the rows that went.
  await expect.poll(() => deletedByMetrics('trans_global'), { timeout: 5_000 }).toBe(expired.length);
  expect(await deletedByMetrics('trans_branch_op')).toBe(80 + 5);
});
