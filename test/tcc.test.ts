/**
 * TCC through the SDK's tcc(): a real coordinator, the bank service's Try/Confirm/Cancel endpoints
 * with the SDK's barrier, real Postgres. Submit confirms every branch, a failed Try cancels every
 * branch (a branch whose Try did nothing gets a null compensation), a Confirm is retried until it
 * succeeds, and a TCC whose client went silent is cancelled after timeout_to_fail. Nested TCC: a Try
 * that continues the transaction with Tcc.fromQuery (branch 0201 inside 02).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchFailure, CoordinatorClient, tcc, type Tcc } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { startCoordinator, type RunningCoordinator, type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

let coordinator: TestCoordinator;
let bank: BankService;

beforeAll(async () => {
  const [store, bankDb] = await Promise.all([freshDatabase(), freshDatabase()]);
  coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
  bank = await startBankService(bankDb);
}, 120_000);
afterAll(async () => {
  await bank?.close();
  expect(await coordinator?.stop()).toBe(0);
});

const newGid = () => `tcc-${randomUUID()}`;
/** Long enough that the transaction is never cancelled for time while a test drives it. */
const options = { timeoutToFail: 60 };
const transfer = async (t: Tcc) => {
  for (const side of ['TransOut', 'TransIn']) {
    const url = `${bank.url}/${side}`;
    await t.callBranch({ amount: 30 }, `${url}Try`, `${url}Confirm`, `${url}Cancel`);
  }
};

