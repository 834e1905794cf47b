/**
 * Parked consumer messages in the coordinator (docs/consumers.md#parked-messages-in-the-admin-ui),
 * on real Kafka, RabbitMQ, Postgres and coordinator processes: a consumer parks a poison message in its own
 * database and reports it; the coordinator lists it; an operator's redrive runs it again in the
 * consumer (failing, then, with the handler fixed, once for good) and it shows as redriven. A
 * consumer whose coordinator is down keeps consuming and reports what it parked once it is up.
 */
import { randomUUID } from 'node:crypto';
import { connect } from 'amqplib';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { consume, type Consumer, type ConsumeHandler } from '../sdk/index.js';
import { freePort, startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

const apiToken = 'parked-api-token-0123456789';
const aliceToken = 'parked-alice-token-0123456789';
const tokens = { CONCORD_API_TOKENS: apiToken, CONCORD_OPERATOR_TOKENS: `alice:${aliceToken}` };
const brokers = inject('kafkaBrokers').split(',');
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
let pool: pg.Pool;
let producer: Producer;
const running: { consumers: Consumer[]; coordinators: RunningCoordinator[] } = { consumers: [], coordinators: [] };

interface ParkedView {
  consumer: string;
  messageId: string;
  source: string;
  error: string;
  attempts: number;
  state: string;
  redriveBy: string | null;
  resolvedAt: string | null;
}

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase() });
  await pool.query('create table effects (consumer text, message_id text, value text)');
  producer = kafka.producer();
  await producer.connect();
});
afterEach(async () => {
  await Promise.all(running.consumers.splice(0).map((c) => c.close()));
  for (const c of running.coordinators.splice(0)) expect(await c.stop()).toBe(0);
});
afterAll(async () => {
  await producer?.disconnect();
  await pool?.end();
});

async function freshTopic(): Promise<string> {
  const topic = `parked-${randomUUID()}`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  await admin.disconnect();
  return topic;
}

async function coordinatorOn(port?: number) {
  const coordinator = await startCoordinator({
    store: await freshDatabase(),
    ...(port === undefined ? {} : { port }),
    env: { ...fastCoordinator, ...tokens, CONCORD_LOG_LEVEL: 'info' },
  });
  running.coordinators.push(coordinator);
  return coordinator;
}

/** A handler writing one effect row per message in its transaction; "poison" fails while `broken` says so. */
function handlerFor(name: string, broken: () => boolean) {
  let failures = 0;
  const handler: ConsumeHandler<pg.PoolClient> = async ({ id, value, tx }) => {
    await tx.query('insert into effects values ($1, $2, $3)', [name, id, value]);
    if (value === 'poison' && broken()) throw new Error(`cannot handle poison (failure ${++failures})`);
  };
  return handler;
}

async function startConsumer(topic: string, name: string, handler: ConsumeHandler<pg.PoolClient>, server: string) {
  const consumer = await consume<pg.PoolClient>({ kafka: { brokers, topic, groupId: `g-${randomUUID()}` } }, handler, {
    db: pool,
    consumerName: name,
    retry: { attempts: 2, base: 0.01, cap: 0.02 },
    coordinator: { server, token: apiToken, interval: 0.2 },
  });
  running.consumers.push(consumer);
  return consumer;
}

const effects = async (name: string, id: string) =>
  Number((await pool.query('select count(*) from effects where consumer = $1 and message_id = $2', [name, id])).rows[0].count);

