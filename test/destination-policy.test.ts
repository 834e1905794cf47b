/**
 * The destination policy: link-local and cloud metadata refused by default, loopback allowed by
 * default and deniable, every spelling of an IP refused at request time (400 naming the field,
 * nothing stored), and a name that resolves to a refused address refused at each connection.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DestinationPolicy } from '../relay/destination-policy.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';
import { startStreamingService, type StreamingService } from './helpers/streaming-service.js';

let open: TestCoordinator; // the default policy
let guarded: TestCoordinator; // loopback denied by CIDR, 127.0.0.2 allowed
let service: StreamingService; // on 127.0.0.1
let allowedService: StreamingService; // on 127.0.0.2

const answerOk = { '/ok': (_req: unknown, res: { end(s: string): void }) => res.end('ok') };

beforeAll(async () => {
  [open, guarded, service, allowedService] = await Promise.all([
    freshDatabase().then((store) => inProcessCoordinator({ store, env: fastCoordinator })),
    freshDatabase().then((store) =>
      inProcessCoordinator({
        store,
        env: {
          ...fastCoordinator,
          CONCORD_DENY_DESTINATIONS: '127.0.0.0/8,::1',
          CONCORD_ALLOW_DESTINATIONS: '["127.0.0.2"]',
        },
      }),
    ),
    startStreamingService(answerOk),
    startStreamingService(answerOk, '127.0.0.2'),
  ]);
});
afterAll(async () => {
  await Promise.all([service?.close(), allowedService?.close()]);
  expect(await open?.stop()).toBe(0);
  expect(await guarded?.stop()).toBe(0);
});

const gid = () => `dest-${randomUUID()}`;
const msg = (g: string, action: string, extra: Record<string, unknown> = {}) => ({
  gid: g,
  trans_type: 'msg',
  steps: [{ action }],
  payloads: ['{}'],
  ...extra,
});

/** A 400 naming `field` and the refused host, with nothing stored under the gid. */
async function expectRefused(
  coordinator: TestCoordinator,
  res: { status: number; body: Record<string, unknown> },
  field: string,
  host: string,
  g?: string,
) {
  expect(res.status).toBe(400);
  expect(res.body).toMatchObject({ code: 'INVALID_REQUEST', field });
  expect(String(res.body.message)).toContain(`destination ${host} is refused`);
  if (g) expect((await query(coordinator.dtm, g)).transaction).toBeNull();
}

