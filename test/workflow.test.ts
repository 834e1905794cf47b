/**
 * The SDK's workflows against a real coordinator and the bank service: steps recorded and replayed,
 * compensations in reverse, resume through the callback the coordinator calls, and a coordinator
 * SIGKILLed mid-workflow.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchFailure, expressWorkflow, fastifyWorkflow, Workflows, type Workflow } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { freePort, startCoordinator, type RunningCoordinator, type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

interface Input {
  amount: number;
}

describe('SDK workflows', () => {
  let coordinator: TestCoordinator;
  let bank: BankService;
  let service: FastifyInstance;
  let workflows: Workflows;
  let callback: string;
  /** Called between the two transfer steps; a test replaces it to stop or crash something there. */
  let between: (gid: string) => Promise<void> = async () => undefined;
  const local: string[] = [];

  const newGid = () => `wf-${randomUUID()}`;
  const progress = async (gid: string) => (await query(coordinator.dtm, gid)).branches.map((b) => `${b.branch_id} ${b.op} ${b.status}`);

  beforeAll(async () => {
    const [store, bankDb] = await Promise.all([freshDatabase(), freshDatabase()]);
    coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
    bank = await startBankService(bankDb);
    service = Fastify();
    const port = await freePort();
    // retryInterval 1: a workflow left prepared is resumed about a second later (the tests that need it poll for it).
    callback = `http://127.0.0.1:${port}/workflow/resume`;
    workflows = new Workflows({ coordinator: coordinator.dtm, callback, retryInterval: 1 });
    service.post('/workflow/resume', fastifyWorkflow(workflows));
    await service.listen({ port, host: '127.0.0.1' });

    workflows.register('transfer', async (wf: Workflow, input: Input) => {
      await wf.callBranch(input, `${bank.url}/TransOut`, `${bank.url}/TransOutCancel`);
      await between(wf.gid);
      await wf.callBranch(input, `${bank.url}/TransIn`, `${bank.url}/TransInCancel`);
      return { moved: input.amount };
    });
    workflows.register('local-steps', async (wf: Workflow, input: { failAt: number }) => {
      wf.onRollback(async () => void local.push(`${wf.gid} rollback hook`));
      for (let i = 1; i <= 3; i++) {
        await wf.step({
          action: async ({ branchId }) => {
            if (i === input.failAt) throw new BranchFailure(`step ${i} refused`);
            local.push(`${wf.gid} action ${branchId}`);
            return i;
          },
          compensate: async ({ branchId }) => void local.push(`${wf.gid} compensate ${branchId}`),
          commit: async ({ branchId }) => void local.push(`${wf.gid} commit ${branchId}`),
        });
      }
      wf.onCommit(async () => void local.push(`${wf.gid} commit hook`));
    });
    let stopOnce = true;
    workflows.register('no-input', async (wf: Workflow, input: undefined) => {
      await wf.step({ action: async () => 'first' });
      if (stopOnce) {
        stopOnce = false;
        throw new Error('stopped before the end');
      }
      return input === undefined ? 'no input' : 'unexpected input';
    });
    workflows.register('tcc-in-workflow', async (wf: Workflow, input: Input) => {
      await wf.tccBranch(input, `${bank.url}/TransOutTry`, `${bank.url}/TransOutConfirm`, `${bank.url}/TransOutCancel`);
      await wf.tccBranch(input, `${bank.url}/TransInTry`, `${bank.url}/TransInConfirm`, `${bank.url}/TransInCancel`);
    });
  });
  afterAll(async () => {
    await service?.close();
    await bank?.close();
    expect(await coordinator?.stop()).toBe(0);
  });

  it('runs the steps, records them, answers the result, and replays a finished workflow without calling anything', async () => {
    const gid = newGid();
    expect(await workflows.execute('transfer', gid, { amount: 30 })).toEqual({ moved: 30 });
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('succeed');
    expect(await progress(gid)).toEqual(['01 action succeed', '02 action succeed']);
    expect(await workflows.execute('transfer', gid, { amount: 30 })).toEqual({ moved: 30 });
    expect(bank.received(gid, '/TransOut')).toBe(1);
    expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
  });

  it('rolls back when a step fails: earlier compensations run, the failed step’s own does not, and execute throws', async () => {
    const gid = newGid();
    bank.failNext('/TransIn', 1, 'failure');
    await expect(workflows.execute('transfer', gid, { amount: 30 })).rejects.toThrow(/TransIn answered 409/);
    const { transaction } = await query(coordinator.dtm, gid);
    expect(transaction?.status).toBe('failed');
    expect(transaction?.rollback_reason).toContain('TransIn answered 409');
    expect(await progress(gid)).toEqual(['01 action succeed', '02 action failed', '01 rollback succeed']);
    expect(await bank.effectKinds(gid)).toEqual(['out', 'out-cancel']);
    // Run again: the failed workflow answers its failure, nothing is called.
    await expect(workflows.execute('transfer', gid, { amount: 30 })).rejects.toBeInstanceOf(BranchFailure);
    expect(bank.received(gid, '/TransOutCancel')).toBe(1);
  });

  it('runs compensations and the rollback hook last registered first; commits and the commit hook on success', async () => {
    const failed = newGid();
    await expect(workflows.execute('local-steps', failed, { failAt: 3 })).rejects.toThrow('step 3 refused');
    expect(local.filter((l) => l.startsWith(failed)).map((l) => l.slice(failed.length + 1))).toEqual([
      'action 02',
      'action 03',
      'compensate 03',
      'compensate 02',
      'rollback hook',
    ]);
    const ok = newGid();
    await workflows.execute('local-steps', ok, { failAt: 0 });
    expect(local.filter((l) => l.startsWith(ok)).map((l) => l.slice(ok.length + 1))).toEqual([
      'action 02',
      'action 03',
      'action 04',
      'commit hook',
      'commit 04',
      'commit 03',
      'commit 02',
    ]);
    expect(await progress(ok)).toContain('05 commit succeed');
  });

  it('refuses bad workflow requests with 4xx naming the field, and stores nothing for them', async () => {
    const gid = newGid();
    await workflows.execute('transfer', gid, { amount: 30 });
    const dtm = coordinator.dtm;
    const step = { gid, trans_type: 'workflow', branch_id: '03', op: 'action', status: 'succeed', data: '' };
    expect(await post(`${dtm}/registerBranch`, { ...step, status: 'maybe' })).toMatchObject({ status: 400, body: { field: 'status' } });
    expect(await post(`${dtm}/registerBranch`, { ...step, op: undefined })).toMatchObject({ status: 400, body: { field: 'op' } });
    expect(await post(`${dtm}/registerBranch`, step)).toMatchObject({ status: 409, body: { dtm_result: 'FAILURE' } }); // it ended
    expect(await post(`${dtm}/registerBranch`, { ...step, gid: newGid() })).toMatchObject({ status: 404, body: { field: 'gid' } });
    expect(await post(`${dtm}/submit`, { gid, trans_type: 'workflow' })).toMatchObject({
      status: 400,
      body: { field: 'req_extra.status' },
    });
    const failed = { gid, trans_type: 'workflow', req_extra: { status: 'failed' } };
    expect(await post(`${dtm}/submit`, failed)).toMatchObject({ status: 409, body: { code: 'INVALID_STATE' } });
    const same = { gid, trans_type: 'workflow', req_extra: { status: 'succeed' } };
    expect(await post(`${dtm}/submit`, same)).toMatchObject({ status: 200 });
    expect(await post(`${dtm}/abort`, { gid, trans_type: 'workflow' })).toMatchObject({ status: 400, body: { field: 'trans_type' } });
    expect(await progress(gid)).toEqual(['01 action succeed', '02 action succeed']);

    const tccGid = newGid();
    expect(await post(`${dtm}/prepare`, { gid: tccGid, trans_type: 'tcc', timeout_to_fail: 60 })).toMatchObject({ status: 200 });
    const reuse = await post(`${dtm}/prepareWorkflow`, {
      gid: tccGid,
      trans_type: 'workflow',
      custom_data: JSON.stringify({ name: 'transfer', data: null }),
    });
    expect(reuse).toMatchObject({ status: 409, body: { code: 'GID_CONFLICT', transaction: { status: 'failed' }, progresses: [] } });
  });

  it('runs TCC branches inside a workflow: Try as the step, Confirm on success', async () => {
    const gid = newGid();
    await workflows.execute('tcc-in-workflow', gid, { amount: 30 });
    expect(await bank.effectKinds(gid)).toEqual(['in-confirm', 'in-try', 'out-confirm', 'out-try']);
  });

  it('is resumed by the coordinator through the callback when a run stopped mid-way, replaying the finished step', async () => {
    const gid = newGid();
    between = async () => {
      throw new Error('the service lost its connection');
    };
    try {
      await expect(workflows.execute('transfer', gid, { amount: 30 })).rejects.toThrow('lost its connection');
    } finally {
      between = async () => undefined;
    }
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('prepared');
    await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
    expect(await progress(gid)).toEqual(['01 action succeed', '02 action succeed']);
    expect(bank.received(gid, '/TransOut')).toBe(1);
    expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
  });

  it.each(['ongoing', 'error', 'timeout'] as const)(
    'stops at a step that answers %s (nothing recorded for it), and is resumed until it finishes',
    async (kind) => {
      const gid = newGid();
      // The same workflow with a short call timeout; the resume runs it in the service with the default one.
      const impatient = new Workflows({ coordinator: coordinator.dtm, callback, retryInterval: 1, timeoutMs: 500 });
      impatient.register('transfer', async (wf: Workflow, input: Input) => {
        await wf.callBranch(input, `${bank.url}/TransOut`, `${bank.url}/TransOutCancel`);
        if (kind === 'timeout') bank.setLatency(1_500); // TransIn only
        await wf.callBranch(input, `${bank.url}/TransIn`, `${bank.url}/TransInCancel`);
      });
      if (kind !== 'timeout') bank.failNext('/TransIn', 1, kind);
      try {
        await expect(impatient.execute('transfer', gid, { amount: 30 })).rejects.toThrow();
      } finally {
        bank.setLatency(0);
      }
      expect(await progress(gid)).toEqual(['01 action succeed']);
      await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
      expect(await progress(gid)).toEqual(['01 action succeed', '02 action succeed']);
      expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
    },
  );

  it('resumes a workflow without input through the same POST route, handing it no input', async () => {
    const gid = newGid();
    await expect(workflows.execute('no-input', gid)).rejects.toThrow('stopped before the end');
    await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
    expect(await workflows.execute('no-input', gid)).toBe('no input');
  });

  it('resumes through the Express route too', async () => {
    const { default: express } = await import('express');
    const app = express();
    app.use(express.json());
    const port = await freePort();
    const flows = new Workflows({ coordinator: coordinator.dtm, callback: `http://127.0.0.1:${port}/resume`, retryInterval: 1 });
    app.post('/resume', expressWorkflow(flows));
    let runs = 0;
    flows.register('transfer', async (wf: Workflow, input: Input) => {
      runs++;
      await wf.callBranch(input, `${bank.url}/TransOut`, `${bank.url}/TransOutCancel`);
      if (runs === 1) throw new Error('stopped after the first step');
      await wf.callBranch(input, `${bank.url}/TransIn`, `${bank.url}/TransInCancel`);
    });
    const server = app.listen(port, '127.0.0.1');
    await once(server, 'listening');
    try {
      const gid = newGid();
      await expect(flows.execute('transfer', gid, { amount: 30 })).rejects.toThrow('stopped after the first step');
      await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
      expect(runs).toBe(2);
      expect(bank.received(gid, '/TransOut')).toBe(1);
      expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('is resumed after its service process was SIGKILLed mid-way: the finished step replays, the rest runs', async () => {
    const gid = newGid();
    const port = await freePort();
    const script = fileURLToPath(new URL('../dist/test/helpers/workflow-service.js', import.meta.url));
    const env = { ...process.env, CONCORD_URL: coordinator.dtm, BANK_URL: bank.url, PORT: String(port), GID: gid };
    const crashed = spawn(process.execPath, [script], { env: { ...env, MODE: 'crash' }, stdio: 'ignore' });
    const [, signal] = (await once(crashed, 'exit')) as [number | null, string | null];
    expect(signal).toBe('SIGKILL');
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('prepared');
    expect(await progress(gid)).toEqual(['01 action succeed']);

    const serving = spawn(process.execPath, [script], { env: { ...env, MODE: 'serve' }, stdio: 'ignore' });
    try {
      await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
    } finally {
      serving.kill('SIGKILL');
    }
    expect(bank.received(gid, '/TransOut')).toBe(1);
    expect(bank.received(gid, '/TransIn')).toBe(1);
    expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
  });

  it('finishes a workflow whose coordinator was SIGKILLed mid-way: the restarted coordinator resumes it', async () => {
    const store = await freshDatabase();
    const first = await startCoordinator({ store, env: fastCoordinator });
    let second: RunningCoordinator | undefined;
    const service2 = Fastify();
    const port = await freePort();
    const flows = new Workflows({ coordinator: first.dtm, callback: `http://127.0.0.1:${port}/workflow/resume`, retryInterval: 1 });
    service2.post('/workflow/resume', fastifyWorkflow(flows));
    await service2.listen({ port, host: '127.0.0.1' });
    let killed = false;
    flows.register('transfer', async (wf: Workflow, input: Input) => {
      await wf.callBranch(input, `${bank.url}/TransOut`, `${bank.url}/TransOutCancel`);
      if (!killed) {
        killed = true;
        expect(await first.stop('SIGKILL')).toBeNull();
      }
      await wf.callBranch(input, `${bank.url}/TransIn`, `${bank.url}/TransInCancel`);
    });
    const gid = newGid();
    try {
      // Recording step 2 finds no coordinator: the run stops without submitting.
      await expect(flows.execute('transfer', gid, { amount: 30 })).rejects.toThrow();
      second = await startCoordinator({ store, env: fastCoordinator, port: first.port });
      await waitForStatus(second.dtm, gid, 'succeed', 30_000);
      expect(bank.received(gid, '/TransOut')).toBe(1); // recorded before the kill: replayed
      expect(bank.received(gid, '/TransIn')).toBe(2); // called, not recorded: called again, the barrier absorbs it
      expect(await bank.effectKinds(gid)).toEqual(['in', 'out']);
    } finally {
      await first.stop('SIGKILL');
      await second?.stop();
      await service2.close();
    }
  });
});