async function parkedOf(coordinator: RunningCoordinator, name: string): Promise<ParkedView[]> {
  const res = await fetch(`${coordinator.url}/api/concord/admin/consumers/parked?consumer=${encodeURIComponent(name)}`, {
    headers: { authorization: `Bearer ${aliceToken}` },
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { parked: ParkedView[] }).parked;
}

async function redrive(coordinator: RunningCoordinator, token: string, body: unknown) {
  const res = await fetch(`${coordinator.url}/api/concord/admin/consumers/redrive`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('parked consumer messages', () => {
  it('are listed by the coordinator, redriven by an operator, processed once, and shown as redriven', async () => {
    const coordinator = await coordinatorOn();
    const topic = await freshTopic();
    const name = `c-${randomUUID()}`;
    let broken = true;
    await startConsumer(
      topic,
      name,
      handlerFor(name, () => broken),
      coordinator.dtm,
    );
    const poison = { value: 'poison', headers: { 'message-id': 'order-7/01' } };
    await producer.send({ topic, messages: [{ value: 'ok', headers: { 'message-id': 'order-6/01' } }, poison] });

    await expect
      .poll(() => parkedOf(coordinator, name), { timeout: 30_000 })
      .toMatchObject([
        {
          consumer: name,
          messageId: 'order-7/01',
          source: `kafka:${topic}/0/1`,
          error: 'cannot handle poison (failure 2)',
          attempts: 2,
          state: 'parked',
          redriveBy: null,
        },
      ]);
    expect(coordinator.output()).toMatch(/"consumer":"[^"]+","parked":1,"messageIds":\["order-7\/01"\].*consumer reported parked messages/);
    expect(await effects(name, 'order-6/01')).toBe(1);
    expect(await effects(name, 'order-7/01')).toBe(0);

    // An operator token is needed, for a message the consumer reported.
    expect((await redrive(coordinator, apiToken, { consumer: name, messageId: 'order-7/01' })).status).toBe(403);
    const unknown = await redrive(coordinator, aliceToken, { consumer: name, messageId: 'order-8/01' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('PARKED_MESSAGE_NOT_FOUND');
    const noId = await redrive(coordinator, aliceToken, { consumer: name });
    expect(noId.status).toBe(400);
    expect(noId.body.message).toMatch(/messageId/);

    // Redriven before the fix: it fails again and is parked again, with the new error.
    expect((await redrive(coordinator, aliceToken, { consumer: name, messageId: 'order-7/01' })).status).toBe(200);
    await expect
      .poll(async () => (await parkedOf(coordinator, name))[0], { timeout: 30_000 })
      .toMatchObject({ state: 'parked', attempts: 3, error: 'cannot handle poison (failure 3)', redriveBy: 'alice' });

    // Fixed, and redriven again: processed once, and shown as redriven.
    broken = false;
    expect((await redrive(coordinator, aliceToken, { consumer: name, messageId: 'order-7/01' })).status).toBe(200);
    await expect
      .poll(async () => (await parkedOf(coordinator, name))[0], { timeout: 30_000 })
      .toMatchObject({ state: 'redriven', redriveBy: 'alice', resolvedAt: expect.any(String) });
    expect(await effects(name, 'order-7/01')).toBe(1);
    const again = await redrive(coordinator, aliceToken, { consumer: name, messageId: 'order-7/01' });
    expect(again.status).toBe(409);
    expect(again.body.message).toMatch(/current state 'redriven'/);

    // The broker delivering it once more changes nothing (the inbox); a later message shows it was read.
    await producer.send({ topic, messages: [poison, { value: 'ok', headers: { 'message-id': 'order-9/01' } }] });
    await expect.poll(() => effects(name, 'order-9/01'), { timeout: 30_000 }).toBe(1);
    expect(await effects(name, 'order-7/01')).toBe(1);
    expect((await parkedOf(coordinator, name)).map((p) => p.state)).toEqual(['redriven']);

    // Who asked, in the history and the log.
    const history = await fetch(
      `${coordinator.url}/api/concord/admin/actions?kind=consumer-message&subject=${encodeURIComponent(`${name}/order-7/01`)}`,
      { headers: { authorization: `Bearer ${aliceToken}` } },
    );
    expect(((await history.json()) as { actions: { action: string; operator: string }[] }).actions).toMatchObject([
      { action: 'consumer-redrive', operator: 'alice' },
      { action: 'consumer-redrive', operator: 'alice' },
    ]);
    expect(coordinator.output()).toMatch(/"messageId":"order-7\/01","by":"alice","action":"consumer-redrive"/);
  });

  it('work the same from a RabbitMQ queue', async () => {
    const coordinator = await coordinatorOn();
    const queue = `parked-${randomUUID()}`;
    const amqp = await connect(inject('amqpUrl'));
    try {
      const channel = await amqp.createConfirmChannel();
      await channel.assertQueue(queue, { durable: true });
      channel.sendToQueue(queue, Buffer.from('poison'), { persistent: true, messageId: 'job-1', headers: { 'message-id': 'job-1' } });
      await channel.waitForConfirms();
      await channel.close();
    } finally {
      await amqp.close();
    }
    const name = `c-${randomUUID()}`;
    let broken = true;
    const consumer = await consume<pg.PoolClient>(
      { rabbitmq: { url: inject('amqpUrl'), queue } },
      handlerFor(name, () => broken),
      {
        db: pool,
        consumerName: name,
        retry: { attempts: 1 },
        coordinator: { server: coordinator.dtm, token: apiToken, interval: 0.2 },
      },
    );
    running.consumers.push(consumer);
    await expect
      .poll(() => parkedOf(coordinator, name), { timeout: 30_000 })
      .toMatchObject([{ messageId: 'job-1', source: `rabbitmq:${queue}`, state: 'parked' }]);
    broken = false;
    expect((await redrive(coordinator, aliceToken, { consumer: name, messageId: 'job-1' })).status).toBe(200);
    await expect.poll(async () => (await parkedOf(coordinator, name))[0]?.state, { timeout: 30_000 }).toBe('redriven');
    expect(await effects(name, 'job-1')).toBe(1);
    expect(await consumer.parked()).toEqual([]);
  });

  it('keep being consumed around while the coordinator is down, and are reported once it is up', async () => {
    const port = await freePort();
    const topic = await freshTopic();
    const name = `c-${randomUUID()}`;
    await startConsumer(
      topic,
      name,
      handlerFor(name, () => true),
      `http://127.0.0.1:${port}/api/dtmsvr`,
    );
    await producer.send({
      topic,
      messages: [
        { value: 'poison', headers: { 'message-id': 'down-1' } },
        { value: 'ok', headers: { 'message-id': 'down-2' } },
      ],
    });
    // Consumption went on past the poison message, which is parked in the service's database.
    await expect.poll(() => effects(name, 'down-2'), { timeout: 30_000 }).toBe(1);
    const local = await pool.query('select message_id from concord_parked where consumer = $1', [name]);
    expect(local.rows).toEqual([{ message_id: 'down-1' }]);

    const coordinator = await coordinatorOn(port);
    await expect.poll(() => parkedOf(coordinator, name), { timeout: 30_000 }).toMatchObject([{ messageId: 'down-1', state: 'parked' }]);
  });

  it('orders reports by their listing time: an older report changes nothing a newer one saw', async () => {
    const coordinator = await coordinatorOn();
    const name = `c-${randomUUID()}`;
    const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();
    const message = { messageId: 'm-1', source: 'rabbitmq:jobs', error: 'boom', attempts: 5, firstFailure: at(1), lastFailure: at(2) };
    const report = async (listedAt: number, parked: (typeof message)[], complete = true) => {
      const res = await fetch(`${coordinator.url}/api/concord/consumers/parked`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ consumer: name, listedAt: at(listedAt), complete, parked }),
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { redrive: string[] }).redrive;
    };
    const state = async () => (await parkedOf(coordinator, name))[0]?.state;
    // A listing older than the message's failure does not see it: not taken as gone.
    await report(10, [message]);
    await report(1, []);
    expect(await state()).toBe('parked');
    // Asked to redrive: answered with every report until one misses it.
    expect((await redrive(coordinator, aliceToken, { consumer: name, messageId: 'm-1' })).status).toBe(200);
    expect(await report(11, [message])).toEqual(['m-1']);
    expect(await report(12, [], false)).toEqual(['m-1']); // an incomplete report says nothing about missing ones
    expect(await report(13, [])).toEqual([]);
    expect(await state()).toBe('redriven');
    // A report listed before that one (another instance, a retried call) does not bring it back.
    expect(await report(12, [message])).toEqual([]);
    expect(await state()).toBe('redriven');
    // Seen again by a later listing: parked again.
    await report(20, [{ ...message, lastFailure: at(19) }]);
    expect(await state()).toBe('parked');
  });

  it("takes times with any ISO 8601 offset, in Postgres's range or not, as the instants they name", async () => {
    // ISO 8601 allows offsets up to ±23:59 and Postgres only up to ±15:59: a fuzzer's -20:32 was a 500.
    const coordinator = await coordinatorOn();
    const name = `c-${randomUUID()}`;
    const res = await fetch(`${coordinator.url}/api/concord/consumers/parked`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        consumer: name,
        listedAt: '2026-01-01T12:00:00-20:32',
        complete: true,
        parked: [
          {
            messageId: 'm-1',
            source: 'kafka:orders',
            error: 'boom',
            attempts: 3,
            firstFailure: '2026-01-02T07:00:00+18:00',
            lastFailure: '2026-01-01T08:00:00.5-23:59',
          },
        ],
      }),
    });
    expect(res.status).toBe(200);
    expect(await parkedOf(coordinator, name)).toMatchObject([
      { messageId: 'm-1', state: 'parked', firstFailure: '2026-01-01T13:00:00.000Z', lastFailure: '2026-01-02T07:59:00.500Z' },
    ]);
  });

  it('refuses a report without an API token, and a malformed one naming the field, storing nothing', async () => {
    const coordinator = await coordinatorOn();
    const url = `${coordinator.url}/api/concord/consumers/parked`;
    const report = { consumer: 'x', listedAt: new Date().toISOString(), complete: true, parked: [] };
    expect(
      (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(report) })).status,
    ).toBe(401);
    const bad = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        ...report,
        parked: [{ messageId: 'm', source: 's', error: 'e', attempts: 1, firstFailure: 'yesterday', lastFailure: 'now' }],
      }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toMatch(/parked\.0\.firstFailure/);
    const entry = { messageId: 'm', source: 's', error: 'e', attempts: 1, firstFailure: report.listedAt, lastFailure: report.listedAt };
    const twice = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...report, parked: [entry, entry] }),
    });
    expect(twice.status).toBe(400);
    expect(((await twice.json()) as { message: string }).message).toMatch(/parked.*each messageId at most once/);
    expect(await parkedOf(coordinator, 'x')).toEqual([]);
  });
});