describe('TCC', () => {
  it('confirms every branch after every Try succeeded', async () => {
    const gid = newGid();
    await tcc(coordinator.dtm, gid, transfer, { ...options, waitResult: true });
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('succeed');
    expect(await bank.effectKinds(gid)).toEqual(['in-confirm', 'in-try', 'out-confirm', 'out-try']);
    const branches = (await query(coordinator.dtm, gid)).branches.map((b) => `${b.branch_id} ${b.op} ${b.status}`);
    expect(branches).toEqual(['01 cancel prepared', '01 confirm succeed', '02 cancel prepared', '02 confirm succeed']);
  });

  it('cancels every branch when a Try fails, the failed one without effect', async () => {
    const gid = newGid();
    bank.failNext('/TransInTry', 1, 'failure');
    await expect(tcc(coordinator.dtm, gid, transfer, options)).rejects.toBeInstanceOf(BranchFailure);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await query(coordinator.dtm, gid)).transaction?.rollback_reason).toContain('TransInTry');
    // TransIn's Cancel arrived for a Try that did nothing: the barrier made it a no-op.
    expect(bank.received(gid, '/TransInCancel')).toBe(1);
    expect(await bank.effectKinds(gid)).toEqual(['out-cancel', 'out-try']);
  });

  it('retries a Confirm that errors until it succeeds, with one effect', async () => {
    const gid = newGid();
    bank.failNext('/TransOutConfirm', 2, 'error');
    await tcc(coordinator.dtm, gid, transfer, options);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(bank.received(gid, '/TransOutConfirm')).toBe(3);
    expect(await bank.effectKinds(gid)).toEqual(['in-confirm', 'in-try', 'out-confirm', 'out-try']);
  });

  it('retries a Confirm and a Cancel that answer ONGOING until they succeed', async () => {
    const gid = newGid();
    bank.failNext('/TransInConfirm', 2, 'ongoing');
    await tcc(coordinator.dtm, gid, transfer, options);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(bank.received(gid, '/TransInConfirm')).toBe(3);
    expect(await bank.effectKinds(gid)).toEqual(['in-confirm', 'in-try', 'out-confirm', 'out-try']);

    const cancelled = newGid();
    bank.failNext('/TransInTry', 1, 'failure');
    bank.failNext('/TransOutCancel', 2, 'ongoing');
    await expect(tcc(coordinator.dtm, cancelled, transfer, options)).rejects.toBeInstanceOf(BranchFailure);
    await waitForStatus(coordinator.dtm, cancelled, 'failed');
    expect(bank.received(cancelled, '/TransOutCancel')).toBe(3);
    expect(await bank.effectKinds(cancelled)).toEqual(['out-cancel', 'out-try']);
  });

  it('cancels every branch when a Try answers ONGOING (a Try is not waited for)', async () => {
    const gid = newGid();
    bank.failNext('/TransInTry', 1, 'ongoing');
    await expect(tcc(coordinator.dtm, gid, transfer, options)).rejects.toThrow();
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await bank.effectKinds(gid)).toEqual(['out-cancel', 'out-try']);
  });

  it('cancels a prepared TCC whose client went silent, after timeout_to_fail', async () => {
    const gid = newGid();
    const client = new CoordinatorClient(coordinator.dtm);
    await client.transCall('prepare', { gid, trans_type: 'tcc', timeout_to_fail: 1 });
    await post(`${coordinator.dtm}/registerBranch`, {
      gid,
      trans_type: 'tcc',
      branch_id: '01',
      data: '{"amount":30}',
      confirm: `${bank.url}/TransOutConfirm`,
      cancel: `${bank.url}/TransOutCancel`,
    });
    // The client crashes here: no Try, no submit.
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await query(coordinator.dtm, gid)).transaction?.rollback_reason).toBe('Timeout after 1 seconds');
    expect(bank.received(gid, '/TransOutCancel')).toBe(1);
    // A Try arriving after its Cancel (a hanging request) is absorbed by the barrier.
    const late = await fetch(`${bank.url}/TransOutTry?gid=${gid}&trans_type=tcc&branch_id=01&op=try`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"amount":30}',
    });
    expect(late.status).toBe(200);
    expect(await bank.effectKinds(gid)).toEqual([]);
  });

  it('refuses a branch once the transaction is submitted, and bad registrations with the field named', async () => {
    const gid = newGid();
    await tcc(coordinator.dtm, gid, transfer, options);
    const late = {
      gid,
      trans_type: 'tcc',
      branch_id: '03',
      data: '',
      confirm: `${bank.url}/TransInConfirm`,
      cancel: `${bank.url}/TransInCancel`,
    };
    const refused = await post(`${coordinator.dtm}/registerBranch`, late);
    expect(refused.status).toBe(409);
    expect(refused.body.dtm_result).toBe('FAILURE');
    const missing = await post(`${coordinator.dtm}/registerBranch`, { gid, trans_type: 'tcc', branch_id: '04', confirm: 'http://x/c' });
    expect(missing.status).toBe(400);
    expect(missing.body.field).toBe('cancel');
    const unknown = await post(`${coordinator.dtm}/registerBranch`, { ...late, gid: newGid() });
    expect(unknown.status).toBe(404);
    expect((await query(coordinator.dtm, gid)).branches).toHaveLength(4);
  });

  it('takes a branch with an empty Confirm and Cancel (nothing to call, as DTM) and succeeds or fails with it', async () => {
    // dtm-examples' grpc_tcc_customHeaders and http_tcc_customHeaders register Try-only branches so.
    const client = new CoordinatorClient(coordinator.dtm);
    for (const end of ['submit', 'abort'] as const) {
      const gid = newGid();
      await client.transCall('prepare', { gid, trans_type: 'tcc', timeout_to_fail: 60 });
      const reg = { gid, trans_type: 'tcc', branch_id: '01', data: '{"amount":30}', confirm: '', cancel: '' };
      expect((await post(`${coordinator.dtm}/registerBranch`, reg)).status).toBe(200);
      await client.transCall(end, { gid, trans_type: 'tcc' });
      await waitForStatus(coordinator.dtm, gid, end === 'submit' ? 'succeed' : 'failed');
      const branches = (await query(coordinator.dtm, gid)).branches.map((b) => `${b.op} ${b.status}`);
      expect(branches).toEqual(end === 'submit' ? ['cancel prepared', 'confirm succeed'] : ['cancel succeed', 'confirm prepared']);
    }
  });

  it('takes a prepare, a registration and an abort sent twice as one', async () => {
    const gid = newGid();
    const client = new CoordinatorClient(coordinator.dtm);
    const prepare = { gid, trans_type: 'tcc' as const, timeout_to_fail: 60 };
    await client.transCall('prepare', prepare);
    await client.transCall('prepare', prepare);
    const reg = {
      gid,
      trans_type: 'tcc',
      branch_id: '01',
      data: '{"amount":30}',
      confirm: `${bank.url}/TransOutConfirm`,
      cancel: `${bank.url}/TransOutCancel`,
    };
    expect((await post(`${coordinator.dtm}/registerBranch`, reg)).status).toBe(200);
    expect((await post(`${coordinator.dtm}/registerBranch`, reg)).status).toBe(200);
    expect((await post(`${coordinator.dtm}/registerBranch`, { ...reg, confirm: `${bank.url}/TransInConfirm` })).status).toBe(409);
    await client.transCall('abort', { gid, trans_type: 'tcc', rollback_reason: 'changed my mind' });
    await client.transCall('abort', { gid, trans_type: 'tcc' });
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await query(coordinator.dtm, gid)).transaction?.rollback_reason).toBe('changed my mind');
    expect(bank.received(gid, '/TransOutCancel')).toBe(1);
  });

  it('confirms every branch once after the coordinator is SIGKILLed between the two phases', async () => {
    const gid = newGid();
    const store = await freshDatabase();
    // A short request timeout makes a short lease (5 s), so the second node takes over sooner.
    const env = { ...fastCoordinator, CONCORD_REQUEST_TIMEOUT: '2' };
    const first = await startCoordinator({ store, env });
    let second: RunningCoordinator | undefined;
    bank.setLatency(300);
    try {
      await tcc(first.dtm, gid, transfer, options);
      // The first Confirm is on its way (TransIn: the branch registered last goes first): kill the node.
      await expect.poll(() => bank.received(gid, '/TransInConfirm'), { timeout: 10_000, interval: 10 }).toBeGreaterThan(0);
      expect(await first.stop('SIGKILL')).toBeNull();
      second = await startCoordinator({ store, env });
      await waitForStatus(second.dtm, gid, 'succeed', 30_000);
      expect(await bank.effectKinds(gid)).toEqual(['in-confirm', 'in-try', 'out-confirm', 'out-try']);
    } finally {
      bank.setLatency(0);
      await first.stop('SIGKILL');
      await second?.stop();
    }
  });
});

