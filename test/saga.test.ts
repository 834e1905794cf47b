/**
 * The saga engine over HTTP, against a real coordinator process, a real participant service with
 * the barrier and real Postgres: rollback from every step, step policies (attempts, timeout,
 * backoff), compensations that keep failing (needs_attention, alert, redrive), concurrent sagas
 * with orders, timeout_to_fail, a coordinator killed mid-saga, and bad input.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinator, type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';
import { startSagaService, type SagaService } from './helpers/saga-service.js';

const gid = () => `saga-${randomUUID()}`;

let service: SagaService;
let coordinator: TestCoordinator;
let alerts: { server: Server; url: string; received: Record<string, unknown>[] };

beforeAll(async () => {
  const received: Record<string, unknown>[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      received.push(JSON.parse(body) as Record<string, unknown>);
      res.end('ok');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  alerts = { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/alert`, received };
  service = await startSagaService(await freshDatabase());
  coordinator = await inProcessCoordinator({
    store: await freshDatabase(),
    env: { ...fastCoordinator, CONCORD_ALERT_WEBHOOK: alerts.url, CONCORD_ALERT_RETRY_LIMIT: '2', CONCORD_COMPENSATE_ATTEMPTS: '3' },
  });
});
afterAll(async () => {
  await service?.close();
  expect(await coordinator?.stop()).toBe(0);
  alerts?.server.close();
});

/** A saga body of `n` steps s1…sn on the test service, with extra keys per step. */
function sagaBody(g: string, n: number, extra: (i: number) => Record<string, string> = () => ({}), options: Record<string, unknown> = {}) {
  const names = Array.from({ length: n }, (_, i) => `s${i + 1}`);
  return {
    gid: g,
    trans_type: 'saga',
    steps: names.map((s, i) => ({ action: service.stepUrl(s, 'action'), compensate: service.stepUrl(s, 'compensate'), ...extra(i) })),
    payloads: names.map((_, i) => JSON.stringify({ amount: 10 * (i + 1) })),
    ...options,
  };
}

const effects = async (g: string) => (await service.effects(g)).map((e) => `${e.step}.${e.op}`);
const calls = (g: string) => service.calls(g).map((c) => `${c.step}.${c.op}`);

