/**
 * XA through the SDK: xa() on the client side, xaLocal in two banks, one on Postgres and one on
 * MariaDB, a real coordinator. A transfer commits both local transactions; a failed branch rolls
 * both back and leaves nothing prepared; a client that vanishes gets its branches rolled back
 * after timeout_to_fail; a coordinator SIGKILLed between the phases is finished by another one.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchFailure, CoordinatorClient, xa, Xa } from '../sdk/index.js';
import { startCoordinator, type RunningCoordinator, type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshMysqlDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';
import { startXaBank, type XaBank } from './helpers/xa-bank.js';

let coordinator: TestCoordinator;
let pgBank: XaBank;
let myBank: XaBank;

beforeAll(async () => {
  const [store, pgDb, myDb] = await Promise.all([freshDatabase(), freshDatabase(), freshMysqlDatabase()]);
  coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
  [pgBank, myBank] = await Promise.all([startXaBank('postgres', pgDb, { alice: 1_000 }), startXaBank('mysql', myDb, { bob: 1_000 })]);
}, 120_000);
afterAll(async () => {
  // Whatever a failed test left prepared would hold its locks on the shared servers.
  await pgBank?.rollbackPrepared(run);
  await myBank?.rollbackPrepared(run);
  await pgBank?.close();
  await myBank?.close();
  expect(await coordinator?.stop()).toBe(0);
});

/** This file's gids: MySQL xids (gid-branch_id) must fit 64 bytes. */
const run = `xa-${randomUUID().slice(0, 8)}-`;
const newGid = () => `${run}${randomUUID()}`;
/** Long enough that the transaction is never rolled back for time while a test drives it. */
const options = { timeoutToFail: 60 };
const transfer = (amount: number) => async (x: Xa) => {
  await x.callBranch({ account: 'alice', amount: -amount }, `${pgBank.url}/Trans`);
  await x.callBranch({ account: 'bob', amount }, `${myBank.url}/Trans`);
};
const balances = async () => [await pgBank.balance('alice'), await myBank.balance('bob')];
const prepared = async (gid: string) => [...(await pgBank.preparedXids(`${gid}-`)), ...(await myBank.preparedXids(`${gid}-`))];