describe('nested TCC', () => {
  /** TransOut (01), then the bank's nesting Try (02), which calls TransIn as 0201. */
  const nested = async (t: Tcc) => {
    await t.callBranch({ amount: 30 }, `${bank.url}/TransOutTry`, `${bank.url}/TransOutConfirm`, `${bank.url}/TransOutCancel`);
    await t.callBranch(
      { amount: 30 },
      `${bank.url}/TransInNestedTry`,
      `${bank.url}/TransInNestedConfirm`,
      `${bank.url}/TransInNestedCancel`,
    );
  };
  const branchStates = async (gid: string) =>
    (await query(coordinator.dtm, gid)).branches.map((b) => `${b.branch_id} ${b.op} ${b.status}`).sort();

  it('confirms every branch, the nested one included, on submit', async () => {
    const gid = newGid();
    await tcc(coordinator.dtm, gid, nested, { ...options, waitResult: true });
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('succeed');
    expect(await bank.effectKinds(gid)).toEqual(['in-confirm', 'in-try', 'nested-confirm', 'out-confirm', 'out-try']);
    expect(await branchStates(gid)).toEqual([
      '01 cancel prepared',
      '01 confirm succeed',
      '02 cancel prepared',
      '02 confirm succeed',
      '0201 cancel prepared',
      '0201 confirm succeed',
    ]);
  });

  it('cancels every branch when the nested Try fails', async () => {
    const gid = newGid();
    bank.failNext('/TransInTry', 1, 'failure');
    await expect(tcc(coordinator.dtm, gid, nested, options)).rejects.toBeInstanceOf(BranchFailure);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    for (const path of ['/TransOutCancel', '/TransInNestedCancel', '/TransInCancel']) expect(bank.received(gid, path)).toBe(1);
    // Only TransOut's Try did something; the other Cancels were null compensations.
    expect(await bank.effectKinds(gid)).toEqual(['out-cancel', 'out-try']);
    expect(await branchStates(gid)).toEqual([
      '01 cancel succeed',
      '01 confirm prepared',
      '02 cancel succeed',
      '02 confirm prepared',
      '0201 cancel succeed',
      '0201 confirm prepared',
    ]);
  });

  it('answers a nesting Try called without the coordinator in its query with 400 naming dtm', async () => {
    const res = await fetch(`${bank.url}/TransInNestedTry?gid=${newGid()}&trans_type=tcc&branch_id=01&op=try`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"amount":30}',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toContain('dtm');
  });
});