describe('a saga over HTTP', () => {
  it('runs every action once, in order, and succeeds', async () => {
    const g = gid();
    expect((await post(`${coordinator.dtm}/submit`, sagaBody(g, 3, undefined, { wait_result: true }))).status).toBe(200);
    expect(calls(g)).toEqual(['s1.action', 's2.action', 's3.action']);
    expect(await effects(g)).toEqual(['s1.action', 's2.action', 's3.action']);
    expect(service.calls(g)[0]?.body).toEqual({ amount: 10 });
    expect((await query(coordinator.dtm, g)).transaction?.status).toBe('succeed');
  });

  it.each([1, 2, 3])('rolls back exactly the steps before step %i when it answers FAILURE', async (failing) => {
    const g = gid();
    service.failNext(`s${failing}`, 'action', 1, 'failure');
    const res = await post(`${coordinator.dtm}/submit`, sagaBody(g, 3, undefined, { wait_result: true }));
    expect(res.status).toBe(409);
    expect(res.body.message).toContain(`s${failing}/action`);
    const done = Array.from({ length: failing - 1 }, (_, i) => i + 1);
    // DTM's rule: every step whose action ran is compensated, the failed one included, last first.
    expect(calls(g)).toEqual([
      ...done.map((i) => `s${i}.action`),
      `s${failing}.action`,
      ...[...done, failing].reverse().map((i) => `s${i}.compensate`),
    ]);
    // The failed step's compensation is a null compensation: the barrier leaves no effect.
    expect(await effects(g)).toEqual([...done.map((i) => `s${i}.action`), ...[...done].reverse().map((i) => `s${i}.compensate`)]);
    const q = await query(coordinator.dtm, g);
    expect(q.transaction?.status).toBe('failed');
    expect(q.transaction?.rollback_reason).toContain('FAILURE');
  });

  it('retries a step that errors, then goes on', async () => {
    const g = gid();
    service.failNext('s2', 'action', 2, 'error');
    await post(`${coordinator.dtm}/submit`, sagaBody(g, 3));
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(calls(g)).toEqual(['s1.action', 's2.action', 's2.action', 's2.action', 's3.action']);
    const s2 = (await query(coordinator.dtm, g)).branches.find((b) => b.branch_id === '02' && b.op === 'action');
    expect(s2?.attempts).toBe(3);
  });

  it('rolls back when a step spends its attempts (step policy)', async () => {
    const g = gid();
    service.failAlways('s2', 'action', 'error');
    try {
      await post(
        `${coordinator.dtm}/submit`,
        sagaBody(g, 2, (i): Record<string, string> => (i === 1 ? { attempts: '3', backoff: '0.05' } : {})),
      );
      await waitForStatus(coordinator.dtm, g, 'failed');
    } finally {
      service.heal('s2', 'action');
    }
    expect(calls(g)).toEqual(['s1.action', 's2.action', 's2.action', 's2.action', 's2.compensate', 's1.compensate']);
    expect(await effects(g)).toEqual(['s1.action', 's1.compensate']);
    expect((await query(coordinator.dtm, g)).transaction?.rollback_reason).toContain('gave up after 3 attempts');
  });

  it('counts a call slower than the step timeout as a failed attempt', async () => {
    const g = gid();
    service.setLatency('s1', 800);
    try {
      await post(
        `${coordinator.dtm}/submit`,
        sagaBody(g, 1, () => ({ timeout: '0.2', attempts: '2', backoff: '0.05', compensate_attempts: '50' })),
      );
      await waitForStatus(coordinator.dtm, g, 'aborting');
    } finally {
      service.setLatency('s1', 0); // the compensation has the same timeout
    }
    await waitForStatus(coordinator.dtm, g, 'failed');
    const action = (await query(coordinator.dtm, g)).branches.find((b) => b.op === 'action');
    expect(action?.attempts).toBe(2);
    expect(action?.last_error).toContain('timeout');
  });

  it('applies DTM retry_limit with its reason', async () => {
    const g = gid();
    service.failAlways('s1', 'action', 'error');
    try {
      await post(`${coordinator.dtm}/submit`, sagaBody(g, 1, undefined, { retry_limit: 1 }));
      await waitForStatus(coordinator.dtm, g, 'failed');
    } finally {
      service.heal('s1', 'action');
    }
    expect(calls(g)).toEqual(['s1.action', 's1.action', 's1.compensate']);
    expect((await query(coordinator.dtm, g)).transaction?.rollback_reason).toContain(
      'RetryCount is greater than RetryLimit, RetryLimit: 1',
    );
  });

  it('rolls back a saga older than timeout_to_fail', async () => {
    const g = gid();
    service.failAlways('s2', 'action', 'ongoing');
    try {
      await post(`${coordinator.dtm}/submit`, sagaBody(g, 2, undefined, { timeout_to_fail: 1 }));
      await waitForStatus(coordinator.dtm, g, 'failed');
    } finally {
      service.heal('s2', 'action');
    }
    expect((await query(coordinator.dtm, g)).transaction?.rollback_reason).toBe('Timeout after 1 seconds');
    expect(await effects(g)).toEqual(['s1.action', 's1.compensate']);
  });

  it('passes branch_headers to every call', async () => {
    const g = gid();
    await post(`${coordinator.dtm}/submit`, sagaBody(g, 1, undefined, { branch_headers: { 'x-tenant': 'acme' }, wait_result: true }));
    expect(service.calls(g)[0]?.headers['x-tenant']).toBe('acme');
  });
});

