/**
 * DTM's own Go workflow client (github.com/dtm-labs/client/workflow v1.17.3, unchanged) runs
 * workflows against Concord through the driver in test/compat/go: two recorded HTTP branches of
 * the bank service (TransOut, TransIn) with their rollbacks (TransOutCancel, TransInCancel).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildGoClient, runClient } from './compat/setup.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { freePort, startCoordinator, type RunningCoordinator, type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

describe('DTM Go workflow client', () => {
  let bin: string;
  let coordinator: TestCoordinator;
  let bank: BankService;
  const servers: ChildProcess[] = [];

  beforeAll(async () => {
    const [built, store, bankDb] = await Promise.all([buildGoClient(), freshDatabase(), freshDatabase()]);
    bin = built;
    coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
    bank = await startBankService(bankDb);
  }, 300_000); // a cold Go build takes 1-2 min
  afterEach(() => {
    for (const s of servers.splice(0)) s.kill('SIGKILL');
  });
  afterAll(async () => {
    await bank?.close();
    expect(await coordinator?.stop()).toBe(0);
  });

  // A resume interval long enough that the coordinator does not call the callback while the client still runs.
  const run = (gid: string, ...extra: string[]) =>
    runClient([bin], ['-dtm', coordinator.dtm, '-busi', bank.url, '-mode', 'workflow', '-gid', gid, '-retry-interval', '30', ...extra]);
  const progress = async (gid: string) => (await query(coordinator.dtm, gid)).branches.map((b) => `${b.branch_id} ${b.op} ${b.status}`);

  it('runs both branches, records them, and submits the workflow as succeeded', async () => {
    const gid = `compat-wf-${randomUUID()}`;
    const r = await run(gid);
    expect(r.ok, r.stderr + r.error).toBe(true);
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('succeed');
    expect(await progress(gid)).toEqual(['01 action succeed', '02 action succeed']);
    expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
  });

  it('runs again as a replay: finished workflows return at once, without calling a branch', async () => {
    const gid = `compat-wf-${randomUUID()}`;
    expect((await run(gid)).ok).toBe(true);
    const again = await run(gid);
    expect(again.ok, again.stderr).toBe(true);
    expect(bank.received(gid, '/TransOut')).toBe(1);
    expect(bank.received(gid, '/TransIn')).toBe(1);
  });

  it('rolls back when a branch fails: the registered compensations run, the last first, and the workflow fails', async () => {
    const gid = `compat-wf-${randomUUID()}`;
    const r = await run(gid, '-fail-local');
    expect(r.ok).toBe(false);
    expect(r.error).toContain('local branch refused');
    const { transaction } = await query(coordinator.dtm, gid);
    expect(transaction?.status).toBe('failed');
    expect(transaction?.rollback_reason).toContain('local branch refused');
    expect(await progress(gid)).toEqual([
      '01 action succeed',
      '02 action succeed',
      '03 action failed',
      '02 rollback succeed',
      '01 rollback succeed',
    ]);
    expect(await bank.effectKinds(gid)).toEqual(['in', 'in-cancel', 'out', 'out-cancel']);
  });

  it('does not compensate the branch that failed itself (DTM’s default), only those before it', async () => {
    const gid = `compat-wf-${randomUUID()}`;
    bank.failNext('/TransIn', 1, 'failure');
    const r = await run(gid);
    expect(r.ok).toBe(false);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await progress(gid)).toEqual(['01 action succeed', '02 action failed', '01 rollback succeed']);
    expect(bank.received(gid, '/TransInCancel')).toBe(0);
    expect(await bank.effectKinds(gid)).toEqual(['out', 'out-cancel']);
  });

  it('runs TCC branches inside a workflow: Try as the step, Confirm on commit (last first), Cancel on rollback', async () => {
    const ok = `compat-wf-${randomUUID()}`;
    const r = await run(ok, '-tcc');
    expect(r.ok, r.stderr + r.error).toBe(true);
    expect(await progress(ok)).toEqual(['01 action succeed', '02 action succeed', '02 commit succeed', '01 commit succeed']);
    expect(await bank.effectKinds(ok)).toEqual(['in-confirm', 'in-try', 'out-confirm', 'out-try']);

    const failed = `compat-wf-${randomUUID()}`;
    bank.failNext('/TransInTry', 1, 'failure');
    expect((await run(failed, '-tcc')).ok).toBe(false);
    expect((await query(coordinator.dtm, failed)).transaction?.status).toBe('failed');
    expect(await progress(failed)).toEqual(['01 action succeed', '02 action failed', '01 rollback succeed']);
    expect(await bank.effectKinds(failed)).toEqual(['out-cancel', 'out-try']);
  });

  it('resumes a workflow whose client was killed mid-way: the coordinator calls the callback, finished steps replay', async () => {
    const gid = `compat-wf-${randomUUID()}`;
    const port = await freePort();
    const callback = `http://127.0.0.1:${port}/workflow/resume`;
    const killed = await runClient(
      [bin],
      [
        '-dtm',
        coordinator.dtm,
        '-busi',
        bank.url,
        '-mode',
        'workflow',
        '-gid',
        gid,
        '-retry-interval',
        '1',
        '-callback',
        callback,
        '-crash-after',
        '1',
      ],
    );
    expect(killed.ok).toBe(false);
    expect(killed.code).toBeNull(); // SIGKILLed, no result line
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('prepared');
    expect(await progress(gid)).toEqual(['01 action succeed']);

    // The service comes back (a new process serving the callback); the coordinator keeps calling until it answers.
    const server = spawn(bin, ['-dtm', coordinator.dtm, '-busi', bank.url, '-mode', 'workflow-serve', '-listen', `127.0.0.1:${port}`], {
      stdio: 'ignore',
    });
    servers.push(server);
    await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
    expect(await progress(gid)).toEqual(['01 action succeed', '02 action succeed']);
    expect(bank.received(gid, '/TransOut')).toBe(1); // replayed from the record, not called again
    expect(bank.received(gid, '/TransIn')).toBe(1);
    expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
  });

  it.each(['ongoing', 'error'] as const)('stops at a step that answers %s, unrecorded; the resume finishes it', async (kind) => {
    const gid = `compat-wf-${randomUUID()}`;
    const port = await freePort();
    const callback = `http://127.0.0.1:${port}/workflow/resume`;
    servers.push(
      spawn(bin, ['-dtm', coordinator.dtm, '-busi', bank.url, '-mode', 'workflow-serve', '-listen', `127.0.0.1:${port}`], {
        stdio: 'ignore',
      }),
    );
    bank.failNext('/TransIn', 1, kind);
    const r = await run(gid, '-retry-interval', '1', '-callback', callback);
    expect(r.ok).toBe(false);
    expect(await progress(gid)).toEqual(['01 action succeed']);
    await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
    expect(await progress(gid)).toEqual(['01 action succeed', '02 action succeed']);
    expect(bank.received(gid, '/TransOut')).toBe(1);
    expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
  });

  it('finishes a workflow whose coordinator was SIGKILLed while a step ran: the client or the resume records the rest', async () => {
    const store = await freshDatabase();
    const first = await startCoordinator({ store, env: fastCoordinator });
    let second: RunningCoordinator | undefined;
    const gid = `compat-wf-${randomUUID()}`;
    const port = await freePort();
    const callback = `http://127.0.0.1:${port}/workflow/resume`;
    servers.push(
      spawn(bin, ['-dtm', first.dtm, '-busi', bank.url, '-mode', 'workflow-serve', '-listen', `127.0.0.1:${port}`], { stdio: 'ignore' }),
    );
    bank.setLatency(1_000);
    try {
      const client = runClient(
        [bin],
        ['-dtm', first.dtm, '-busi', bank.url, '-mode', 'workflow', '-gid', gid, '-retry-interval', '1', '-callback', callback],
      );
      // Step 2 is in flight at the bank: kill the coordinator, then bring it back on the same port and store.
      await expect.poll(() => bank.received(gid, '/TransIn'), { timeout: 20_000, interval: 10 }).toBeGreaterThan(0);
      expect(await first.stop('SIGKILL')).toBeNull();
      second = await startCoordinator({ store, env: fastCoordinator, port: first.port });
      await client; // either recorded step 2 and submitted, or found no coordinator and stopped: the resume finishes it
      bank.setLatency(0);
      await waitForStatus(second.dtm, gid, 'succeed', 30_000);
      expect(bank.received(gid, '/TransOut')).toBe(1);
      expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
    } finally {
      bank.setLatency(0);
      await first.stop('SIGKILL');
      await second?.stop();
    }
  });

  it('answers prepareWorkflow errors as a failed workflow DTM’s client can read, and stores nothing', async () => {
    const res = await post(`${coordinator.dtm}/prepareWorkflow`, { gid: 'wf-bad', trans_type: 'workflow', custom_data: '{}' });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'INVALID_REQUEST', field: 'custom_data', transaction: { gid: 'wf-bad', status: 'failed' } });
    expect((await query(coordinator.dtm, 'wf-bad')).transaction).toBeNull();
    const saga = await post(`${coordinator.dtm}/prepareWorkflow`, { gid: 'wf-saga', trans_type: 'saga' });
    expect(saga.status).toBe(400);
    expect(saga.body).toMatchObject({ field: 'trans_type', transaction: { status: 'failed' }, progresses: [] });
  });
});