async function subscribe(coordinator: TestCoordinator, topic: string, url: string) {
  const res = await fetch(`${coordinator.dtm}/subscribe?${new URLSearchParams({ topic, url, remark: '' }).toString()}`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('destination policy, by default', () => {
  it('refuses cloud metadata and link-local as a branch, check-back, saga step or subscriber, storing nothing', async () => {
    let g = gid();
    await expectRefused(
      open,
      await post(`${open.dtm}/submit`, msg(g, 'http://169.254.169.254/latest/meta-data/')),
      'steps.0.action',
      '169.254.169.254',
      g,
    );
    g = gid();
    const prepare = msg(g, `${service.url}/ok`, { query_prepared: 'http://metadata.google.internal/computeMetadata/v1/' });
    await expectRefused(open, await post(`${open.dtm}/prepare`, prepare), 'query_prepared', 'metadata.google.internal', g);
    g = gid();
    const saga = {
      gid: g,
      trans_type: 'saga',
      steps: [{ action: `${service.url}/ok`, compensate: 'http://[fe80::1]:8080/undo' }],
      payloads: ['{}'],
    };
    await expectRefused(open, await post(`${open.dtm}/submit`, saga), 'steps.0.compensate', 'fe80::1', g);
    const topic = `t-${randomUUID()}`;
    await expectRefused(open, await subscribe(open, topic, 'http://[fd00:ec2::254]/latest'), 'url', 'fd00:ec2::254');
    // A topic with no subscriber stored: a message to it is refused for that reason.
    expect((await post(`${open.dtm}/submit`, msg(gid(), `topic://${topic}`))).body.message).toContain('has no subscribers');
    expect(service.calls('/ok')).toBe(0);
  });

  it('calls services on loopback', async () => {
    const g = gid();
    expect((await post(`${open.dtm}/submit`, msg(g, `${service.url}/ok`))).status).toBe(200);
    await waitForStatus(open.dtm, g, 'succeed');
    expect(service.calls('/ok')).toBe(1);
  });
});

describe('destination policy with loopback denied', () => {
  it('refuses every spelling of a loopback address at request time', async () => {
    const port = new URL(service.url).port;
    let g = gid();
    await expectRefused(
      guarded,
      await post(`${guarded.dtm}/submit`, msg(g, `http://0x7f000001:${port}/ok`)),
      'steps.0.action',
      '127.0.0.1',
      g,
    );
    g = gid();
    const prepare = msg(g, `${allowedService.url}/ok`, { query_prepared: `http://2130706433:${port}/ok` });
    await expectRefused(guarded, await post(`${guarded.dtm}/prepare`, prepare), 'query_prepared', '127.0.0.1', g);
    await expectRefused(guarded, await subscribe(guarded, 't', `http://[::ffff:7f00:1]:${port}/ok`), 'url', '::ffff:7f00:1');
    await expectRefused(guarded, await subscribe(guarded, 't', `http://[::1]:${port}/ok`), 'url', '::1');
    expect(service.calls('/ok')).toBe(1); // the default coordinator's call above, no other
  });

  it('refuses a name that resolves to a denied address at each connection, and retries as for any error', async () => {
    const g = gid();
    expect((await post(`${guarded.dtm}/submit`, msg(g, `http://localhost:${new URL(service.url).port}/ok`))).status).toBe(200);
    await expect
      .poll(async () => (await query(guarded.dtm, g)).branches[0]?.last_error, { timeout: 10_000, interval: 50 })
      .toMatch(/^EDESTINATIONREFUSED: destination localhost \((127\.0\.0\.1|::1)\) is refused/);
    await expect
      .poll(async () => (await query(guarded.dtm, g)).branches[0]?.attempts, { timeout: 10_000, interval: 50 })
      .toBeGreaterThanOrEqual(2);
    expect((await query(guarded.dtm, g)).transaction?.status).toBe('submitted');
    expect(service.calls('/ok')).toBe(1);
  });

  it('refuses at call time a destination stored before the policy was tightened', async () => {
    const store = await freshDatabase();
    const before = await inProcessCoordinator({ store, env: fastCoordinator });
    const g = gid();
    expect((await post(`${before.dtm}/submit`, msg(g, `${service.url}/ok`, { custom_data: '{"delay": 2}' }))).status).toBe(200);
    expect(await before.stop()).toBe(0);
    const after = await inProcessCoordinator({ store, env: { ...fastCoordinator, CONCORD_DENY_DESTINATIONS: 'loopback' } });
    try {
      await expect
        .poll(async () => (await query(after.dtm, g)).branches[0]?.last_error, { timeout: 10_000, interval: 50 })
        .toBe('destination 127.0.0.1 is refused by the destination policy (denyDestinations)');
      expect(service.calls('/ok')).toBe(1); // the default coordinator's call above, no other
    } finally {
      expect(await after.stop()).toBe(0);
    }
  });

  it('calls an address the allow list lets through', async () => {
    const g = gid();
    expect((await post(`${guarded.dtm}/submit`, msg(g, `${allowedService.url}/ok`))).status).toBe(200);
    await waitForStatus(guarded.dtm, g, 'succeed');
    expect(allowedService.calls('/ok')).toBe(1);
  });
});

describe('DestinationPolicy', () => {
  const policy = new DestinationPolicy({
    allow: ['10.1.0.0/16', 'billing.corp', '169.254.170.2'],
    deny: ['private', '*.internal.example'],
  });

  it('matches addresses, mapped IPv6, names and subdomains; the allow list carves exceptions', () => {
    expect(policy.hostProblem('10.2.3.4')).toContain('refused');
    expect(policy.hostProblem('[::ffff:a02:304]')).toContain('refused'); // 10.2.3.4 mapped into IPv6
    expect(policy.hostProblem('10.1.3.4')).toBeUndefined();
    expect(policy.hostProblem('169.254.169.254')).toContain('refused'); // always denied
    expect(policy.hostProblem('metadata.google.internal')).toContain('refused');
    expect(policy.hostProblem('169.254.170.2')).toBeUndefined(); // let through (ECS task metadata)
    expect(policy.hostProblem('a.internal.example.')).toContain('refused');
    expect(policy.hostProblem('internal.example')).toBeUndefined();
    expect(policy.hostProblem('example.com')).toBeUndefined();
    expect(policy.addressProblem('192.168.1.1', 'svc.example.com')).toContain('svc.example.com (192.168.1.1)');
    expect(policy.addressProblem('192.168.1.1', 'billing.corp')).toBeUndefined();
    expect(policy.hostProblem('8.8.8.8')).toBeUndefined();
  });
});
