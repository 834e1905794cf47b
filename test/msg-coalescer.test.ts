/** The batched SDK path: concurrent Msg.doAndSubmit calls sharing coordinator requests through a MsgCoalescer. */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import pg from 'pg';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { BranchFailure, Msg, MsgCoalescer, isConcordError } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';

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

const gid = () => `coalesce-${randomUUID()}`;

/** Prepare, submit and abort requests the coordinator has answered so far, single or batched (its metrics). */
async function messageRequests(): Promise<number> {
  const text = await (await fetch(`${coordinator.url}/api/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^concord_http_requests_total\{[^}]*route="([^"]+)"[^}]*\} (\d+)/gm))
    if (/\/(prepare|submit|abort)$/.test(m[1]!)) n += Number(m[2]);
  return n;
}

function writer(coalescer: MsgCoalescer, id: string, business: (tx: pg.PoolClient) => Promise<void>) {
  return new Msg(coordinator.dtm, id, { coalescer })
    .add(`${bank.url}/TransIn`, { amount: 1 })
    .doAndSubmit<void, pg.PoolClient>(`${bank.url}/QueryPrepared`, bank.pool, business);
}

const insert = (id: string) => async (tx: pg.PoolClient) => {
  await tx.query('insert into transfers (gid, kind, amount) values ($1, $2, $3)', [id, 'out', 1]);
};

it('sends the prepares and submits of 40 concurrent writers in fewer requests than messages, and delivers each once', async () => {
  const coalescer = new MsgCoalescer(coordinator.dtm);
  const gids = Array.from({ length: 40 }, gid);
  const before = await messageRequests();
  await Promise.all(gids.map((g) => writer(coalescer, g, insert(g))));
  const requests = (await messageRequests()) - before;
  // One prepare and one submit each, alone, would be 80.
  expect(requests).toBeLessThan(gids.length);
  expect(coalescer.stats).toEqual({ requests, messages: 2 * gids.length });
  for (const g of gids) await waitForStatus(coordinator.dtm, g, 'succeed');
  expect(gids.map((g) => bank.received(g, '/TransIn'))).toEqual(new Array<number>(gids.length).fill(1));
  // Each in its own local transaction: its business row and its barrier row.
  const { rows } = await bank.pool.query<{ n: string }>(`select count(*)::text as n from transfers where gid = any($1) and kind = 'out'`, [
    gids,
  ]);
  expect(Number(rows[0]!.n)).toBe(gids.length);
});

it('never delivers a message whose local transaction rolled back, while its neighbours go out', async () => {
  const coalescer = new MsgCoalescer(coordinator.dtm);
  const [refused, failed, ok1, ok2] = [gid(), gid(), gid(), gid()];
  const results = await Promise.allSettled([
    writer(coalescer, refused, async (tx) => {
      await insert(refused)(tx);
      throw new BranchFailure('insufficient funds');
    }),
    // Not a BranchFailure: the SDK asks the check-back, which finds no barrier row and says rolled back.
    writer(coalescer, failed, async (tx) => {
      await insert(failed)(tx);
      throw new Error('lost the connection');
    }),
    writer(coalescer, ok1, insert(ok1)),
    writer(coalescer, ok2, insert(ok2)),
  ]);
  expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'fulfilled', 'fulfilled']);
  for (const g of [ok1, ok2]) await waitForStatus(coordinator.dtm, g, 'succeed');
  for (const g of [refused, failed]) await waitForStatus(coordinator.dtm, g, 'failed');
  expect([refused, failed, ok1, ok2].map((g) => bank.received(g, '/TransIn'))).toEqual([0, 0, 1, 1]);
  expect(await bank.effects(refused)).toBe(0);
});

it('fails only the message the coordinator refuses: an aborted gid and a malformed one, in one batch with others', async () => {
  const coalescer = new MsgCoalescer(coordinator.dtm);
  const aborted = gid();
  await new Msg(coordinator.dtm, aborted).add(`${bank.url}/TransIn`, { amount: 1 }).prepare(`${bank.url}/QueryPrepared`);
  await new Msg(coordinator.dtm, aborted).abort('changed my mind');
  const malformed = `${gid()} with spaces`;
  const good = Array.from({ length: 6 }, gid);
  const all = [aborted, malformed, ...good];
  const results = await Promise.allSettled(all.map((g) => writer(coalescer, g, insert(g))));
  const codes = results.map((r) => (r.status === 'fulfilled' ? 'ok' : isConcordError(r.reason) ? r.reason.code : String(r.reason)));
  expect(codes).toEqual(['INVALID_STATE', 'INVALID_REQUEST', ...good.map(() => 'ok')]);
  for (const g of good) await waitForStatus(coordinator.dtm, g, 'succeed');
  expect(good.map((g) => bank.received(g, '/TransIn'))).toEqual(good.map(() => 1));
  expect(bank.received(aborted, '/TransIn')).toBe(0);
  // The refused prepares stored nothing new and committed no local change.
  expect((await query(coordinator.dtm, aborted)).transaction?.status).toBe('failed');
  expect(await bank.effects(aborted)).toBe(0);
});

it('sends a lone message at once, as the DTM request itself', async () => {
  const coalescer = new MsgCoalescer(coordinator.dtm);
  const g = gid();
  await writer(coalescer, g, insert(g));
  expect(coalescer.stats).toEqual({ requests: 2, messages: 2 });
  await waitForStatus(coordinator.dtm, g, 'succeed');
  expect(bank.received(g, '/TransIn')).toBe(1);
});

it("keeps each writer's own trace context, though their messages share one request", async () => {
  // A branch that notes the traceparent each message arrives with.
  const seen = new Map<string, string | undefined>();
  const branch = createServer((req, res) => {
    seen.set(new URL(req.url ?? '', 'http://x').searchParams.get('gid') ?? '', req.headers.traceparent as string | undefined);
    res.setHeader('content-type', 'application/json').end('{"dtm_result":"SUCCESS"}');
  });
  await new Promise<void>((resolve) => branch.listen(0, '127.0.0.1', resolve));
  const address = branch.address() as { port: number };
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const provider = new BasicTracerProvider();
  trace.setGlobalTracerProvider(provider);
  try {
    const coalescer = new MsgCoalescer(coordinator.dtm);
    const tracer = trace.getTracer('test');
    const sent = await Promise.all(
      [gid(), gid()].map((g) =>
        tracer.startActiveSpan(`checkout ${g}`, async (span) => {
          await new Msg(coordinator.dtm, g, { coalescer })
            .add(`http://127.0.0.1:${address.port}/event`, { g })
            .doAndSubmit(`${bank.url}/QueryPrepared`, bank.pool, async () => undefined);
          span.end();
          return { gid: g, span: span.spanContext() };
        }),
      ),
    );
    expect(coalescer.stats.requests).toBeLessThan(coalescer.stats.messages);
    await vi.waitFor(() => expect(seen.size).toBe(2), { timeout: 20_000 });
    // Two root spans, two traces; each message's delivery continues its own (the in-process coordinator adds its span).
    expect(sent[0]!.span.traceId).not.toBe(sent[1]!.span.traceId);
    for (const { gid: g, span } of sent) expect(seen.get(g)?.split('-')[1]).toBe(span.traceId);
  } finally {
    await provider.shutdown();
    trace.disable();
    propagation.disable();
    context.disable();
    branch.close();
  }
});
