/**
 * Flat cost (issue 12): finished transactions in the store cost the live ones nothing. A store
 * holding 200,000 finished transactions and their branches (test/helpers/finished-store.ts, the
 * seed of bench/flat-cost.ts) carries, through a coordinator, two-phase messages (one retried after
 * a failed branch call, one left prepared for the check-back), sagas, TCC, GET /query, the
 * scheduler's polls, the health watch's stalled-work query and retention passes. Postgres's own
 * counters (pg_stat_user_tables, reset before the coordinator starts and flushed when its
 * connections close) must show that no statement read the finished rows, by a sequential scan or
 * through an index.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Msg, Saga, tcc } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore, othersGone, withClient } from './helpers/db.js';
import { seedFinishedStore } from './helpers/finished-store.js';
import { fastCoordinator, waitForStatus } from './helpers/poll.js';

const finished = 200_000;
/** Succeeded 30 days ago, past the default retention of 7 days: the retention job's work (set in beforeAll). */
let expired = 0;
/** The tables that hold transactions and branches. */
const tables = ['trans_global', 'trans_branch_op'];
let store: string;
let bank: BankService;
let coordinator: TestCoordinator | undefined;

const withStore = <T>(run: (client: pg.Client) => Promise<T>) => withClient(store, run);

/** Rows each table gave out since the counters were reset: by sequential scans, and fetched through indexes. */
async function reads(): Promise<Map<string, { seqRows: number; indexRows: number; seqScans: number }>> {
  return withStore(async (client) => {
    await othersGone(client);
    const { rows } = await client.query<{ relname: string; seq_scan: string; seq_tup_read: string; idx_tup_fetch: string }>(
      `select relname, seq_scan::text, seq_tup_read::text, coalesce(idx_tup_fetch, 0)::text as idx_tup_fetch
       from pg_stat_user_tables where relname = any($1)`,
      [tables],
    );
    return new Map(
      rows.map((r) => [r.relname, { seqRows: Number(r.seq_tup_read), indexRows: Number(r.idx_tup_fetch), seqScans: Number(r.seq_scan) }]),
    );
  });
}

async function retentionDeleted(c: TestCoordinator): Promise<number> {
  const text = await (await fetch(`${c.url}/api/metrics`)).text();
  return Number(/^concord_retention_deleted_total\{table="trans_global"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

beforeAll(async () => {
  [store, bank] = await Promise.all([freshStore(), freshDatabase().then(startBankService)]);
  await withStore(async (client) => {
    // Finished over the last 6 days: inside the retention period, so they stay.
    await seedFinishedStore(client, { rows: finished, spanDays: 6 });
    const aged = await client.query(
      `update trans_global set finish_time = now() - interval '30 days', update_time = now() - interval '30 days'
       where id <= 100 and status = 'succeed'`,
    );
    expired = aged.rowCount ?? 0;
    expect(expired).toBeGreaterThan(90);
    await client.query('analyze trans_global');
  });
  // From here on, every row read in this database is the coordinator's (the seed's counters are published once its backend is gone).
  await withStore(async (client) => {
    await othersGone(client);
    await client.query('select pg_stat_reset()');
  });
  coordinator = await inProcessCoordinator({
    store,
    env: {
      ...fastCoordinator,
      // Retention passes and the health watch's stalled-work query every second or so.
      CONCORD_RETENTION_INTERVAL: '1',
      CONCORD_STALLED_AFTER: '2',
    },
  });
}, 180_000);

afterAll(async () => {
  if (coordinator) expect(await coordinator.stop()).toBe(0);
  await bank?.close();
});

it('reads none of 200,000 finished transactions while it carries messages, check-backs, retries, sagas and TCC', async () => {
  const c = coordinator!;
  const expected = new Map<string, string>();
  const newGid = (kind: string, status: string) => {
    const gid = `flat-${kind}-${randomUUID()}`;
    expected.set(gid, status);
    return gid;
  };
  for (let i = 0; i < 20; i++) {
    const msg = new Msg(c.dtm, newGid('msg', 'succeed')).add(`${bank.url}/TransIn`, { amount: 1 });
    // Half prepared first (the two-phase path), half submitted at once.
    if (i % 2 === 0) await msg.prepare(`${bank.url}/QueryPrepared`);
    await msg.submit();
  }
  // Prepared and never submitted: the scheduler checks back (no local transaction committed: it fails).
  await new Msg(c.dtm, newGid('checked', 'failed')).add(`${bank.url}/TransIn`, { amount: 1 }).prepare(`${bank.url}/QueryPrepared`);
  // A branch call that fails once: the scheduler retries it.
  bank.failNext('/TransOut', 1, 'error');
  const retried = newGid('retried', 'succeed');
  await new Msg(c.dtm, retried).add(`${bank.url}/TransOut`, { amount: 1 }).submit();
  // Before the sagas call TransOut too.
  await waitForStatus(c.dtm, retried, 'succeed');
  expect(bank.received(retried, '/TransOut')).toBe(2);
  for (let i = 0; i < 5; i++) {
    await new Saga(c.dtm, newGid('saga', 'succeed'))
      .add(`${bank.url}/TransOut`, `${bank.url}/TransOutCompensate`, { amount: 1 })
      .add(`${bank.url}/TransIn`, `${bank.url}/TransInCompensate`, { amount: 1 })
      .submit();
  }
  for (let i = 0; i < 3; i++) {
    await tcc(
      c.dtm,
      newGid('tcc', 'succeed'),
      async (t) => {
        for (const side of ['TransOut', 'TransIn']) {
          const url = `${bank.url}/${side}`;
          await t.callBranch({ amount: 1 }, `${url}Try`, `${url}Confirm`, `${url}Cancel`);
        }
      },
      { timeoutToFail: 60 },
    );
  }
  // GET /query, until each ends as it should.
  for (const [gid, status] of expected) await waitForStatus(c.dtm, gid, status);
  // Retention passes ran too: they deleted the expired rows, and only those.
  await expect.poll(() => retentionDeleted(c), { timeout: 20_000 }).toBe(expired);
  // Its connections closed, the coordinator's backends have published their counters.
  expect(await c.stop()).toBe(0);
  coordinator = undefined;
  const counted = await reads();
  for (const table of tables) {
    const { seqRows, indexRows, seqScans } = counted.get(table)!;
    // A scan of the finished rows reads at least 200,000 (the branches: 400,000 and more); the live work a few hundred.
    expect(seqRows, `${table}: rows read by ${seqScans} sequential scans`).toBeLessThan(finished / 20);
    expect(indexRows, `${table}: rows fetched through indexes`).toBeLessThan(finished / 20);
  }
}, 120_000);
