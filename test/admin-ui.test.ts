/**
 * The admin UI in a real browser (Debian's Chromium driven by puppeteer-core) against a real
 * coordinator with an operator token, real Postgres and a real saga participant: the token gate,
 * the list with its counts, filters and paging, one transaction's timeline and payload, and a
 * redrive confirmed in the page and checked through the API. Screenshots go to test-artifacts/.
 */
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';
import { startSagaService, type SagaService } from './helpers/saga-service.js';
import { chromiumPath } from './services/chromium.js';
import pg from 'pg';
import type { Server } from 'node:http';
import { receiver, type Received } from './helpers/outbox.js';
import { Kafka, logLevel } from 'kafkajs';
import { consume } from '../sdk/index.js';

/** Two operators, alice and bob, each with a token: each action is recorded under its operator's name. */
const operatorToken = 'admin-ui-operator-token-0123';
const bobToken = 'admin-ui-bob-operator-token-0123';
const apiToken = 'admin-ui-api-token-0123456789';
const artifacts = 'test-artifacts/admin-ui';
const run = randomUUID().slice(0, 8);
const gids = { succeeded: `ui-${run}-ok`, failed: `ui-${run}-failed`, attention: `ui-${run}-attention`, stuck: `ui-${run}-stuck` };

let service: SagaService;
let coordinator: RunningCoordinator;
let browser: Browser;
let page: Page;
/** The outbox's destination, refusing (409) until the redrive test. */
let refusing = true;
let events: { url: string; got: Received[]; server: Server };
/** Uncaught exceptions in the page: none expected. */
const pageErrors: string[] = [];
/** The DTM API with the operator token in the path, so the shared helpers work unchanged. */
let dtm: string;

/** A two-step saga on the test service; `backoff` is each step's first retry delay in seconds. */
function sagaBody(gid: string, payload: Record<string, unknown>, backoff = '0.05') {
  return {
    gid,
    trans_type: 'saga',
    steps: ['s1', 's2'].map((s) => ({
      action: service.stepUrl(s, 'action'),
      compensate: service.stepUrl(s, 'compensate'),
      backoff,
    })),
    payloads: [JSON.stringify(payload), JSON.stringify({ step: 2 })],
  };
}

/** waitForStatus for beforeAll, where expect.poll is not allowed. */
const settle = (gid: string, status: string) =>
  vi.waitFor(async () => expect((await query(dtm, gid)).transaction?.status).toBe(status), { timeout: 30_000, interval: 100 });

const shot = (name: string) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
/** Empties a text field as a user does (select all, delete), so the page sees the input events. */
async function clear(selector: string) {
  await page.click(selector, { count: 3 });
  await page.keyboard.press('Backspace');
}
/** The gids in the list as the page shows them. */
/** The operator actions on this page's transaction or outbox, as shown: action and operator, newest first. */
const history = async (within: string) =>
  (await page.evaluate(
    `[...document.querySelectorAll('${within} .history tbody tr')].map((row) => [row.dataset.action, row.querySelector('.operator').textContent])`,
  )) as [string, string][];
/** The same through the admin API. */
async function recorded(kind: string, subject: string) {
  const url = `${coordinator.url}/t/${bobToken}/api/concord/admin/actions?kind=${kind}&subject=${encodeURIComponent(subject)}`;
  return ((await (await fetch(url)).json()) as { actions: { action: string; operator: string; detail: string; at: string }[] }).actions;
}
const listed = async () =>
  (await page.evaluate("[...document.querySelectorAll('#transactions tbody tr')].map((row) => row.dataset.gid)")) as string[];