describe('XA', () => {
  it('commits both local transactions of a transfer, one in Postgres and one in MariaDB', async () => {
    const gid = newGid();
    const before = await balances();
    await xa(coordinator.dtm, gid, transfer(30), { ...options, waitResult: true });
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('succeed');
    expect(await balances()).toEqual([before[0]! - 30, before[1]! + 30]);
    expect(await prepared(gid)).toEqual([]);
    const branches = (await query(coordinator.dtm, gid)).branches.map((b) => `${b.branch_id} ${b.op} ${b.status}`);
    expect(branches).toEqual(['01 rollback prepared', '01 commit succeed', '02 rollback prepared', '02 commit succeed']);
  });

  it('rolls back both branches when the second one fails, leaving no prepared transaction', async () => {
    const gid = newGid();
    const before = await balances();
    // Bob's bank refuses: Alice's withdrawal was prepared and registered, and is rolled back.
    await expect(
      xa(
        coordinator.dtm,
        gid,
        async (x) => {
          await x.callBranch({ account: 'alice', amount: -30 }, `${pgBank.url}/Trans`);
          await x.callBranch({ account: 'bob', amount: -1_000_000 }, `${myBank.url}/Trans`);
        },
        options,
      ),
    ).rejects.toBeInstanceOf(BranchFailure);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await query(coordinator.dtm, gid)).transaction?.rollback_reason).toContain('cannot take');
    expect(pgBank.received(gid, 'rollback')).toBe(1);
    expect(myBank.received(gid, 'rollback')).toBe(0); // never registered: its local transaction rolled back at once
    expect(await balances()).toEqual(before);
    expect(await prepared(gid)).toEqual([]);
  });

  it('retries a commit that errors until it succeeds', async () => {
    const gid = newGid();
    const before = await balances();
    myBank.failNext(2, 'error', 'commit');
    await xa(coordinator.dtm, gid, transfer(30), options);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(myBank.received(gid, 'commit')).toBe(3);
    expect(await balances()).toEqual([before[0]! - 30, before[1]! + 30]);
    expect(await prepared(gid)).toEqual([]);
  });

  it('retries a commit that answers ONGOING until it succeeds', async () => {
    const gid = newGid();
    const before = await balances();
    pgBank.failNext(2, 'ongoing', 'commit');
    await xa(coordinator.dtm, gid, transfer(30), options);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(pgBank.answered(gid, 'commit')).toEqual([425, 425, 200]);
    expect(await balances()).toEqual([before[0]! - 30, before[1]! + 30]);
    expect(await prepared(gid)).toEqual([]);
  });

  it('rolls the transfer back when a branch answers ONGOING to its action', async () => {
    const gid = newGid();
    const before = await balances();
    myBank.failNext(1, 'ongoing');
    await expect(xa(coordinator.dtm, gid, transfer(30), options)).rejects.toThrow();
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(pgBank.received(gid, 'rollback')).toBe(1);
    expect(await balances()).toEqual(before);
    expect(await prepared(gid)).toEqual([]);
  });

  it('rolls back when the first branch fails before any local work', async () => {
    const gid = newGid();
    const before = await balances();
    pgBank.failNext(1, 'error');
    await expect(xa(coordinator.dtm, gid, transfer(30), options)).rejects.toThrow(/planned error/);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(myBank.received(gid, 'action')).toBe(0);
    expect(await balances()).toEqual(before);
    expect(await prepared(gid)).toEqual([]);
  });

  it('rolls back the prepared branches of a client that vanished, after timeout_to_fail', async () => {
    const gid = newGid();
    const before = await balances();
    const client = new CoordinatorClient(coordinator.dtm);
    const x = new Xa(client, gid, { timeoutToFail: 1 });
    await client.transCall('prepare', x.request());
    await transfer(30)(x);
    // The client crashes here: both branches prepared, holding their rows, and no submit.
    expect((await prepared(gid)).sort()).toEqual([`${gid}-01`, `${gid}-02`]);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await query(coordinator.dtm, gid)).transaction?.rollback_reason).toBe('Timeout after 1 seconds');
    expect(await prepared(gid)).toEqual([]);
    expect(await balances()).toEqual(before);
  });

  it('rolls back at once a branch whose registration the coordinator refuses (its transaction ended)', async () => {
    const gid = newGid();
    const before = await balances();
    const client = new CoordinatorClient(coordinator.dtm);
    await client.transCall('prepare', { gid, trans_type: 'xa', timeout_to_fail: 60 });
    await client.transCall('abort', { gid, trans_type: 'xa' });
    // A late action (its client gave up and aborted): prepared, then refused by the coordinator.
    const url = `${pgBank.url}/Trans?gid=${gid}&trans_type=xa&branch_id=01&op=action&dtm=${encodeURIComponent(coordinator.dtm)}`;
    const late = await post(`${url}&phase2_url=${encodeURIComponent(`${pgBank.url}/Trans`)}`, { account: 'alice', amount: -30 });
    expect(late.status).toBe(409);
    expect(String(late.body.message)).toContain('registerBranch refused');
    expect(await prepared(gid)).toEqual([]);
    expect(await balances()).toEqual(before);
  });

  it('leaves nothing prepared when an action outlives its client, which aborted on the timeout', async () => {
    const gid = newGid();
    const before = await balances();
    myBank.setLatency('action', 1_000);
    try {
      // The client stops waiting for Bob's bank after 300 ms and aborts; the action goes on.
      await expect(xa(coordinator.dtm, gid, transfer(30), { ...options, timeoutMs: 300 })).rejects.toThrow();
      await waitForStatus(coordinator.dtm, gid, 'failed');
      // The late action prepares, is refused by the coordinator, rolls itself back and answers 409.
      await expect.poll(() => myBank.answered(gid, 'action'), { timeout: 10_000 }).toEqual([409]);
      expect(await prepared(gid)).toEqual([]);
      expect(await balances()).toEqual(before);
    } finally {
      myBank.setLatency('action', 0);
    }
  });

  it('refuses bad XA registrations with the field named, and a branch once the transaction ended', async () => {
    const gid = newGid();
    await xa(coordinator.dtm, gid, transfer(1), options);
    const reg = { gid, trans_type: 'xa', branch_id: '03', url: `${pgBank.url}/Trans` };
    const late = await post(`${coordinator.dtm}/registerBranch`, reg);
    expect(late.status).toBe(409);
    expect(late.body.dtm_result).toBe('FAILURE');
    const missing = await post(`${coordinator.dtm}/registerBranch`, { gid, trans_type: 'xa', branch_id: '04' });
    expect(missing).toMatchObject({ status: 400, body: { field: 'url' } });
    const notHttp = await post(`${coordinator.dtm}/registerBranch`, { ...reg, url: 'ftp://x/y' });
    expect(notHttp).toMatchObject({ status: 400, body: { field: 'url' } });
    const wrongType = await post(`${coordinator.dtm}/registerBranch`, { ...reg, trans_type: 'saga' });
    expect(wrongType).toMatchObject({ status: 400, body: { field: 'trans_type' } });
    const tccGid = newGid();
    await new CoordinatorClient(coordinator.dtm).transCall('prepare', { gid: tccGid, trans_type: 'tcc', timeout_to_fail: 60 });
    const mixed = await post(`${coordinator.dtm}/registerBranch`, { ...reg, gid: tccGid });
    expect(mixed).toMatchObject({ status: 409, body: { code: 'GID_CONFLICT', field: 'trans_type' } });
    expect((await query(coordinator.dtm, gid)).branches).toHaveLength(4);
  });

  it('commits every branch once after the coordinator is SIGKILLed between the two phases', async () => {
    const gid = newGid();
    const store = await freshDatabase();
    // A short request timeout makes a short lease (5 s), so the second node takes over sooner.
    const env = { ...fastCoordinator, CONCORD_REQUEST_TIMEOUT: '2' };
    const first = await startCoordinator({ store, env });
    let second: RunningCoordinator | undefined;
    const before = await balances();
    pgBank.setLatency('phase2', 300);
    try {
      await xa(first.dtm, gid, transfer(30), options);
      // The first commit is on its way (XA commits in registration order): kill the node.
      await expect.poll(() => pgBank.received(gid, 'commit'), { timeout: 10_000, interval: 10 }).toBeGreaterThan(0);
      expect(await first.stop('SIGKILL')).toBeNull();
      second = await startCoordinator({ store, env });
      await waitForStatus(second.dtm, gid, 'succeed', 30_000);
      expect(await balances()).toEqual([before[0]! - 30, before[1]! + 30]);
      expect(await prepared(gid)).toEqual([]);
    } finally {
      pgBank.setLatency('phase2', 0);
      await first.stop('SIGKILL');
      await second?.stop();
    }
  });
});
