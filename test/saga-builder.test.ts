/** The Saga builder's request: DTM's saga body, Concord's step policies, and the concurrent layout. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transRequestSchema } from '../schemas/dtm.js';
import { sagaCustomDataSchema, sagaStepPolicySchema } from '../schemas/saga.js';
import { isConcordError, Saga } from '../sdk/index.js';

/** A stand-in coordinator that records each request and answers as DTM does. */
let server: Server;
let dtm: string;
const requests: { path: string; body: Record<string, unknown> }[] = [];
let answer: { status: number; body: unknown } = { status: 200, body: { dtm_result: 'SUCCESS' } };

beforeAll(async () => {
  server = createServer((req, res) => {
    let text = '';
    req.on('data', (chunk: Buffer) => (text += chunk.toString()));
    req.on('end', () => {
      requests.push({ path: req.url ?? '', body: JSON.parse(text) as Record<string, unknown> });
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  dtm = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/dtmsvr`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

async function submitted(saga: Saga): Promise<Record<string, unknown>> {
  requests.length = 0;
  await saga.submit();
  expect(requests.map((r) => r.path)).toEqual(['/api/dtmsvr/submit']);
  const body = requests[0]!.body;
  expect(transRequestSchema.safeParse(body).success).toBe(true);
  return body;
}

describe('Saga', () => {
  it('submits DTM’s saga body: steps, payloads as text, and the saga options', async () => {
    const saga = new Saga(dtm, 'g-http', { waitResult: true, timeoutToFail: 60, requestTimeout: 5, retryInterval: 2, retryLimit: 3 })
      .add('http://bank-a/TransOut', 'http://bank-a/TransOutCompensate', { amount: 30 })
      .add('http://bank-b/TransIn', '', 'raw text');
    expect(await submitted(saga)).toEqual({
      gid: 'g-http',
      trans_type: 'saga',
      steps: [
        { action: 'http://bank-a/TransOut', compensate: 'http://bank-a/TransOutCompensate' },
        { action: 'http://bank-b/TransIn', compensate: '' },
      ],
      payloads: ['{"amount":30}', 'raw text'],
      wait_result: true,
      timeout_to_fail: 60,
      request_timeout: 5,
      retry_interval: 2,
      retry_limit: 3,
    });
  });

  it('writes every step policy as a string key, headers as JSON text', async () => {
    const saga = new Saga(dtm, 'g-broker', { branchHeaders: { tenant: 't1' } }).add(
      'kafka://default/inventory',
      'kafka://default/inventory',
      { sku: 'w', qty: 2 },
      {
        command: 'reserve',
        compensateCommand: 'release',
        timeout: 1.5,
        attempts: 4,
        compensateAttempts: 10,
        backoff: 0.5,
        key: 'w',
        headers: { 'x-trace': 'abc' },
      },
    );
    const body = await submitted(saga);
    const [step] = body.steps as Record<string, string>[];
    expect(step).toEqual({
      action: 'kafka://default/inventory',
      compensate: 'kafka://default/inventory',
      command: 'reserve',
      compensate_command: 'release',
      timeout: '1.5',
      attempts: '4',
      compensate_attempts: '10',
      backoff: '0.5',
      key: 'w',
      headers: '{"x-trace":"abc"}',
    });
    expect(sagaStepPolicySchema.parse(step)).toMatchObject({ attempts: 4, timeout: 1.5, compensate_command: 'release' });
    expect(body.branch_headers).toEqual({ tenant: 't1' });
    expect(body.custom_data).toBeUndefined();
  });

  it('writes custom_data for concurrent sagas, with 0-based branch orders', async () => {
    const concurrent = new Saga(dtm, 'g-concurrent')
      .add('http://a/1', 'http://a/1c', {})
      .add('rabbitmq://default/orders/ship', '', {})
      .enableConcurrent();
    expect(JSON.parse((await submitted(concurrent)).custom_data as string)).toEqual({ concurrent: true, orders: {} });

    const ordered = new Saga(dtm, 'g-ordered')
      .add('http://a/1', '', {})
      .add('http://a/2', '', {})
      .add('http://a/3', '', {})
      .addBranchOrder(2, [0, 1]);
    const data: unknown = JSON.parse((await submitted(ordered)).custom_data as string);
    expect(data).toEqual({ concurrent: true, orders: { '2': [0, 1] } });
    expect(sagaCustomDataSchema.safeParse(data).success).toBe(true);
  });

  it('rejects a bad policy at add(), and an order naming a missing step at submit(), before calling the coordinator', async () => {
    requests.length = 0;
    const bad = () => new Saga(dtm, 'g-bad').add('http://a/1', '', {}).add('http://a/2', '', {}, { attempts: 0 });
    expect(bad).toThrow(expect.objectContaining({ code: 'INVALID_REQUEST', field: 'steps.1.attempts' }) as Error);
    expect(() => new Saga(dtm, 'g-bad').addBranchOrder(-1, [])).toThrow(/not a step index/);
    const missing = new Saga(dtm, 'g-bad').add('http://a/1', '', {}).addBranchOrder(1, [0]);
    await expect(missing.submit()).rejects.toThrow(/step 1 does not exist/);
    expect(requests).toEqual([]);
  });

  it('turns the coordinator’s error answer into a ConcordError', async () => {
    answer = { status: 409, body: { code: 'GID_CONFLICT', message: 'gid g-dup exists with other steps', dtm_result: 'FAILURE' } };
    try {
      const error: unknown = await new Saga(dtm, 'g-dup')
        .add('http://a/1', '', {})
        .submit()
        .catch((e: unknown) => e);
      expect(isConcordError(error) && error.code).toBe('GID_CONFLICT');
    } finally {
      answer = { status: 200, body: { dtm_result: 'SUCCESS' } };
    }
  });
});
