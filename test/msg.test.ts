/** Two-phase messages end to end: a real coordinator process, a real bank service, real Postgres. */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchFailure, Msg, MsgBatch, MsgCoalescer } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

let coordinator: TestCoordinator;
let bank: BankService;

beforeAll(async () => {
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
  bank = await startBankService(await freshDatabase());
});
afterAll(async () => {
  await bank?.close();
  expect(await coordinator?.stop()).toBe(0);
});

const gid = () => `t-${randomUUID()}`;

describe('two-phase message', () => {
  it('delivers a message after the local transaction committed (happy path)', async () => {
    const g = gid();
    const msg = new Msg(coordinator.dtm, g).add(`${bank.url}/TransIn`, { amount: 30 });
    await msg.doAndSubmit<void, pg.PoolClient>(`${bank.url}/QueryPrepared`, bank.pool, async (tx) => {
      await tx.query('insert into transfers (gid, kind, amount) values ($1, $2, $3)', [g, 'out', 30]);
    });
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(bank.received(g, '/TransIn')).toBe(1);
    expect(await bank.effects(g)).toBe(2);
    const view = await query(coordinator.dtm, g);
    expect(view.branches).toMatchObject([{ branch_id: '01', op: 'action', status: 'succeed', attempts: 1 }]);
  });

  it('runs on a store pool of one connection (migrations included: they take no second one)', async () => {
    const small = await inProcessCoordinator({ store: await freshDatabase(), env: { ...fastCoordinator, CONCORD_STORE_POOL_SIZE: '1' } });
    try {
      const g = gid();
      await new Msg(small.dtm, g).add(`${bank.url}/TransIn`, { amount: 7 }).submit();
      await waitForStatus(small.dtm, g, 'succeed');
      expect(bank.received(g, '/TransIn')).toBe(1);
    } finally {
      await small.stop();
    }
  });

  it('retries a branch that errors, answers ONGOING or FAILURE, until it succeeds', async () => {
    const g = gid();
    bank.failNext('/TransOut', 3, 'error');
    const msg = new Msg(coordinator.dtm, g).add(`${bank.url}/TransOut`, { amount: 5 }).add(`${bank.url}/TransIn`, { amount: 5 });
    await msg.submit();
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(bank.received(g, '/TransOut')).toBe(4);
    expect(bank.received(g, '/TransIn')).toBe(1); // in order: TransIn only after TransOut succeeded
    expect(await bank.effects(g)).toBe(2);
    const view = await query(coordinator.dtm, g);
    expect(view.transaction?.retry_count).toBe(3);
    expect(view.branches[0]).toMatchObject({ status: 'succeed', attempts: 4 });

    const g2 = gid();
    bank.failNext('/TransIn', 1, 'ongoing');
    await new Msg(coordinator.dtm, g2).add(`${bank.url}/TransIn`, { amount: 1 }).submit();
    await waitForStatus(coordinator.dtm, g2, 'succeed');
    expect(bank.received(g2, '/TransIn')).toBe(2);

    // A message branch answering FAILURE is retried too (DTM: a message cannot be rolled back).
    const g3 = gid();
    bank.failNext('/TransIn', 1, 'failure');
    await new Msg(coordinator.dtm, g3).add(`${bank.url}/TransIn`, { amount: 1 }).submit();
    await waitForStatus(coordinator.dtm, g3, 'succeed');
    expect(bank.received(g3, '/TransIn')).toBe(2);
  });

  it('aborts and never delivers when the local transaction fails', async () => {
    const g = gid();
    const msg = new Msg(coordinator.dtm, g).add(`${bank.url}/TransIn`, { amount: 30 });
    await expect(
      msg.doAndSubmit(`${bank.url}/QueryPrepared`, bank.pool, async () => {
        throw new BranchFailure('insufficient balance');
      }),
    ).rejects.toThrow('insufficient balance');
    const view = await query(coordinator.dtm, g);
    expect(view.transaction).toMatchObject({ status: 'failed', rollback_reason: 'insufficient balance' });
    expect(bank.received(g, '/TransIn')).toBe(0);
    expect(await bank.effects(g)).toBe(0);
  });

  it('answers submit after delivery with wait_result, and 425 while a branch keeps failing', async () => {
    const g = gid();
    await new Msg(coordinator.dtm, g, { waitResult: true }).add(`${bank.url}/TransIn`, { amount: 1 }).submit();
    expect((await query(coordinator.dtm, g)).transaction?.status).toBe('succeed');

    bank.failNext('/TransOut', 1, 'error');
    const g2 = gid();
    const res = await post(`${coordinator.dtm}/submit`, {
      gid: g2,
      trans_type: 'msg',
      wait_result: true,
      steps: [{ action: `${bank.url}/TransOut` }],
      payloads: ['{"amount":1}'],
    });
    expect(res).toMatchObject({ status: 425, body: { code: 'TRANSACTION_ONGOING', dtm_result: 'ONGOING' } });
    await waitForStatus(coordinator.dtm, g2, 'succeed');
  });

  it('holds a delayed message until its delay has passed', async () => {
    const g = gid();
    await new Msg(coordinator.dtm, g, { delay: 1 }).add(`${bank.url}/TransIn`, { amount: 1 }).submit();
    expect((await query(coordinator.dtm, g)).transaction?.status).toBe('submitted');
    expect(bank.received(g, '/TransIn')).toBe(0);
    await waitForStatus(coordinator.dtm, g, 'succeed');
    const t = (await query(coordinator.dtm, g)).transaction!;
    expect(Date.parse(t.finish_time!) - Date.parse(t.create_time)).toBeGreaterThanOrEqual(1000);
  });

  it('sends branch headers and DTM query parameters with each call', async () => {
    const g = gid();
    const seen: Record<string, string>[] = [];
    const { default: Fastify } = await import('fastify');
    const echo = Fastify();
    echo.post('/hook', async (request) => {
      seen.push({
        ...(request.query as Record<string, string>),
        header: String(request.headers['x-tenant']),
        body: JSON.stringify(request.body),
      });
      return { dtm_result: 'SUCCESS' };
    });
    const url = await echo.listen({ port: 0, host: '127.0.0.1' });
    try {
      await new Msg(coordinator.dtm, g, { branchHeaders: { 'x-tenant': 'acme' }, waitResult: true })
        .add(`${url}/hook?keep=1`, { amount: 7 })
        .submit();
      expect(seen).toEqual([{ keep: '1', gid: g, trans_type: 'msg', branch_id: '01', op: 'action', header: 'acme', body: '{"amount":7}' }]);
    } finally {
      await echo.close();
    }
  });
});

