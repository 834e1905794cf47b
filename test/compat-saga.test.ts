/**
 * DTM's own clients, unchanged, drive Concord's saga: the Go client (github.com/dtm-labs/client
 * v1.17.3) and the Python one (PyPI dtmcli 1.7.7.0), through the drivers in test/compat (see its
 * README). A real coordinator process, a real saga service (test/helpers/saga-service.ts) with the
 * SDK's barrier, real Postgres. The drivers' saga steps are s1, s2 (and s3): `<busi>/sN/action`
 * and `<busi>/sN/compensate`, payload {"amount":30}.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { buildGoClient, pythonWithDtmcli, PYTHON_CLIENT_SCRIPT, runClient, type ClientResult } from './compat/setup.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';
import { startSagaService, type SagaCall, type SagaService } from './helpers/saga-service.js';

type Mode = 'saga' | 'saga-wait' | 'saga-concurrent' | 'saga-headers';

interface DtmClient {
  name: string;
  /** The command that runs the driver. */
  prepare: () => Promise<string[]>;
  /** The payload of each step as this client serialises {amount: 30}; the coordinator must keep it verbatim. */
  payload: string;
  /** Go only: dtmcli-py's concurrent saga is broken client-side and its TransBase has no retry_limit. */
  full: boolean;
}

const clients: DtmClient[] = [
  { name: 'Go', prepare: async () => [await buildGoClient()], payload: '{"amount":30}', full: true },
  { name: 'Python', prepare: async () => [await pythonWithDtmcli(), PYTHON_CLIENT_SCRIPT], payload: '{"amount": 30}', full: false },
];

/** `step/op` of each call or effect, for compact assertions on order. */
const names = (rows: { step: string; op: string }[]) => rows.map((r) => `${r.step}/${r.op}`);