beforeAll(async () => {
  await mkdir(artifacts, { recursive: true });
  service = await startSagaService(await freshDatabase());
  // An outbox whose two rows the destination refuses: they park.
  events = await receiver(() => refusing);
  const outboxUrl = await freshDatabase();
  const outboxDb = new pg.Client({ connectionString: outboxUrl });
  await outboxDb.connect();
  await outboxDb.query(`create table refused_outbox (id bigserial primary key, body text not null, published_at timestamptz);
    insert into refused_outbox (body) values ('first'), ('second')`);
  await outboxDb.end();
  const outboxes = [
    {
      database: outboxUrl,
      table: 'refused_outbox',
      name: 'refused',
      destination: events.url,
      payloadColumn: 'body',
      published: 'flag',
      publishedColumn: 'published_at',
    },
  ];
  coordinator = await startCoordinator({
    store: await freshDatabase(),
    env: {
      ...fastCoordinator,
      CONCORD_COMPENSATE_ATTEMPTS: '2',
      // Lets a step's backoff of minutes stand, so that only "retry now" can call it again soon.
      CONCORD_MAX_RETRY_INTERVAL: '600',
      CONCORD_OPERATOR_TOKENS: `alice:${operatorToken},bob:${bobToken}`,
      CONCORD_OUTBOXES: JSON.stringify(outboxes),
      // The operator actions' log lines (who, when) are info, the default level outside tests.
      CONCORD_LOG_LEVEL: 'info',
      CONCORD_API_TOKENS: apiToken,
      // Kafka's "default" (used by a test below) and a RabbitMQ connection nothing uses.
      CONCORD_KAFKA_BROKERS: inject('kafkaBrokers'),
      CONCORD_CONNECTIONS: JSON.stringify({ jobs: { kind: 'rabbitmq', url: 'amqp://guest:guest@127.0.0.1:1' } }),
    },
  });
  dtm = `${coordinator.url}/t/${operatorToken}/api/dtmsvr`;
  // One saga succeeds, one rolls back (failed), one's compensation keeps failing (needs_attention).
  service.failNext('s2', 'action', 1, 'failure');
  expect((await post(`${dtm}/submit`, sagaBody(gids.failed, { step: 1 }))).status).toBe(200);
  await settle(gids.failed, 'failed');
  expect((await post(`${dtm}/submit`, sagaBody(gids.succeeded, { step: 1 }))).status).toBe(200);
  await settle(gids.succeeded, 'succeed');
  service.failNext('s2', 'action', 1, 'failure');
  service.failAlways('s1', 'compensate', 'error');
  expect((await post(`${dtm}/submit`, sagaBody(gids.attention, { step: 1, note: 'shown on request' }))).status).toBe(200);
  await settle(gids.attention, 'needs_attention');
  browser = await puppeteer.launch({ executablePath: await chromiumPath(), args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on('pageerror', (error) => pageErrors.push(String(error)));
}, 900_000);

afterAll(async () => {
  await browser?.close();
  events?.server.close();
  await service?.close();
  expect(await coordinator?.stop()).toBe(0);
});

describe('the admin UI', () => {
  it('is served without a token, with a strict content security policy, and nothing but its own files', async () => {
    const index = await fetch(`${coordinator.url}/admin/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toMatch(/^text\/html/);
    expect(index.headers.get('content-security-policy')).toMatch(/script-src 'self' 'sha256-[^']+'; frame-ancestors 'none'/);
    expect((await fetch(`${coordinator.url}/admin/vendor/preact.mjs`)).headers.get('content-type')).toMatch(/^text\/javascript/);
    expect((await fetch(`${coordinator.url}/admin/vendor%2F..%2F..%2F..%2Fpackage.json`)).status).toBe(404);
    expect((await fetch(`${coordinator.url}/admin/nothing.js`)).status).toBe(404);
    const bare = await fetch(`${coordinator.url}/admin`, { redirect: 'manual' });
    expect(bare.status).toBe(302);
    expect(bare.headers.get('location')).toBe('admin/');
    // The data it shows asks for a token.
    expect((await fetch(`${coordinator.url}/api/concord/admin/counts`)).status).toBe(401);
  });

  it('asks for an operator token and refuses an API token', async () => {
    await page.goto(`${coordinator.url}/admin/`);
    await page.waitForSelector('#token');
    await page.type('#token', apiToken);
    await page.click('#token-submit');
    await page.waitForSelector('#token-error');
    expect(await page.$eval('#token-error', (e) => e.textContent)).toMatch(/operator token/);
    await shot('01-token-refused');
    await page.locator('#token').fill(operatorToken);
    await page.click('#token-submit');
    await page.waitForSelector('#counts');
    // Kept for the tab: a reload opens straight onto the list.
    await page.reload();
    await page.waitForSelector('#transactions tbody tr');
  });

  it('lists the transactions with counts per status', async () => {
    await expect.poll(listed).toEqual([gids.attention, gids.succeeded, gids.failed]);
    // The counts come from a request of their own, which may answer after the list's.
    const count = (s: string) => page.$eval(`[data-count="${s}"] b`, (e) => e.textContent).catch(() => undefined);
    await expect.poll(() => count('needs_attention')).toBe('1');
    await expect.poll(() => count('failed')).toBe('1');
    await expect.poll(() => count('succeed')).toBe('1');
    await shot('02-list');
  });

  it('filters by status and by gid prefix', async () => {
    await page.select('#filter-status', 'failed');
    await page.click('#filter-apply');
    await expect.poll(listed).toEqual([gids.failed]);
    await shot('03-filter-failed');
    // A click on a count filters by its status.
    await page.click('[data-count="needs_attention"]');
    await expect.poll(listed).toEqual([gids.attention]);
    expect(await page.$eval('#filter-status', (e) => (e as unknown as { value: string }).value)).toBe('needs_attention');
    await page.select('#filter-status', '');
    await page.type('#filter-gid', `ui-${run}-o`);
    await page.click('#filter-apply');
    await expect.poll(listed).toEqual([gids.succeeded]);
    await page.type('#filter-gid', 'nothing');
    await page.click('#filter-apply');
    await page.waitForSelector('#no-transactions');
    // By destination: every saga here calls the test service, none a broker.
    await clear('#filter-gid');
    await page.type('#filter-destination', 'kafka://');
    await page.click('#filter-apply');
    await page.waitForSelector('#no-transactions');
    await clear('#filter-destination');
    await page.type('#filter-destination', `${service.url}/s2/`);
    await page.click('#filter-apply');
    await expect.poll(listed).toEqual([gids.attention, gids.succeeded, gids.failed]);
  });

  it('pages by position, older and back to newer', async () => {
    await page.goto(`${coordinator.url}/admin/?limit=2`);
    await expect.poll(listed).toEqual([gids.attention, gids.succeeded]);
    await page.click('#page-older');
    await expect.poll(listed).toEqual([gids.failed]);
    expect(await page.$eval('#page-older', (e) => (e as unknown as { disabled: boolean }).disabled)).toBe(true);
    await page.click('#page-newer');
    await expect.poll(listed).toEqual([gids.attention, gids.succeeded]);
  });

  it('shows one transaction as a timeline, its payload on request, and redrives it after a confirmation', async () => {
    await page.goto(`${coordinator.url}/admin/#/trans/${encodeURIComponent(gids.attention)}`);
    await page.waitForSelector(`#transaction[data-gid="${gids.attention}"] #branches li`);
    expect(await page.$eval('#attention-reason', (e) => e.textContent)).toContain('step 01 compensate failed 2 times');
    const compensate = '[data-branch="01.compensate"]';
    expect(await page.$eval(`${compensate} .attempts`, (e) => e.textContent)).toBe('2');
    expect(await page.$eval(`${compensate} .last-error`, (e) => e.textContent)).not.toBe('');
    // Payloads stay hidden until asked for.
    expect(await page.$('[data-branch="01.action"] .payload')).toBeNull();
    await page.click('[data-branch="01.action"] .show-payload');
    await page.waitForSelector('[data-branch="01.action"] .payload');
    expect(await page.$eval('[data-branch="01.action"] .payload', (e) => e.textContent)).toContain('shown on request');
    await shot('04-detail');

    service.heal('s1', 'compensate');
    await page.click('#action-redrive');
    await page.waitForSelector('#confirm');
    await shot('05-confirm-redrive');
    // Cancel does nothing.
    await page.click('#confirm-cancel');
    expect(await page.$('#confirm')).toBeNull();
    expect((await query(dtm, gids.attention)).transaction?.status).toBe('needs_attention');
    await page.click('#action-redrive');
    await page.waitForSelector('#confirm-ok');
    await page.click('#confirm-ok');
    await page.waitForSelector('#notice');
    await waitForStatus(dtm, gids.attention, 'failed');
    // Who did it and when: the coordinator's log line (JSON, with its time).
    expect(coordinator.output()).toMatch(new RegExp(`"time":\\d+.*"gid":"${gids.attention}".*"by":"alice","action":"redrive"`));
    await expect.poll(() => history('#transaction')).toEqual([['redrive', 'alice']]);
    expect(await recorded('transaction', gids.attention)).toEqual([
      { action: 'redrive', operator: 'alice', detail: '', at: expect.any(String) },
    ]);
    expect((await query(dtm, gids.attention)).branches.find((b) => b.branch_id === '01' && b.op === 'compensate')?.status).toBe('succeed');
    await shot('06-redriven');
  });

  it('retries a stuck saga now, then force-stops it with a reason, each after a confirmation', async () => {
    // Its first step keeps erroring, retried only after 300 s.
    service.failAlways('s1', 'action', 'error');
    expect((await post(`${dtm}/submit`, sagaBody(gids.stuck, { step: 1 }, '300'))).status).toBe(200);
    // The first call failed and its retry is scheduled.
    const firstAction = async () => (await query(dtm, gids.stuck)).branches.find((b) => b.op === 'action' && b.branch_id === '01');
    await expect
      .poll(async () => (await firstAction()) as { attempts: number; next_retry_time?: string })
      .toMatchObject({
        attempts: 1,
        next_retry_time: expect.any(String),
      });
    await page.goto(`${coordinator.url}/admin/#/trans/${encodeURIComponent(gids.stuck)}`);
    await page.waitForSelector(`#transaction[data-gid="${gids.stuck}"] #action-retry`);
    // The step's next call, minutes away (jittered backoff of 300 s: 150 to 300 s).
    const nextRetry = await page.$eval(
      '[data-branch="01.action"] .next-retry',
      (e) => (e as unknown as { dataset: { time: string } }).dataset.time,
    );
    const inSeconds = (new Date(nextRetry).getTime() - Date.now()) / 1000;
    expect(inSeconds).toBeGreaterThan(100);
    expect(await page.$('#action-redrive')).toBeNull(); // only for needs_attention
    await page.click('#action-retry');
    await page.waitForSelector('#confirm-ok');
    await page.click('#confirm-ok');
    await page.waitForSelector('#notice');
    const actionCalls = () => service.calls(gids.stuck).filter((c) => c.step === 's1' && c.op === 'action').length;
    await expect.poll(actionCalls).toBe(2);
    // The second call was made and recorded as the second attempt; the next waits for the backoff again.
    await expect
      .poll(async () => (await query(dtm, gids.stuck)).branches.find((b) => b.op === 'action' && b.branch_id === '01')?.attempts)
      .toBe(2);
    const after = await query(dtm, gids.stuck);
    expect(after.transaction?.status).toBe('submitted');
    expect(actionCalls()).toBe(2);

    await expect.poll(() => history('#transaction')).toEqual([['retry-now', 'alice']]);

    // Bob takes over the tab with his own token and force-stops it.
    await page.click('#forget-token');
    await page.waitForSelector('#token');
    await page.type('#token', bobToken);
    await page.click('#token-submit');
    await page.waitForSelector('#action-stop');
    await page.click('#action-stop');
    await page.waitForSelector('#confirm-reason');
    // No reason, no stop.
    expect(await page.$eval('#confirm-ok', (e) => (e as unknown as { disabled: boolean }).disabled)).toBe(true);
    await page.type('#confirm-reason', 'INC-42: payment provider gone');
    await shot('07-confirm-stop');
    await page.click('#confirm-ok');
    await page.waitForSelector('#notice');
    const stopped = (await query(dtm, gids.stuck)).transaction;
    expect(stopped?.status).toBe('failed');
    expect(stopped?.rollback_reason).toMatch(/^force-stopped by bob at \d{4}-\d\d-\d\dT.*: INC-42: payment provider gone$/);
    expect(stopped?.finish_time).toBeDefined();
    for (const [action, by] of [
      ['retry-now', 'alice'],
      ['force-stop', 'bob'],
    ])
      expect(coordinator.output()).toMatch(new RegExp(`"gid":"${gids.stuck}","trans_type":"saga","by":"${by}","action":"${action}"`));
    await page.waitForSelector('#transaction [data-status="failed"]');
    await expect
      .poll(() => history('#transaction'))
      .toEqual([
        ['force-stop', 'bob'],
        ['retry-now', 'alice'],
      ]);
    expect(await recorded('transaction', gids.stuck)).toEqual([
      { action: 'force-stop', operator: 'bob', detail: 'INC-42: payment provider gone', at: expect.any(String) },
      { action: 'retry-now', operator: 'alice', detail: '', at: expect.any(String) },
    ]);
    expect(await page.$('#action-stop')).toBeNull();
    await shot('08-stopped');
    service.heal('s1', 'action');
    // The API refuses both once it has finished, naming why.
    const refused = await post(`${coordinator.url}/t/${operatorToken}/api/concord/admin/retry`, { gid: gids.stuck });
    expect(refused.status).toBe(409);
    expect(refused.body.message).toMatch(/current status 'failed'/);
    expect((await post(`${coordinator.url}/t/${operatorToken}/api/concord/admin/stop`, { gid: gids.stuck, reason: 'again' })).status).toBe(
      409,
    );
    const noReason = await post(`${coordinator.url}/t/${operatorToken}/api/concord/admin/stop`, { gid: gids.stuck, reason: ' ' });
    expect(noReason.status).toBe(400);
    expect(noReason.body.message).toMatch(/reason/);
    expect((await post(`${coordinator.url}/t/${apiToken}/api/concord/admin/stop`, { gid: gids.stuck, reason: 'x' })).status).toBe(403);
    expect(pageErrors).toEqual([]);
  });

  it('shows the outbox drains and their parked rows, and redrives them after a confirmation', async () => {
    const parkedRows = async () =>
      ((await (await fetch(`${coordinator.url}/t/${operatorToken}/api/outboxes/refused/parked`)).json()) as { parked: { rowId: string }[] })
        .parked;
    await expect.poll(async () => (await parkedRows()).map((r) => r.rowId), { timeout: 15_000 }).toEqual(['1', '2']);
    await page.goto(`${coordinator.url}/admin/#/outboxes`);
    await page.waitForSelector('[data-outbox="refused"]');
    expect(await page.$eval('[data-outbox="refused"] .parked-count', (e) => e.textContent)).toBe('2');
    await page.click('[data-outbox="refused"] .show-parked');
    await page.waitForSelector('[data-parked="refused"] [data-row="2"]');
    await shot('09-outbox-parked');
    refusing = false;
    await page.click('[data-parked="refused"] .redrive-parked');
    await page.waitForSelector('#confirm-ok');
    await page.click('#confirm-ok');
    await page.waitForSelector('#notice');
    expect(await page.$eval('#notice', (e) => e.textContent)).toBe('refused: 2 delivered, 0 still failing');
    expect(events.got.map((g) => g.body).sort()).toEqual(['first', 'second']);
    expect(await parkedRows()).toEqual([]);
    await page.waitForSelector('[data-parked="refused"] .none-parked');
    // Bob's token is the tab's since the force-stop.
    await expect.poll(() => history('[data-parked="refused"]')).toEqual([['outbox-redrive', 'bob']]);
    expect(await recorded('outbox', 'refused')).toEqual([
      { action: 'outbox-redrive', operator: 'bob', detail: '2 delivered, 0 still failing', at: expect.any(String) },
    ]);
    await shot('10-outbox-redriven');
    expect(pageErrors).toEqual([]);
  });
  it('shows the broker connections with their state, and the topics with their subscribers', async () => {
    // A message to Kafka opens the "default" connection; "jobs" stays unopened.
    const gid = `ui-${run}-kafka`;
    const sent = await post(`${dtm}/submit`, {
      gid,
      trans_type: 'msg',
      steps: [{ action: `kafka://default/ui-${run}` }],
      payloads: ['{}'],
    });
    expect(sent.status).toBe(200);
    await waitForStatus(dtm, gid, 'succeed');
    const subscribed = await post(`${dtm}/subscribe`, { topic: `paid-${run}`, url: service.stepUrl('s1', 'action'), remark: 'billing' });
    expect(subscribed.status).toBe(200);
    await page.goto(`${coordinator.url}/admin/#/brokers`);
    await page.waitForSelector('[data-connection="kafka:default"] .state-up');
    expect(await page.$eval('[data-connection="rabbitmq:jobs"] .state', (e) => e.textContent)).toBe('not used yet');
    expect(await page.$eval(`[data-topic="paid-${run}"]`, (e) => e.textContent)).toContain('(billing)');
    await shot('11-brokers');
  });

  it('lists the parked messages consumers report, and redrives one in the consumer after a confirmation', async () => {
    const brokers = inject('kafkaBrokers').split(',');
    const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
    const topic = `ui-parked-${run}`;
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    await admin.disconnect();
    const db = new pg.Pool({ connectionString: await freshDatabase() });
    await db.query('create table effects (message_id text)');
    let broken = true;
    const name = `billing-${run}`;
    const consumer = await consume<pg.PoolClient>(
      { kafka: { brokers, topic, groupId: `g-${run}` } },
      async ({ id, value, tx }) => {
        await tx.query('insert into effects values ($1)', [id]);
        if (value === 'poison' && broken) throw new Error('no such customer');
      },
      { db, consumerName: name, retry: { attempts: 1 }, coordinator: { server: coordinator.dtm, token: apiToken, interval: 0.2 } },
    );
    const producer = kafka.producer();
    try {
      await producer.connect();
      await producer.send({ topic, messages: [{ value: 'poison', headers: { 'message-id': `inv-${run}/01` } }] });
      const row = `[data-parked-message="${name}/inv-${run}/01"]`;
      await page.goto(`${coordinator.url}/admin/#/consumers`);
      await page.waitForSelector(`${row} .state[data-state="parked"]`, { timeout: 30_000 });
      expect(await page.$eval(`${row} .error`, (e) => e.textContent)).toBe('no such customer');
      await shot('12-consumer-parked');
      broken = false;
      await page.click(`${row} .redrive-message`);
      await page.waitForSelector('#confirm-ok');
      await shot('13-confirm-consumer-redrive');
      await page.click('#confirm-ok');
      await page.waitForSelector(`${row} .state[data-state="redriven"]`, { timeout: 30_000 });
      // Bob's token is the tab's since the force-stop.
      expect(await page.$eval(`${row} .redrive-by`, (e) => e.textContent)).toMatch(/^asked by bob at /);
      await shot('14-consumer-redriven');
      expect((await db.query('select message_id from effects')).rows).toEqual([{ message_id: `inv-${run}/01` }]);
      expect(await recorded('consumer-message', `${name}/inv-${run}/01`)).toMatchObject([{ action: 'consumer-redrive', operator: 'bob' }]);
      expect(pageErrors).toEqual([]);
    } finally {
      await producer.disconnect();
      await consumer.close();
      await db.end();
    }
  });
});