describe('submit after its own prepare', () => {
  /** An HTTP proxy in front of the coordinator that keeps the body of every submit it forwards. */
  async function recordingProxy() {
    const submits: Record<string, unknown>[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        const parsed = body ? (JSON.parse(body) as Record<string, unknown>) : {};
        if (req.url!.endsWith('/msg/submit')) submits.push(...(parsed.transactions as Record<string, unknown>[]));
        else if (req.url!.endsWith('/submit')) submits.push(parsed);
        void fetch(`${coordinator.url}${req.url}`, {
          method: req.method,
          headers: { 'content-type': 'application/json' },
          body: body || undefined,
        })
          .then(async (answer) => res.writeHead(answer.status, { 'content-type': 'application/json' }).end(await answer.text()))
          .catch(() => res.writeHead(502).end());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    return { dtm: `http://127.0.0.1:${port}/api/dtmsvr`, submits, close: () => new Promise((resolve) => server.close(resolve)) };
  }

  it('sends the submit without steps or payloads (stored at prepare), alone, coalesced and batched, and delivers the payload', async () => {
    const proxy = await recordingProxy();
    try {
      const single = gid();
      const business = (g: string) => async (tx: pg.PoolClient) => {
        await tx.query('insert into transfers (gid, kind, amount) values ($1, $2, $3)', [g, 'out', 3]);
      };
      // wait_result still travels with the submit: it answers after the delivery.
      await new Msg(proxy.dtm, single, { waitResult: true })
        .add(`${bank.url}/TransIn`, { amount: 3 })
        .doAndSubmit<void, pg.PoolClient>(`${bank.url}/QueryPrepared`, bank.pool, business(single));
      expect(bank.received(single, '/TransIn')).toBe(1);
      const coalescer = new MsgCoalescer(proxy.dtm);
      const together = [gid(), gid(), gid()];
      await Promise.all(
        together.map((g) =>
          new Msg(proxy.dtm, g, { coalescer })
            .add(`${bank.url}/TransIn`, { amount: 3 })
            .doAndSubmit<void, pg.PoolClient>(`${bank.url}/QueryPrepared`, bank.pool, business(g)),
        ),
      );
      // MsgBatch: one local transaction for two messages.
      const batched = [gid(), gid()];
      const batch = new MsgBatch(proxy.dtm);
      for (const g of batched) batch.add(new Msg(proxy.dtm, g).add(`${bank.url}/TransIn`, { amount: 3 }));
      await batch.doAndSubmit<void, pg.PoolClient>(`${bank.url}/QueryPrepared`, bank.pool, business(batched[0]!));
      for (const g of [...together, ...batched]) await waitForStatus(coordinator.dtm, g, 'succeed');
      expect([...together, ...batched].map((g) => bank.received(g, '/TransIn'))).toEqual([1, 1, 1, 1, 1]);
      expect(proxy.submits.map((s) => s.gid).sort()).toEqual([single, ...together, ...batched].sort());
      for (const s of proxy.submits) {
        expect(s).not.toHaveProperty('steps');
        expect(s).not.toHaveProperty('payloads');
        expect(s).toMatchObject({ trans_type: 'msg', query_prepared: `${bank.url}/QueryPrepared` });
      }
      expect(proxy.submits.find((s) => s.gid === single)).toMatchObject({ wait_result: true });
    } finally {
      await proxy.close();
    }
  });

  it('still sends the steps with a submit that comes alone (it creates the message)', async () => {
    const proxy = await recordingProxy();
    try {
      const g = gid();
      await new Msg(proxy.dtm, g, { waitResult: true }).add(`${bank.url}/TransIn`, { amount: 4 }).submit();
      expect(proxy.submits).toMatchObject([{ gid: g, steps: [{ action: `${bank.url}/TransIn` }], payloads: ['{"amount":4}'] }]);
      expect(bank.received(g, '/TransIn')).toBe(1);
    } finally {
      await proxy.close();
    }
  });
});

describe('API contract', () => {
  const transfer = (g: string, amount = 1) => ({
    gid: g,
    trans_type: 'msg',
    steps: [{ action: `${bank.url}/TransIn` }],
    payloads: [JSON.stringify({ amount })],
  });

  it.each([
    [{ trans_type: 'msg' }, 'gid'],
    [{ gid: '', trans_type: 'msg' }, 'gid'],
    [{ gid: 'x'.repeat(129), trans_type: 'msg' }, 'gid'],
    [{ gid: 'a b', trans_type: 'msg' }, 'gid'],
    [{ gid: 'ok', trans_type: 'nope' }, 'trans_type'],
    [{ gid: 'ok', trans_type: 'msg', steps: [{ action: 5 }] }, 'steps.0.action'],
    [{ gid: 'ok', trans_type: 'msg', steps: [{ action: 'http://x/a' }], payloads: ['{}', '{}'] }, 'payloads'],
    [{ gid: 'ok', trans_type: 'msg', steps: [{ action: 'ftp://x/a' }], payloads: ['{}'] }, 'steps.0.action'],
    [{ gid: 'ok', trans_type: 'msg', steps: [] }, 'steps'],
    [{ gid: 'ok', trans_type: 'msg', timeout_to_fail: -1, steps: [{ action: 'http://x/a' }] }, 'timeout_to_fail'],
    [{ gid: 'ok', trans_type: 'msg', custom_data: '{nope', steps: [{ action: 'http://x/a' }] }, 'custom_data'],
    [{ gid: 'ok', trans_type: 'msg', custom_data: '{"delay":"soon"}', steps: [{ action: 'http://x/a' }] }, 'custom_data'],
    [{ gid: 'ok', trans_type: 'msg', protocol: 'grpc', steps: [{ action: 'http://x/a' }] }, 'protocol'],
    [{ gid: 'ok', trans_type: 'workflow', steps: [{ action: 'http://x/a' }] }, 'req_extra.status'],
  ])('rejects %j with a 4xx naming %s', async (body, field) => {
    const res = await post(`${coordinator.dtm}/submit`, body);
    expect(res.status).toBe(400);
    expect(res.body.field).toBe(field);
    expect(String(res.body.message)).toContain(field.split('.')[0]);
    expect(await query(coordinator.dtm, 'ok')).toMatchObject({ transaction: null, branches: [] });
  });

  it('rejects a body that is not JSON', async () => {
    const res = await post(`${coordinator.dtm}/prepare`, '{"gid": ');
    expect(res).toMatchObject({ status: 400, body: { code: 'INVALID_REQUEST' } });
  });

  it('treats a repeated prepare or submit as one, and a conflicting one as an error', async () => {
    const g = gid();
    expect((await post(`${coordinator.dtm}/prepare`, transfer(g))).status).toBe(200);
    expect((await post(`${coordinator.dtm}/prepare`, transfer(g))).status).toBe(200);
    expect(await post(`${coordinator.dtm}/prepare`, transfer(g, 2))).toMatchObject({
      status: 409,
      body: { code: 'GID_CONFLICT', dtm_result: 'FAILURE' },
    });
    expect((await post(`${coordinator.dtm}/submit`, transfer(g))).status).toBe(200);
    expect((await post(`${coordinator.dtm}/submit`, transfer(g))).status).toBe(200);
    expect((await post(`${coordinator.dtm}/submit`, { gid: g, trans_type: 'msg' })).status).toBe(200);
    expect(await post(`${coordinator.dtm}/submit`, transfer(g, 3))).toMatchObject({ status: 409, body: { code: 'GID_CONFLICT' } });
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(bank.received(g, '/TransIn')).toBe(1);
    expect(await post(`${coordinator.dtm}/prepare`, transfer(g))).toMatchObject({ status: 409, body: { code: 'INVALID_STATE' } });
    expect(await post(`${coordinator.dtm}/abort`, transfer(g))).toMatchObject({ status: 409, body: { code: 'INVALID_STATE' } });
    expect(await post(`${coordinator.dtm}/abort`, transfer(gid()))).toMatchObject({
      status: 404,
      body: { code: 'NOT_FOUND', field: 'gid' },
    });
  });

  it('keeps every submit of a burst of concurrent submits (group commit)', async () => {
    const gids = Array.from({ length: 200 }, gid);
    const answers = await Promise.all(gids.map((g) => post(`${coordinator.dtm}/submit`, transfer(g))));
    expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    for (const g of gids) await waitForStatus(coordinator.dtm, g, 'succeed');
    // At least once to the branch (a slow answer can time out and be retried), exactly once in effect.
    expect(gids.filter((g) => bank.received(g, '/TransIn') < 1)).toEqual([]);
    for (const g of gids) expect(await bank.effects(g)).toBe(1);
    const metrics = await (await fetch(`${coordinator.url}/api/metrics`)).text();
    expect(metrics).toMatch(/concord_store_batch_size_sum\{kind="submit"\} (\d+)/);
  });

  it('serves newGid, ping, health, metrics, version and the OpenAPI document', async () => {
    const newGid = (await (await fetch(`${coordinator.dtm}/newGid`)).json()) as { gid: string; dtm_result: string };
    expect(newGid.dtm_result).toBe('SUCCESS');
    expect(newGid.gid).toHaveLength(22);
    expect(await (await fetch(`${coordinator.url}/api/ping`)).json()).toEqual({ msg: 'pong' });
    expect(await (await fetch(`${coordinator.url}/api/health`)).json()).toEqual({ status: 'ok', store: 'postgres' });
    expect(await (await fetch(`${coordinator.url}/api/metrics`)).text()).toContain('concord_http_requests_total');
    const openapi = (await (await fetch(`${coordinator.url}/api/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(openapi.paths)).toEqual(expect.arrayContaining(['/api/dtmsvr/submit', '/api/dtmsvr/prepare', '/api/dtmsvr/query']));
    const all = (await (await fetch(`${coordinator.dtm}/all?limit=2`)).json()) as { transactions: unknown[]; next_position: string };
    expect(all.transactions).toHaveLength(2);
    expect(all.next_position).not.toBe('');
  });
});