describe('a compensation that keeps failing', () => {
  it('puts the saga in needs_attention, alerts, and finishes after a redrive', async () => {
    const g = gid();
    service.failNext('s2', 'action', 1, 'failure');
    service.failAlways('s1', 'compensate', 'error');
    try {
      await post(
        `${coordinator.dtm}/submit`,
        sagaBody(g, 2, () => ({ backoff: '0.05' })),
      );
      await waitForStatus(coordinator.dtm, g, 'needs_attention');
      const q = await query(coordinator.dtm, g);
      expect((q.transaction as { attention_reason?: string }).attention_reason).toContain('step 01 compensate failed 3 times');
      expect(q.branches.find((b) => b.branch_id === '01' && b.op === 'compensate')?.attempts).toBe(3);
      await expect.poll(() => alerts.received.find((a) => a.gid === g && a.status === 'needs_attention')).toBeDefined();
      // It stays there: nothing is scheduled, so nothing is retried until an operator acts.
      const before = service.calls(g).length;
      expect((await query(coordinator.dtm, g)).transaction).not.toHaveProperty('next_cron_time');
      expect(service.calls(g).length).toBe(before);
    } finally {
      service.heal('s1', 'compensate');
    }
    expect((await post(`${coordinator.dtm}/redrive`, { gid: g })).status).toBe(200);
    await waitForStatus(coordinator.dtm, g, 'failed');
    expect(await effects(g)).toEqual(['s1.action', 's1.compensate']);
    expect((await post(`${coordinator.dtm}/redrive`, { gid: g })).status).toBe(409);
    expect((await post(`${coordinator.dtm}/redrive`, { gid: gid() })).status).toBe(404);
  });
});

describe('a concurrent saga', () => {
  it('starts a step only after the steps it waits for, and compensates in reverse of the orders', async () => {
    const g = gid();
    service.setLatency('s1', 150);
    service.setLatency('s2', 250);
    service.failNext('s4', 'action', 1, 'failure');
    try {
      // s3 waits for s1 and s2; s4 waits for s3.
      const body = sagaBody(g, 4, undefined, { custom_data: JSON.stringify({ concurrent: true, orders: { '2': [0, 1], '3': [2] } }) });
      await post(`${coordinator.dtm}/submit`, body);
      await waitForStatus(coordinator.dtm, g, 'failed');
    } finally {
      service.setLatency('s1', 0);
      service.setLatency('s2', 0);
    }
    const all = service.calls(g);
    const call = (step: string, op: string) => all.find((c) => c.step === step && c.op === op)!;
    // s1 and s2 ran at the same time; s3 only after both ended; s4 after s3.
    expect(call('s2', 'action').arrivedAt).toBeLessThan(call('s1', 'action').endedAt!);
    expect(call('s3', 'action').arrivedAt).toBeGreaterThanOrEqual(call('s2', 'action').endedAt!);
    expect(call('s3', 'action').arrivedAt).toBeGreaterThanOrEqual(call('s1', 'action').endedAt!);
    expect(call('s4', 'action').arrivedAt).toBeGreaterThanOrEqual(call('s3', 'action').endedAt!);
    // Backward: s4, then s3, then s1 and s2 (which both only wait for s3's compensation).
    expect(call('s3', 'compensate').arrivedAt).toBeGreaterThanOrEqual(call('s4', 'compensate').endedAt!);
    expect(call('s1', 'compensate').arrivedAt).toBeGreaterThanOrEqual(call('s3', 'compensate').endedAt!);
    expect(call('s2', 'compensate').arrivedAt).toBeGreaterThanOrEqual(call('s3', 'compensate').endedAt!);
    expect((await effects(g)).sort()).toEqual(['s1.action', 's1.compensate', 's2.action', 's2.compensate', 's3.action', 's3.compensate']);
  });
});

describe('a coordinator killed mid-saga', () => {
  it('is finished by the next coordinator on the same store, each effect once', async () => {
    const store = await freshDatabase();
    const first = await startCoordinator({ store, env: fastCoordinator });
    const g = gid();
    service.setLatency('s2', 1_500);
    try {
      await post(`${first.dtm}/submit`, sagaBody(g, 3));
      await expect.poll(() => service.calls(g).length, { timeout: 10_000 }).toBe(2); // s2 is in progress
      expect(await first.stop('SIGKILL')).toBeNull();
    } finally {
      service.setLatency('s2', 0);
      await first.stop('SIGKILL'); // (a no-op when already stopped)
    }
    const second = await startCoordinator({ store, env: fastCoordinator });
    try {
      await waitForStatus(second.dtm, g, 'succeed', 30_000);
    } finally {
      await second.stop();
    }
    expect(await effects(g)).toEqual(['s1.action', 's2.action', 's3.action']);
  });
});

