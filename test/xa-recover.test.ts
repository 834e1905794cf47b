/**
 * xaRecover: what a crash leaves prepared in a service's database (a local XA transaction holding
 * its locks) is resolved by asking the coordinator, in Postgres and in MariaDB. The crashed states
 * are made with the SDK's own driver (the PREPARE that xaLocal does), a real coordinator decides.
 */
import { randomUUID } from 'node:crypto';
import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CoordinatorClient, xaPhase2, xaRecover, type XaRecovery } from '../sdk/index.js';
import { xaDriver } from '../sdk/xa-drivers.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshMysqlDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator, post, waitForStatus } from './helpers/poll.js';
import { startXaBank, type BankDb, type XaBank } from './helpers/xa-bank.js';

let coordinator: TestCoordinator;
const sorted = (r: XaRecovery) => ({ committed: r.committed.sort(), rolledBack: r.rolledBack.sort(), waiting: r.waiting.sort() });
let client: CoordinatorClient;

beforeAll(async () => {
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
  client = new CoordinatorClient(coordinator.dtm);
}, 120_000);
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
});

describe.each<[BankDb]>([['postgres'], ['mysql']])('xaRecover in %s', (kind) => {
  /** This run's gids (MySQL's XA RECOVER lists the whole shared server's xids). */
  const run = `xr-${randomUUID().slice(0, 8)}-`;
  const cases = ['waiting', 'submitted', 'unknown', 'failed', 'registered'] as const;
  const gid = Object.fromEntries(cases.map((c) => [c, `${run}${c}`])) as Record<(typeof cases)[number], string>;
  let bank: XaBank;

  beforeAll(async () => {
    const url = kind === 'postgres' ? await freshDatabase() : await freshMysqlDatabase();
    bank = await startXaBank(kind, url, Object.fromEntries(cases.map((c) => [c, 0])));
  });
  afterAll(async () => {
    await bank?.rollbackPrepared(run);
    await bank?.close();
  });

  /** What a crashed xaLocal leaves: the account's +10 prepared as xid gid-01, holding the row. */
  const crashAfterPrepare = async (c: (typeof cases)[number]) => {
    await xaDriver(bank.db).prepare(`${gid[c]}-01`, async (tx) => {
      const sql = `update accounts set balance = balance + 10 where id = '${c}'`;
      await (tx as { query(text: string): Promise<unknown> }).query(sql);
    });
  };
  const register = (c: (typeof cases)[number], url: string) =>
    post(`${coordinator.dtm}/registerBranch`, { gid: gid[c], trans_type: 'xa', branch_id: '01', url });

  it('commits what the coordinator committed, rolls back what failed or it never knew, and waits for the rest', async () => {
    for (const c of ['waiting', 'submitted', 'failed', 'registered'] as const) {
      await client.transCall('prepare', { gid: gid[c], trans_type: 'xa', timeout_to_fail: 60 });
    }
    for (const c of cases) await crashAfterPrepare(c);
    // Registered, and the transaction submitted, but phase two cannot get through (no such route).
    expect((await register('submitted', `${bank.url}/Gone`)).status).toBe(200);
    await client.transCall('submit', { gid: gid.submitted, trans_type: 'xa' });
    expect((await register('registered', `${bank.url}/Trans`)).status).toBe(200);
    await client.transCall('abort', { gid: gid.failed, trans_type: 'xa' });
    await waitForStatus(coordinator.dtm, gid.failed, 'failed');

    const filter = (xid: string) => xid.startsWith(run);
    const first = await xaRecover(bank.db, { coordinator: client, filter });
    expect(sorted(first)).toEqual({
      committed: [`${gid.submitted}-01`],
      rolledBack: [`${gid.failed}-01`, `${gid.unknown}-01`],
      waiting: [`${gid.registered}-01`, `${gid.waiting}-01`],
    });
    expect(await bank.balance('submitted')).toBe(10);
    for (const c of ['unknown', 'failed'] as const) expect(await bank.balance(c)).toBe(0);
    expect((await bank.preparedXids(run)).sort()).toEqual([`${gid.registered}-01`, `${gid.waiting}-01`]);

    // The clients give up: the registered branch is rolled back by the coordinator, the unregistered one by recovery.
    await client.transCall('abort', { gid: gid.registered, trans_type: 'xa' });
    await client.transCall('abort', { gid: gid.waiting, trans_type: 'xa' });
    await waitForStatus(coordinator.dtm, gid.registered, 'failed');
    const second = await xaRecover(bank.db, { coordinator: client, filter });
    expect(second).toEqual({ committed: [], rolledBack: [`${gid.waiting}-01`], waiting: [] });
    expect(await bank.preparedXids(run)).toEqual([]);
    for (const c of ['waiting', 'registered'] as const) expect(await bank.balance(c)).toBe(0);
  });
});

describe('xaPhase2 in MariaDB', () => {
  const run = `xp-${randomUUID().slice(0, 8)}-`;
  let bank: XaBank;
  beforeAll(async () => {
    bank = await startXaBank('mysql', await freshMysqlDatabase(), { carol: 0 });
  });
  afterAll(async () => {
    await bank?.rollbackPrepared(run);
    await bank?.close();
  });

  it('does not take "unknown xid" for done while the session that prepared it still lives', async () => {
    const gid = `${run}g`;
    const query = { gid, trans_type: 'xa', branch_id: '01', op: 'commit' };
    const session = await (bank.db as mysql.Pool).getConnection();
    try {
      await session.query(`xa start '${gid}-01'`);
      await session.query("update accounts set balance = balance + 10 where id = 'carol'");
      await session.query(`xa end '${gid}-01'`);
      await session.query(`xa prepare '${gid}-01'`);
      // MariaDB answers XAER_NOTA to another session's XA COMMIT here: a retry, not a success.
      await expect(xaPhase2(query, bank.db)).rejects.toThrow(/has not closed yet/);
      expect(await bank.preparedXids(gid)).toEqual([`${gid}-01`]);
    } finally {
      session.destroy();
    }
    await vi.waitFor(() => xaPhase2(query, bank.db), { timeout: 10_000, interval: 50 });
    expect(await bank.preparedXids(gid)).toEqual([]);
    expect(await bank.balance('carol')).toBe(10);
  });
});
