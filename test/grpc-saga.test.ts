/**
 * Sagas whose steps are gRPC methods (DTM's host:port/package.Service/Method), submitted over the
 * HTTP API, against a real coordinator process, real Postgres, real gRPC servers built with the
 * SDK's adapter and a real HTTP service: success, rollback on Aborted, retries on Unavailable,
 * Internal and FailedPrecondition, and a saga mixing HTTP and gRPC steps.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchFailure, BranchOngoing, fastifyBranch } from '../sdk/index.js';
import { freePort, inProcessCoordinator, type TestCoordinator } from './helpers/coordinator.js';
import { freshStore } from './helpers/db.js';
import { startRecordingBusi, type RecordingBusi } from './helpers/grpc-server.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

let coordinator: TestCoordinator;
let busi: RecordingBusi;
let http: FastifyInstance;
let httpUrl = '';
/** Calls of the HTTP steps: gid, path, op, body. */
const httpCalls: { gid: string; path: string; op: string; body: unknown }[] = [];

beforeAll(async () => {
  busi = await startRecordingBusi();
  http = Fastify();
  for (const path of ['/Reserve', '/Release', '/Charge'])
    http.post(
      path,
      fastifyBranch(async ({ barrier, body }) => {
        httpCalls.push({ gid: barrier.call.gid, path, op: barrier.call.op, body });
        if (path === '/Charge') throw new BranchFailure('card declined');
      }),
    );
  httpUrl = await http.listen({ port: 0, host: '127.0.0.1' });
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
}, 120_000);
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
  await busi?.close();
  await http?.close();
});

const gid = () => `grpc-saga-${randomUUID()}`;
const step = (action: string, compensate: string) => ({ action: busi.server.url(action), compensate: busi.server.url(compensate) });
const transfer = (g: string, extra: Record<string, unknown> = {}) => ({
  gid: g,
  trans_type: 'saga',
  steps: [step('TransOut', 'TransOutRevert'), step('TransIn', 'TransInRevert')],
  payloads: ['{"amount":30,"from":"alice"}', '{"amount":30,"to":"bob"}'],
  ...extra,
});
const methodsOf = (g: string) => busi.callsOf(g).map((c) => `${c.method}:${c.metadata['dtm-op']}:${c.metadata['dtm-branch_id']}`);

describe('saga with gRPC steps', () => {
  it('succeeds: each action gets its bytes and op action', async () => {
    const g = gid();
    expect((await post(`${coordinator.dtm}/submit`, transfer(g))).status).toBe(200);
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(methodsOf(g)).toEqual(['TransOut:action:01', 'TransIn:action:02']);
    expect(busi.callsOf(g, 'TransIn')[0]?.body.toString()).toBe('{"amount":30,"to":"bob"}');
    expect(busi.callsOf(g, 'TransIn')[0]?.metadata['dtm-trans_type']).toBe('saga');
  });

  it('rolls back when a step answers Aborted: the tried steps are compensated in reverse order', async () => {
    const g = gid();
    busi.script.set(g, (method) => (method === 'TransIn' ? new BranchFailure('account closed') : undefined));
    await post(`${coordinator.dtm}/submit`, transfer(g));
    await waitForStatus(coordinator.dtm, g, 'failed');
    expect(methodsOf(g)).toEqual([
      'TransOut:action:01',
      'TransIn:action:02',
      'TransInRevert:compensate:02',
      'TransOutRevert:compensate:01',
    ]);
    expect(busi.callsOf(g, 'TransOutRevert')[0]?.body.toString()).toBe('{"amount":30,"from":"alice"}');
    const view = await query(coordinator.dtm, g);
    expect(view.branches.find((b) => b.branch_id === '02' && b.op === 'action')?.last_error).toMatch(
      /answered FAILURE: gRPC ABORTED account closed$/,
    );
  });

  it('retries a step answering Internal, then FailedPrecondition (ongoing), until it answers OK', async () => {
    const g = gid();
    busi.script.set(g, (method, n) =>
      method !== 'TransIn' ? undefined : n === 1 ? new Error('db down') : n === 2 ? new BranchOngoing() : undefined,
    );
    await post(`${coordinator.dtm}/submit`, transfer(g));
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(methodsOf(g)).toEqual(['TransOut:action:01', 'TransIn:action:02', 'TransIn:action:02', 'TransIn:action:02']);
  });

  it('retries a step whose server is unavailable until it is up', async () => {
    const port = await freePort();
    const g = gid();
    const down = `127.0.0.1:${port}/busi.Busi/TransIn`;
    await post(`${coordinator.dtm}/submit`, {
      ...transfer(g),
      steps: [step('TransOut', 'TransOutRevert'), { action: down, compensate: '' }],
    });
    await expect
      .poll(async () => (await query(coordinator.dtm, g)).branches.find((b) => b.branch_id === '02' && b.op === 'action'), {
        timeout: 20_000,
      })
      .toMatchObject({ attempts: expect.any(Number) as number, last_error: expect.stringMatching(/^gRPC UNAVAILABLE/) as string });
    const late = await startRecordingBusi(port);
    try {
      await waitForStatus(coordinator.dtm, g, 'succeed');
      expect(late.callsOf(g, 'TransIn')).toHaveLength(1);
      expect((await query(coordinator.dtm, g)).transaction?.status).toBe('succeed');
    } finally {
      await late.close();
    }
  });
});

describe('a saga mixing HTTP and gRPC steps', () => {
  const mixed = (g: string, last: 'Charge' | 'Reserve') => ({
    gid: g,
    trans_type: 'saga',
    steps: [
      { action: `${httpUrl}/Reserve`, compensate: `${httpUrl}/Release` },
      step('TransOut', 'TransOutRevert'),
      { action: `${httpUrl}/${last}`, compensate: `${httpUrl}/Release` },
    ],
    payloads: ['{"sku":"a1"}', '{"amount":30}', '{"card":"4242"}'],
    branch_headers: { 'x-tenant': 'acme' },
  });

  it('runs HTTP and gRPC steps in order and succeeds', async () => {
    const g = gid();
    await post(`${coordinator.dtm}/submit`, mixed(g, 'Reserve'));
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(httpCalls.filter((c) => c.gid === g).map((c) => `${c.path}:${c.op}`)).toEqual(['/Reserve:action', '/Reserve:action']);
    expect(httpCalls.find((c) => c.gid === g)?.body).toEqual({ sku: 'a1' });
    expect(methodsOf(g)).toEqual(['TransOut:action:02']);
    expect(busi.callsOf(g)[0]?.metadata['x-tenant']).toBe('acme');
  });

  it('an HTTP step answering 409 compensates the gRPC step and the HTTP one', async () => {
    const g = gid();
    await post(`${coordinator.dtm}/submit`, mixed(g, 'Charge'));
    await waitForStatus(coordinator.dtm, g, 'failed');
    expect(methodsOf(g)).toEqual(['TransOut:action:02', 'TransOutRevert:compensate:02']);
    expect(httpCalls.filter((c) => c.gid === g && c.op === 'compensate').map((c) => c.path)).toContain('/Release');
  });
});
