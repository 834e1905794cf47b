/**
 * DTM's own clients, unchanged, drive Concord's TCC: the Go client's TccGlobalTransaction2
 * (github.com/dtm-labs/client v1.17.3) and Python dtmcli's tcc_global_transaction (1.7.7.0),
 * through the drivers in test/compat, against the bank service's Try/Confirm/Cancel endpoints with
 * the SDK's barrier. Nested TCC with the Go client: its TccFromQuery inside a Try it serves itself,
 * and the TypeScript SDK's Tcc.fromQuery inside the bank's Try called by the Go client.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGoClient, pythonWithDtmcli, PYTHON_CLIENT_SCRIPT, runClient } from './compat/setup.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';

const clients = [
  { name: 'Go', prepare: async () => [await buildGoClient()] },
  { name: 'Python', prepare: async () => [await pythonWithDtmcli(), PYTHON_CLIENT_SCRIPT] },
];

describe.each(clients.map((c) => [c.name, c] as const))('DTM %s client, TCC', (_name, client) => {
  let bin: string[];
  let coordinator: TestCoordinator;
  let bank: BankService;

  beforeAll(async () => {
    const [command, store, bankDb] = await Promise.all([client.prepare(), freshDatabase(), freshDatabase()]);
    bin = command;
    coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
    bank = await startBankService(bankDb);
  }, 300_000); // a cold Go build takes 1-2 min
  afterAll(async () => {
    await bank?.close();
    expect(await coordinator?.stop()).toBe(0);
  });

  const run = (gid: string) =>
    runClient(bin, ['-dtm', coordinator.dtm, '-busi', bank.url, '-mode', 'tcc', '-gid', gid, '-timeout-to-fail', '60']);

  it('tries both branches, submits, and the coordinator confirms both', async () => {
    const gid = `compat-tcc-${randomUUID()}`;
    const r = await run(gid);
    expect(r.ok, r.stderr + r.error).toBe(true);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await bank.effectKinds(gid)).toEqual(['in-confirm', 'in-try', 'out-confirm', 'out-try']);
  });

  it('aborts when a Try fails, and the coordinator cancels both branches', async () => {
    const gid = `compat-tcc-${randomUUID()}`;
    bank.failNext('/TransInTry', 1, 'failure');
    const r = await run(gid);
    expect(r.ok).toBe(false);
    expect(r.code).toBe(1);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(bank.received(gid, '/TransInCancel')).toBe(1);
    expect(await bank.effectKinds(gid)).toEqual(['out-cancel', 'out-try']);
    expect((await query(coordinator.dtm, gid)).branches.filter((b) => b.op === 'cancel').every((b) => b.status === 'succeed')).toBe(true);
  });
});

describe('DTM Go client, nested TCC', () => {
  let bin: string[];
  let coordinator: TestCoordinator;
  let bank: BankService;

  beforeAll(async () => {
    const [command, store, bankDb] = await Promise.all([buildGoClient(), freshDatabase(), freshDatabase()]);
    bin = [command];
    coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
    bank = await startBankService(bankDb);
  }, 300_000);
  afterAll(async () => {
    await bank?.close();
    expect(await coordinator?.stop()).toBe(0);
  });

  const run = (mode: string, gid: string) =>
    runClient(bin, ['-dtm', coordinator.dtm, '-busi', bank.url, '-mode', mode, '-gid', gid, '-timeout-to-fail', '60']);
  const branchStates = async (gid: string) =>
    (await query(coordinator.dtm, gid)).branches.map((b) => `${b.branch_id} ${b.op} ${b.status}`).sort();

  // tcc-nested: the Go process serves the nesting Try (TccFromQuery); tcc-nested-busi: the bank does, with Tcc.fromQuery.
  describe.each(['tcc-nested', 'tcc-nested-busi'])('%s', (mode) => {
    it('confirms every branch, 0201 inside 02 included', async () => {
      const gid = `compat-${mode}-${randomUUID()}`;
      const r = await run(mode, gid);
      expect(r.ok, r.stderr + r.error).toBe(true);
      await waitForStatus(coordinator.dtm, gid, 'succeed');
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
      const gid = `compat-${mode}-${randomUUID()}`;
      bank.failNext('/TransInTry', 1, 'failure');
      const r = await run(mode, gid);
      expect(r.ok).toBe(false);
      await waitForStatus(coordinator.dtm, gid, 'failed');
      for (const path of ['/TransOutCancel', '/TransInNestedCancel', '/TransInCancel']) expect(bank.received(gid, path)).toBe(1);
      expect(await bank.effectKinds(gid)).toEqual(['out-cancel', 'out-try']);
      expect((await branchStates(gid)).filter((b) => b.includes('cancel'))).toEqual([
        '01 cancel succeed',
        '02 cancel succeed',
        '0201 cancel succeed',
      ]);
    });
  });
});
