/**
 * Branches of DTM's gRPC form (host:port/package.Service/Method) submitted over the HTTP API, against
 * a real coordinator process, real Postgres and real gRPC servers built with the SDK's adapter:
 * the request bytes and DTM's metadata arriving, the status codes read as DTM reads them, and bad
 * gRPC targets refused before anything is stored.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { Client, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { payloadBytes } from '../schemas/payload-bytes.js';
import { BranchFailure, BranchOngoing } from '../sdk/index.js';
import { inProcessCoordinator, type TestCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { startRecordingBusi, type RecordingBusi } from './helpers/grpc-server.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

let coordinator: TestCoordinator;
let store: pg.Pool;
let busi: RecordingBusi;
const callsOf = (gid: string, method?: string) => busi.callsOf(gid, method);

beforeAll(async () => {
  busi = await startRecordingBusi();
  const storeUrl = await freshDatabase();
  coordinator = await inProcessCoordinator({ store: storeUrl, env: fastCoordinator });
  store = new pg.Pool({ connectionString: storeUrl, max: 1 });
}, 120_000);
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
  await busi?.close();
  await store?.end();
});

describe('payload bytes', () => {
  it('a gRPC-created transaction stores base64 and sends the bytes; an HTTP-created one sends its text', () => {
    const bytes = Buffer.from([0x0a, 0x00, 0xff, 0x10, 0x1e]);
    expect(payloadBytes('grpc', bytes.toString('base64'))).toEqual(bytes);
    expect(payloadBytes('http', '{"amount":30}')).toBe('{"amount":30}');
  });
});

describe('two-phase message with gRPC branches', () => {
  it('sends the bytes of a gRPC-created transaction unchanged, NUL included, to gRPC and HTTP branches', async () => {
    // What the coordinator's gRPC API stores (protocol grpc, data = base64 of the bytes), made here
    // from a prepared message so that only the delivery is under test.
    const gid = `grpc-bytes-${randomUUID()}`;
    const bytes = Buffer.from([0x0a, 0x05, 0x61, 0x00, 0x62, 0xff, 0xfe, 0x10, 0x00]);
    let httpBody: Buffer | undefined;
    const http = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        httpBody = Buffer.concat(chunks);
        res.end('{"dtm_result":"SUCCESS"}');
      });
    }).listen(0, '127.0.0.1');
    await new Promise((r) => http.once('listening', r));
    const httpUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}/TransIn`;
    try {
      const body = { gid, trans_type: 'msg', steps: [{ action: busi.server.url('TransIn') }, { action: httpUrl }], payloads: ['x', 'y'] };
      expect((await post(`${coordinator.dtm}/prepare`, body)).status).toBe(200);
      await store.query(`update trans_global set protocol = 'grpc' where gid = $1`, [gid]);
      await store.query(`update trans_branch_op set data = $2 where gid = $1`, [gid, bytes.toString('base64')]);
      expect((await post(`${coordinator.dtm}/submit`, body)).status).toBe(200);
      await waitForStatus(coordinator.dtm, gid, 'succeed');
      expect(callsOf(gid, 'TransIn')[0]?.body).toEqual(bytes);
      expect(httpBody).toEqual(bytes);
    } finally {
      http.close();
    }
  });

  it('delivers the payload as the request bytes, with DTM metadata and the branch headers', async () => {
    const gid = `grpc-msg-${randomUUID()}`;
    const payloads = ['{"amount":30,"note":"zwölf €"}', ''];
    const res = await post(`${coordinator.dtm}/submit`, {
      gid,
      trans_type: 'msg',
      steps: [{ action: busi.server.url('TransIn'), headers: JSON.stringify({ 'x-step': 'one' }) }, { action: busi.server.url('Notify') }],
      payloads,
      branch_headers: { 'X-Tenant': 'acme', authorization: 'Bearer t0k' },
    });
    expect(res.status).toBe(200);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    const [transIn] = callsOf(gid, 'TransIn');
    expect(transIn?.body).toEqual(Buffer.from(payloads[0]!, 'utf8'));
    expect(transIn?.metadata).toMatchObject({
      'dtm-gid': gid,
      'dtm-trans_type': 'msg',
      'dtm-branch_id': '01',
      'dtm-op': 'action',
      'dtm-dtm': '',
      'x-tenant': 'acme',
      authorization: 'Bearer t0k',
      'x-step': 'one',
    });
    const [notify] = callsOf(gid, 'Notify');
    expect(notify?.body).toEqual(Buffer.alloc(0));
    expect(notify?.metadata).toMatchObject({ 'dtm-branch_id': '02', 'x-tenant': 'acme' });
    expect(notify?.metadata['x-step']).toBeUndefined();
  });

  it('retries a branch answering Internal or FailedPrecondition until it answers OK', async () => {
    const gid = `grpc-msg-${randomUUID()}`;
    const answers = [new Error('boom'), new BranchOngoing('not yet')]; // the adapter answers Internal, then FailedPrecondition
    busi.script.set(gid, (_m, n) => answers[n - 1]);
    expect(
      (
        await post(`${coordinator.dtm}/submit`, {
          gid,
          trans_type: 'msg',
          steps: [{ action: busi.server.url('TransIn') }],
          payloads: ['x'],
        })
      ).status,
    ).toBe(200);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(callsOf(gid, 'TransIn')).toHaveLength(3);
  });

  it('keeps retrying a message branch answering Aborted (a message cannot fail after submit)', async () => {
    const gid = `grpc-msg-${randomUUID()}`;
    busi.script.set(gid, (_m, n) => (n <= 2 ? new BranchFailure('no') : undefined));
    await post(`${coordinator.dtm}/submit`, { gid, trans_type: 'msg', steps: [{ action: busi.server.url('TransIn') }], payloads: ['x'] });
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(callsOf(gid, 'TransIn')).toHaveLength(3);
  });
});

describe('bad gRPC targets', () => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['no port', { steps: [{ action: 'localhost/busi.Busi/TransIn' }] }, 'steps.0.action', /host and a port/],
    ['a port out of range', { steps: [{ action: '127.0.0.1:70000/busi.Busi/TransIn' }] }, 'steps.0.action', /port 70000/],
    ['no method', { steps: [{ action: '127.0.0.1:5000/busi.Busi' }] }, 'steps.0.action', /package\.Service\/Method/],
    [
      'a bad check-back',
      { steps: [{ action: 'http://127.0.0.1:9/x' }], query_prepared: '127.0.0.1:5000/busi Busi/Q' },
      'query_prepared',
      /query_prepared/,
    ],
    ['a cloud metadata address', { steps: [{ action: '169.254.169.254:80/busi.Busi/TransIn' }] }, 'steps.0.action', /destination policy/],
    [
      'metadata gRPC cannot carry',
      { steps: [{ action: '127.0.0.1:5000/busi.Busi/TransIn' }], branch_headers: { 'x-name': 'zwölf' } },
      'branch_headers',
      /printable ASCII/,
    ],
  ];
  it.each(cases)('%s is refused with 400 naming the field, and nothing is stored', async (_name, body, field, message) => {
    const gid = `grpc-bad-${randomUUID()}`;
    const res = await post(`${coordinator.dtm}/prepare`, { gid, trans_type: 'msg', ...body });
    expect(res.status).toBe(400);
    expect(res.body.field).toBe(field);
    expect(String(res.body.message)).toMatch(message);
    expect((await query(coordinator.dtm, gid)).transaction).toBeNull();
  });
});

describe('the SDK adapter', () => {
  const call = (metadata: Metadata) =>
    new Promise<ServiceError | null>((resolve) => {
      const client = new Client(busi.server.address, credentials.createInsecure());
      const raw = (b: Buffer) => b;
      client.makeUnaryRequest('/busi.Busi/TransIn', raw, raw, Buffer.from('x'), metadata, (err) => {
        client.close();
        resolve(err);
      });
    });

  it('answers a call without DTM metadata with InvalidArgument naming the entry', async () => {
    const err = await call(new Metadata());
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/^metadata dtm-gid/);
  });

  it('maps BranchFailure to Aborted and BranchOngoing to FailedPrecondition', async () => {
    const metadata = (gid: string) => {
      const m = new Metadata();
      for (const [k, v] of Object.entries({ 'dtm-gid': gid, 'dtm-trans_type': 'saga', 'dtm-branch_id': '01', 'dtm-op': 'action' }))
        m.set(k, v);
      return m;
    };
    busi.script.set('sdk-failure', () => new BranchFailure('no funds'));
    busi.script.set('sdk-ongoing', () => new BranchOngoing('later'));
    expect(await call(metadata('sdk-failure'))).toMatchObject({ code: status.ABORTED, details: 'no funds' });
    expect(await call(metadata('sdk-ongoing'))).toMatchObject({ code: status.FAILED_PRECONDITION, details: 'later' });
    expect(await call(metadata('sdk-ok'))).toBeNull();
  });
});