describe('a coordinator killed mid-saga with timeout_to_fail', () => {
  it('compensates every action that ran, though its results were not written yet', async () => {
    const store = await freshDatabase();
    const first = await startCoordinator({ store, env: fastCoordinator });
    const g = gid();
    service.setLatency('s3', 4_000);
    try {
      await post(`${first.dtm}/submit`, sagaBody(g, 3, undefined, { timeout_to_fail: 2 }));
      await expect.poll(() => service.calls(g).length, { timeout: 10_000 }).toBe(3); // s3 is in progress
      expect(await first.stop('SIGKILL')).toBeNull();
    } finally {
      await first.stop('SIGKILL'); // (a no-op when already stopped)
    }
    // The next node finds the saga past timeout_to_fail: it rolls back what ran before the crash.
    const second = await startCoordinator({ store, env: fastCoordinator });
    try {
      await waitForStatus(second.dtm, g, 'failed', 30_000);
      const compensations = service
        .calls(g)
        .filter((c) => c.op === 'compensate')
        .map((c) => c.step);
      expect(new Set(compensations)).toEqual(new Set(['s1', 's2', 's3']));
      // s3's action was still running when the node died: behind the barrier it is either undone or
      // absorbed (its compensation came first); s1 and s2 are undone, last first.
      const done = await effects(g);
      expect(done.filter((e) => e.startsWith('s1.') || e.startsWith('s2.'))).toEqual([
        's1.action',
        's2.action',
        's2.compensate',
        's1.compensate',
      ]);
      expect([0, 2]).toContain(done.filter((e) => e.startsWith('s3.')).length);
    } finally {
      service.setLatency('s3', 0);
      await second.stop();
    }
  });
});

describe('bad saga input', () => {
  const cases: [string, (g: string) => Record<string, unknown>, string][] = [
    ['no steps', (g) => ({ gid: g, trans_type: 'saga', steps: [], payloads: [] }), 'steps'],
    ['a step policy that is not a number', (g) => sagaBody(g, 1, () => ({ attempts: 'many' })), 'steps.0.attempts'],
    ['a bad action URL', (g) => ({ ...sagaBody(g, 1), steps: [{ action: 'ftp://x/y', compensate: '' }] }), 'steps.0.action'],
    [
      'an unknown broker connection',
      (g) => ({ ...sagaBody(g, 1), steps: [{ action: 'kafka://nowhere/t', compensate: 'kafka://nowhere/t' }] }),
      'steps.0.action',
    ],
    ['orders with a cycle', (g) => sagaBody(g, 2, undefined, { custom_data: '{"orders":{"0":[1],"1":[0]}}' }), 'custom_data'],
    ['orders naming a missing step', (g) => sagaBody(g, 2, undefined, { custom_data: '{"orders":{"1":[5]}}' }), 'custom_data'],
  ];
  it.each(cases)('answers 400 naming the field for %s, storing nothing', async (_name, body, field) => {
    const g = gid();
    const res = await post(`${coordinator.dtm}/submit`, body(g));
    expect(res.status).toBe(400);
    expect(res.body.field).toBe(field);
    expect((await query(coordinator.dtm, g)).transaction).toBeNull();
  });

  it('refuses prepare and abort of a saga (a saga is sent with submit only)', async () => {
    const g = gid();
    expect((await post(`${coordinator.dtm}/prepare`, sagaBody(g, 1))).body.field).toBe('trans_type');
    expect((await post(`${coordinator.dtm}/abort`, sagaBody(g, 1))).body.field).toBe('trans_type');
  });

  it('answers a repeated submit of the same saga with success, and another saga under the same gid with 409', async () => {
    const g = gid();
    expect((await post(`${coordinator.dtm}/submit`, sagaBody(g, 1, undefined, { wait_result: true }))).status).toBe(200);
    expect((await post(`${coordinator.dtm}/submit`, sagaBody(g, 1, undefined, { wait_result: true }))).status).toBe(200);
    const other = await post(`${coordinator.dtm}/submit`, sagaBody(g, 2));
    expect(other.status).toBe(409);
    expect(other.body.code).toBe('GID_CONFLICT');
    expect(calls(g)).toEqual(['s1.action']);
  });
});