describe.each(clients.map((c) => [c.name, c] as const))('DTM %s client, saga', (_name, client) => {
  let bin: string[];
  let coordinator: TestCoordinator;
  let service: SagaService;

  beforeAll(async () => {
    const [command, store, serviceDb] = await Promise.all([client.prepare(), freshDatabase(), freshDatabase()]);
    bin = command;
    coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
    service = await startSagaService(serviceDb);
  }, 300_000); // a cold Go build takes 1-2 min
  afterAll(async () => {
    await service?.close();
    expect(await coordinator?.stop()).toBe(0);
  });
  afterEach(() => {
    // A test that failed early may leave a planned failure unused: the next test starts clean.
    for (const step of ['s1', 's2', 's3']) {
      service.heal(step, 'action');
      service.heal(step, 'compensate');
      service.setLatency(step, 0);
    }
  });

  const newGid = () => `compat-saga-${client.name.toLowerCase()}-${randomUUID()}`;

  /** Runs the driver once; when the test then fails, prints what the client sent and got, the service's calls and the coordinator's log. */
  async function drive(mode: Mode, gid: string, extra: string[] = []): Promise<ClientResult> {
    const args = ['-dtm', coordinator.dtm, '-busi', service.url, '-mode', mode, '-gid', gid, ...extra];
    const started = performance.now();
    const r = await runClient(bin, args);
    const ms = Math.round(performance.now() - started);
    onTestFailed(() => {
      const calls = service
        .calls(gid)
        .map((c) => `${c.step}/${c.op} ${c.status ?? '-'} ${Math.round(c.arrivedAt)}..${Math.round(c.endedAt ?? 0)}`);
      console.error(
        [
          `--- ${client.name} driver: ${args.join(' ')} (exit ${r.code}, ${ms} ms) ---`,
          `stdout:\n${r.stdout}`,
          `stderr:\n${r.stderr}`,
          `--- saga service calls ---\n${calls.join('\n')}`,
          `--- coordinator output (tail) ---\n${coordinator.output().slice(-4000)}`,
        ].join('\n'),
      );
    });
    return r;
  }

  /** The driver must have reported success; the message names its error and stderr. */
  const expectOk = (r: ClientResult) => expect(r.ok, `${r.error}\n--- client stderr ---\n${r.stderr}`).toBe(true);

  type Query = Awaited<ReturnType<typeof query>>;
  const view = async (gid: string) =>
    (await query(coordinator.dtm, gid)) as {
      transaction: (NonNullable<Query['transaction']> & { trans_type: string }) | null;
      branches: (Query['branches'][number] & { url: string; bin_data: string })[];
    };

  /** The coordinator's branch rows, as DTM lays them out: both ops of every step, with its URLs and the client's payload verbatim. */
  async function expectBranches(gid: string, steps: string[], status: Record<string, string>): Promise<void> {
    const { transaction, branches } = await view(gid);
    expect(transaction?.trans_type).toBe('saga');
    const rows = branches.map((b) => ({
      branch_id: b.branch_id,
      op: b.op,
      status: b.status,
      url: b.url,
      payload: Buffer.from(b.bin_data, 'base64').toString(),
    }));
    const expected = steps.flatMap((step, i) =>
      (['compensate', 'action'] as const).map((op) => ({
        branch_id: String(i + 1).padStart(2, '0'),
        op,
        status: status[`${step}/${op}`] ?? 'prepared',
        url: service.stepUrl(step, op),
        payload: client.payload,
      })),
    );
    expect(rows).toEqual(expected); // DTM's row order: per step, compensate then action
  }

  /** Each call arrived after the one before it had been answered: nothing ran at once. */
  function expectOneAtATime(calls: SagaCall[]): void {
    for (let i = 1; i < calls.length; i++) expect(calls[i]!.arrivedAt).toBeGreaterThanOrEqual(calls[i - 1]!.endedAt!);
  }

  it('saga: both actions run once, in order, with the payload; nothing is compensated', async () => {
    const gid = newGid();
    expectOk(await drive('saga', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    const calls = service.calls(gid);
    expect(names(calls)).toEqual(['s1/action', 's2/action']);
    expectOneAtATime(calls);
    expect(calls.map((c) => [c.method, c.branchId, c.body, c.status])).toEqual([
      ['POST', '01', { amount: 30 }, 200],
      ['POST', '02', { amount: 30 }, 200],
    ]);
    expect(names(await service.effects(gid))).toEqual(['s1/action', 's2/action']);
    await expectBranches(gid, ['s1', 's2'], { 's1/action': 'succeed', 's2/action': 'succeed' });
  });

  it('step 2 answers FAILURE: the saga fails, step 2 then step 1 are compensated, step 1 is undone', async () => {
    const gid = newGid();
    service.failNext('s2', 'action', 1, 'failure');
    expectOk(await drive('saga', gid)); // submit answers at once; the saga runs afterwards
    await waitForStatus(coordinator.dtm, gid, 'failed');
    const calls = service.calls(gid);
    // DTM compensates the failed step too, in reverse order.
    expect(names(calls)).toEqual(['s1/action', 's2/action', 's2/compensate', 's1/compensate']);
    expectOneAtATime(calls);
    expect(calls.map((c) => c.status)).toEqual([200, 409, 200, 200]);
    // s2's compensation found no s2 action in the barrier: a null compensation, no effect.
    expect(names(await service.effects(gid))).toEqual(['s1/action', 's1/compensate']);
    const { transaction } = await view(gid);
    expect(transaction?.rollback_reason).toContain('FAILURE');
    expect(transaction?.rollback_reason).toContain(service.stepUrl('s2', 'action'));
    await expectBranches(gid, ['s1', 's2'], {
      's1/compensate': 'succeed',
      's1/action': 'succeed',
      's2/compensate': 'succeed',
      's2/action': 'failed',
    });
  });

  it('a step erroring twice then succeeding: retried, the saga succeeds', async () => {
    const gid = newGid();
    service.failNext('s1', 'action', 2, 'error');
    expectOk(await drive('saga', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    const calls = service.calls(gid);
    expect(names(calls)).toEqual(['s1/action', 's1/action', 's1/action', 's2/action']);
    expect(calls.map((c) => c.status)).toEqual([500, 500, 200, 200]);
    expect(names(await service.effects(gid))).toEqual(['s1/action', 's2/action']);
  });

  it('saga-wait: the coordinator answers once the saga succeeded', async () => {
    const gid = newGid();
    expectOk(await drive('saga-wait', gid));
    // No polling: with wait_result the saga is over when submit answers.
    expect((await view(gid)).transaction?.status).toBe('succeed');
    expect(names(service.calls(gid))).toEqual(['s1/action', 's2/action']);
  });

  it('saga-wait: a failed saga makes submit answer 409, and the client reports it', async () => {
    const gid = newGid();
    service.failNext('s2', 'action', 1, 'failure');
    const r = await drive('saga-wait', gid);
    expect(r.ok, r.stderr).toBe(false);
    // Go's error is the answer's body; Python raises DTMFailureError for a 409 and only for it.
    expect(r.error, r.stderr).toContain('FAILURE');
    if (client.name === 'Python') {
      expect(r.error).toBe('DTMFailureError: FAILURE');
      expect(r.stderr).toMatch(/answer: 409 /);
    } else {
      expect(r.stderr).toMatch(/requested: 409 POST \S+\/submit/); // the client's own debug log
    }
    expect((await view(gid)).transaction?.status).toBe('failed');
    expect(names(service.calls(gid))).toEqual(['s1/action', 's2/action', 's2/compensate', 's1/compensate']);
  });

  it('saga-headers: the branch headers reach every branch call', async () => {
    const gid = newGid();
    service.failNext('s2', 'action', 1, 'failure'); // compensations too
    expectOk(await drive('saga-headers', gid));
    await waitForStatus(coordinator.dtm, gid, 'failed');
    const calls = service.calls(gid);
    expect(calls).toHaveLength(4);
    for (const c of calls) expect(c.headers, `${c.step}/${c.op}`).toMatchObject({ test_header: 'x' });
  });

  // Registered for the Go client only (no skipped tests): Python's client cannot express these.
  if (client.full) {
    it('saga-concurrent with orders: s1 and s2 at once, s3 only after both ended', async () => {
      const gid = newGid();
      service.setLatency('s1', 400);
      service.setLatency('s2', 200);
      expectOk(await drive('saga-concurrent', gid));
      await waitForStatus(coordinator.dtm, gid, 'succeed');
      const calls = service.calls(gid);
      const [s1, s2, s3] = ['s1', 's2', 's3'].map((step) => {
        const found = calls.filter((c) => c.step === step && c.op === 'action');
        expect(found, step).toHaveLength(1);
        return found[0]!;
      });
      expect(s2!.arrivedAt).toBeLessThan(s1!.endedAt!); // no order between s1 and s2: they overlapped
      expect(s3!.arrivedAt).toBeGreaterThanOrEqual(Math.max(s1!.endedAt!, s2!.endedAt!));
      expect(calls.filter((c) => c.op === 'compensate')).toEqual([]);
      expect(new Set(names(await service.effects(gid)))).toEqual(new Set(['s1/action', 's2/action', 's3/action']));
      await expectBranches(gid, ['s1', 's2', 's3'], { 's1/action': 'succeed', 's2/action': 'succeed', 's3/action': 'succeed' });
    });

    it('retry_limit 1: a step that keeps erroring is run twice, then the saga rolls back', async () => {
      const gid = newGid();
      service.failAlways('s2', 'action', 'error');
      expectOk(await drive('saga', gid, ['-retry-limit', '1']));
      await waitForStatus(coordinator.dtm, gid, 'failed');
      const { transaction } = await view(gid);
      expect(transaction?.rollback_reason).toContain('RetryCount is greater than RetryLimit, RetryLimit: 1');
      // The first run and one retry; then, as DTM, s2's action counts as possibly done and is compensated too.
      expect(names(service.calls(gid))).toEqual(['s1/action', 's2/action', 's2/action', 's2/compensate', 's1/compensate']);
      expect(names(await service.effects(gid))).toEqual(['s1/action', 's1/compensate']);
    });

    it('timeout_to_fail: a saga whose step stays ONGOING rolls back after the timeout', async () => {
      const gid = newGid();
      service.failAlways('s2', 'action', 'ongoing');
      expectOk(await drive('saga', gid, ['-timeout-to-fail', '2', '-retry-interval', '1']));
      await waitForStatus(coordinator.dtm, gid, 'failed');
      expect((await view(gid)).transaction?.rollback_reason).toContain('Timeout after 2 seconds');
      expect(names(await service.effects(gid))).toEqual(['s1/action', 's1/compensate']);
    });
  }
});
