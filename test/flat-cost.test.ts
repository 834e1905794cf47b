/**
 * Flat cost: finished transactions in the store cost the live ones nothing. A store holding
 * 200,000 finished transactions (and their branches) carries messages, a failing message that is
 * retried, sagas and a retention pass through a coordinator; Postgres's own counters (pg_stat_user_tables) must
 * show that no statement of the hot path, the scheduler or the retention job read the finished rows.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Msg, Saga } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, waitForStatus } from './helpers/poll.js';

const finished = 200_000;
const expired = 100;
let store: string;
let bank: BankService;
let coordinator: TestCoordinator;

interface TableReads {
  relname: string;
  seq_scan: string;
  seq_tup_read: string;
  idx_tup_fetch: string;
}

async function reads(): Promise<Map<string, { seqRows: number; indexRows: number }>> {
  const client = new pg.Client({ connectionString: store });
  await client.connect();
  try {
    // The statistics collector publishes a backend's counters when its transaction ends; wait for it.
    await client.query('select pg_stat_force_next_flush()').catch(() => undefined);
    await client.query('select pg_stat_clear_snapshot()');
    const { rows } = await client.query<TableReads>(
      `select relname, seq_scan::text, seq_tup_read::text, coalesce(idx_tup_fetch, 0)::text as idx_tup_fetch
       from pg_stat_user_tables where relname in ('trans_global', 'trans_branch_op')`,
    );
    return new Map(rows.map((r) => [r.relname, { seqRows: Number(r.seq_tup_read), indexRows: Number(r.idx_tup_fetch) }]));
  } finally {
    await client.end();
  }
}

async function retentionDeleted(): Promise<number> {
  const text = await (await fetch(`${coordinator.url}/api/metrics`)).text();
  return [...text.matchAll(/^concord_retention_deleted_total(?:\{[^}]*\})? (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
}

beforeAll(async () => {
  store = await freshDatabase();
  bank = await startBankService(await freshDatabase());
  // Migrate with a first start, then fill the store while no coordinator runs.
  coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
  expect(await coordinator.stop()).toBe(0);
  const client = new pg.Client({ connectionString: store });
  await client.connect();
  try {
    await client.query(
      `insert into trans_global (gid, trans_type, status, content_hash, next_cron_interval, create_time, update_time, finish_time)
       select 'old-' || i, case when i % 2 = 0 then 'msg' else 'saga' end, case when i % 10 = 0 then 'failed' else 'succeed' end,
              md5(i::text) || md5(i::text), 10, now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour'
       from generate_series(1, $1::int) i`,
      [finished],
    );
    await client.query(
      `insert into trans_branch_op (gid, url, data, branch_id, op, status, attempts, create_time, update_time, finish_time)
       select 'old-' || i, 'http://127.0.0.1:9/TransIn', '{}', '01', 'action', 'succeed', 1, now() - interval '1 hour',
              now() - interval '1 hour', now() - interval '1 hour'
       from generate_series(1, $1::int) i`,
      [finished],
    );
    // Past the retention period (7 days by default): the retention job's work.
    await client.query(
      `update trans_global set finish_time = now() - interval '30 days', update_time = now() - interval '30 days' where id <= $1`,
      [expired],
    );
    await client.query('analyze trans_global');
    await client.query('analyze trans_branch_op');
  } finally {
    await client.end();
  }
  // A short retention pass interval, so the retention job's statements run during the test too.
  coordinator = await inProcessCoordinator({ store, env: { ...fastCoordinator, CONCORD_RETENTION_INTERVAL: '1' } });
}, 120_000);

afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
  await bank?.close();
});

it('reads none of 200,000 finished transactions while it carries messages, retries and sagas', async () => {
  const before = await reads();
  const gids: string[] = [];
  for (let i = 0; i < 20; i++) {
    const gid = `flat-msg-${randomUUID()}`;
    gids.push(gid);
    await new Msg(coordinator.dtm, gid).add(`${bank.url}/TransIn`, { amount: 1 }).submit();
  }
  // Retried by the scheduler a few times before it succeeds.
  bank.failNext('/TransOut', 3, 'error');
  const retried = `flat-retry-${randomUUID()}`;
  gids.push(retried);
  await new Msg(coordinator.dtm, retried).add(`${bank.url}/TransOut`, { amount: 1 }).submit();
  for (let i = 0; i < 5; i++) {
    const gid = `flat-saga-${randomUUID()}`;
    gids.push(gid);
    await new Saga(coordinator.dtm, gid)
      .add(`${bank.url}/TransOut`, `${bank.url}/TransOutCompensate`, { amount: 1 })
      .add(`${bank.url}/TransIn`, `${bank.url}/TransInCompensate`, { amount: 1 })
      .submit();
  }
  for (const gid of gids) await waitForStatus(coordinator.dtm, gid, 'succeed');
  // A retention pass ran too: it deleted the expired rows, and only those.
  await expect.poll(() => retentionDeleted(), { timeout: 20_000 }).toBeGreaterThanOrEqual(expired);
  const after = await reads();
  for (const table of ['trans_global', 'trans_branch_op']) {
    const seqRows = after.get(table)!.seqRows - before.get(table)!.seqRows;
    const indexRows = after.get(table)!.indexRows - before.get(table)!.indexRows;
    // A scan of the finished rows would read at least 200,000; the live work reads a few hundred.
    expect(seqRows, `${table}: rows read by sequential scans`).toBeLessThan(finished / 20);
    expect(indexRows, `${table}: rows fetched through indexes`).toBeLessThan(finished / 20);
  }
}, 120_000);
