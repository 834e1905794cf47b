/** The consumer SDK on real Kafka, RabbitMQ and Postgres: exactly once in effect, retries, parking, redrive. */
import { randomUUID } from 'node:crypto';
import { connect, type ChannelModel } from 'amqplib';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { BranchFailure, consume, Msg, type Consumer, type ConsumeHandler, type DrizzleLike } from '../sdk/index.js';
import { inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

let pool: pg.Pool;
let producer: Producer;
let amqp: ChannelModel;
const brokers = inject('kafkaBrokers').split(',');
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
const open: Consumer[] = [];
const fast = { attempts: 3, base: 0.01, cap: 0.05 };

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase() });
  await pool.query('create table effects (consumer text, message_id text, value text)');
  producer = kafka.producer();
  await producer.connect();
  amqp = await connect(inject('amqpUrl'));
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});
afterAll(async () => {
  await producer?.disconnect();
  await amqp?.close();
  await pool?.end();
});

async function freshTopic(): Promise<string> {
  const topic = `consume-${randomUUID()}`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  await admin.disconnect();
  return topic;
}

/** A handler that records every call and writes one effect row with the message's transaction. */
function recorder(consumer: string, fail: (m: { id: string; value: string; call: number }) => void = () => {}) {
  const calls: string[] = [];
  const handler: ConsumeHandler<pg.PoolClient> = async ({ id, value, tx }) => {
    calls.push(id);
    await tx.query('insert into effects values ($1, $2, $3)', [consumer, id, value]);
    fail({ id, value, call: calls.filter((c) => c === id).length });
  };
  return { calls, handler };
}

const effects = async (consumer: string) =>
  (await pool.query<{ message_id: string; value: string }>('select message_id, value from effects where consumer = $1', [consumer])).rows;

async function startKafkaConsumer(topic: string, consumerName: string, handler: ConsumeHandler<pg.PoolClient>, logger?: pino.Logger) {
  const consumer = await consume<pg.PoolClient>({ kafka: { brokers, topic, groupId: `g-${randomUUID()}` } }, handler, {
    db: pool,
    consumerName,
    retry: fast,
    logger,
  });
  open.push(consumer);
  return consumer;
}

describe('Kafka', () => {
  it('applies a message delivered twice (same message-id) once', async () => {
    const topic = await freshTopic();
    const name = `c-${randomUUID()}`;
    const { calls, handler } = recorder(name);
    await startKafkaConsumer(topic, name, handler);
    const dup = { key: 'k', value: 'once', headers: { 'message-id': 'g1/01' } };
    await producer.send({ topic, messages: [dup, dup, { key: 'k', value: 'marker', headers: { 'message-id': 'g2/01' } }] });
    await expect.poll(async () => (await effects(name)).map((e) => e.value), { timeout: 30_000 }).toContain('marker');
    expect((await effects(name)).filter((e) => e.message_id === 'g1/01')).toEqual([{ message_id: 'g1/01', value: 'once' }]);
    expect(calls.filter((c) => c === 'g1/01')).toHaveLength(1);
  });

  it('falls back to <topic>/<partition>/<offset> without a message-id header', async () => {
    const topic = await freshTopic();
    const name = `c-${randomUUID()}`;
    const { handler } = recorder(name);
    await startKafkaConsumer(topic, name, handler);
    await producer.send({ topic, messages: [{ key: 'k', value: 'plain' }] });
    await expect.poll(async () => (await effects(name)).map((e) => e.message_id), { timeout: 30_000 }).toHaveLength(1);
    expect((await effects(name))[0]?.message_id).toMatch(new RegExp(`^${topic}/[0-2]/0$`));
  });

  it('parks a poison message after the configured attempts, keeps consuming, and redrives it once fixed', async () => {
    const topic = await freshTopic();
    const name = `c-${randomUUID()}`;
    let fixed = false;
    const { calls, handler } = recorder(name, ({ value }) => {
      if (value === 'poison' && !fixed) throw new Error('cannot digest poison');
    });
    const logs: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) });
    const consumer = await startKafkaConsumer(topic, name, handler, logger);
    const message = (key: string, value: string) => ({ key, value, headers: { 'message-id': `${value}/01` } });
    await producer.send({
      topic,
      messages: [message('k0', 'before'), message('k0', 'poison'), message('k1', 'other'), message('k2', 'other2')],
    });
    await producer.send({ topic, messages: [message('k0', 'after'), message('k1', 'later')] });
    const healthy = ['before', 'other', 'other2', 'after', 'later'];
    await expect.poll(async () => (await effects(name)).map((e) => e.value).sort(), { timeout: 30_000 }).toEqual([...healthy].sort());

    await expect.poll(async () => (await consumer.parked()).length, { timeout: 10_000 }).toBe(1);
    const [parked] = await consumer.parked();
    expect(parked).toMatchObject({ id: 'poison/01', key: 'k0', value: 'poison', error: 'cannot digest poison', attempts: 3 });
    expect(parked?.headers['message-id']).toBe('poison/01');
    expect(parked?.source).toMatch(new RegExp(`^kafka:${topic}/[0-2]/\\d+$`));
    expect(parked!.lastFailure.getTime()).toBeGreaterThanOrEqual(parked!.firstFailure.getTime());
    expect(calls.filter((c) => c === 'poison/01')).toHaveLength(3);
    expect(logs.filter((l) => l.msg === 'handler failed, retrying')).toHaveLength(2);
    expect(logs.find((l) => l.msg === 'message parked')).toMatchObject({ level: 50, messageId: 'poison/01', attempts: 3 });

    fixed = true;
    expect(await consumer.redrive()).toBe(1);
    expect((await effects(name)).filter((e) => e.value === 'poison')).toHaveLength(1);
    expect(await consumer.parked()).toEqual([]);
    expect(await consumer.redrive()).toBe(0);
  });

  it('applies a message once when the handler fails after writing (its transaction rolls back) and the retry succeeds', async () => {
    const topic = await freshTopic();
    const name = `c-${randomUUID()}`;
    const { calls, handler } = recorder(name, ({ call }) => {
      if (call === 1) throw new Error('killed mid-way');
    });
    const consumer = await startKafkaConsumer(topic, name, handler);
    await producer.send({ topic, messages: [{ key: 'k', value: 'v', headers: { 'message-id': 'mid/01' } }] });
    await expect.poll(() => calls.length, { timeout: 30_000 }).toBe(2);
    await expect.poll(async () => (await effects(name)).length).toBe(1);
    expect(await consumer.parked()).toEqual([]);
  });

  it('leaves a message its consumer closed on mid-retry uncommitted, so the next member of the group applies it', async () => {
    const topic = await freshTopic();
    const name = `c-${randomUUID()}`;
    const groupId = `g-${randomUUID()}`;
    let failing = true;
    const { calls, handler } = recorder(name, () => {
      if (failing) throw new Error('down');
    });
    const options = { db: pool, consumerName: name, retry: { attempts: 1000, base: 0.05, cap: 0.05 } };
    const first = await consume<pg.PoolClient>({ kafka: { brokers, topic, groupId } }, handler, options);
    open.push(first);
    await producer.send({ topic, messages: [{ key: 'k', value: 'v', headers: { 'message-id': 'crash/01' } }] });
    await expect.poll(() => calls.length, { timeout: 30_000 }).toBeGreaterThan(1);
    await first.close(); // not applied, so not committed
    failing = false;
    const second = await consume<pg.PoolClient>({ kafka: { brokers, topic, groupId } }, handler, options);
    open.push(second);
    await expect.poll(async () => (await effects(name)).length, { timeout: 30_000 }).toBe(1);
    expect(await second.parked()).toEqual([]);
  });
});

describe('RabbitMQ', () => {
  async function freshQueue(): Promise<string> {
    const queue = `consume-${randomUUID()}`;
    const channel = await amqp.createChannel();
    await channel.assertQueue(queue, { durable: true });
    await channel.close();
    return queue;
  }

  async function publish(queue: string, messages: { value: string; id?: string }[]) {
    const channel = await amqp.createConfirmChannel();
    for (const m of messages) {
      const headers = m.id ? { 'message-id': m.id } : {};
      channel.sendToQueue(queue, Buffer.from(m.value), { persistent: true, ...(m.id ? { messageId: m.id } : {}), headers });
    }
    await channel.waitForConfirms();
    await channel.close();
  }

  async function startRabbitConsumer(queue: string, consumerName: string, handler: ConsumeHandler<pg.PoolClient>) {
    const consumer = await consume<pg.PoolClient>({ rabbitmq: { url: inject('amqpUrl'), queue } }, handler, {
      db: pool,
      consumerName,
      retry: fast,
    });
    open.push(consumer);
    return consumer;
  }

  it('applies a message delivered twice (same message-id) once', async () => {
    const queue = await freshQueue();
    const name = `c-${randomUUID()}`;
    const { calls, handler } = recorder(name);
    await startRabbitConsumer(queue, name, handler);
    await publish(queue, [
      { value: 'once', id: 'r1/01' },
      { value: 'once', id: 'r1/01' },
      { value: 'marker', id: 'r2/01' },
    ]);
    await expect.poll(async () => (await effects(name)).map((e) => e.value), { timeout: 20_000 }).toContain('marker');
    expect((await effects(name)).filter((e) => e.message_id === 'r1/01')).toHaveLength(1);
    expect(calls.filter((c) => c === 'r1/01')).toHaveLength(1);
    // Everything was acked: nothing is left in the queue.
    const channel = await amqp.createChannel();
    expect((await channel.checkQueue(queue)).messageCount).toBe(0);
    await channel.close();
  });

  it('parks on BranchFailure at once, without retrying, and acks so the next message flows', async () => {
    const queue = await freshQueue();
    const name = `c-${randomUUID()}`;
    const { calls, handler } = recorder(name, ({ value }) => {
      if (value === 'refused') throw new BranchFailure('order unknown');
    });
    const consumer = await startRabbitConsumer(queue, name, handler);
    await publish(queue, [{ value: 'refused', id: 'x/01' }, { value: 'fine', id: 'y/01' }, { value: 'no id' }]);
    await expect.poll(async () => (await effects(name)).map((e) => e.value).sort(), { timeout: 20_000 }).toEqual(['fine', 'no id']);
    await expect
      .poll(async () => (await consumer.parked()).map((p) => [p.id, p.attempts, p.error]))
      .toEqual([['x/01', 1, 'order unknown']]);
    expect(calls.filter((c) => c === 'x/01')).toHaveLength(1);
    expect((await effects(name)).find((e) => e.value === 'no id')?.message_id).toMatch(new RegExp(`^${queue}/sha256/[0-9a-f]{64}$`));
  });
  it('works with a drizzle database, and redrives only the messages named', async () => {
    const queue = await freshQueue();
    const name = `c-${randomUUID()}`;
    const db = drizzle(pool) as unknown as DrizzleLike;
    let fixed = false;
    const consumer = await consume<DrizzleLike>(
      { rabbitmq: { url: inject('amqpUrl'), queue } },
      async ({ id, value, tx }) => {
        await tx.execute(sql`insert into effects values (${name}, ${id}, ${value})`);
        if (!fixed) throw new Error('not yet');
      },
      { db, consumerName: name, retry: fast },
    );
    open.push(consumer);
    await publish(queue, [
      { value: 'a', id: 'a/01' },
      { value: 'b', id: 'b/01' },
    ]);
    await expect.poll(async () => (await consumer.parked()).map((p) => p.id), { timeout: 20_000 }).toEqual(['a/01', 'b/01']);
    expect(await effects(name)).toEqual([]);
    fixed = true;
    expect(await consumer.redrive(['b/01'])).toBe(1);
    expect((await consumer.parked()).map((p) => p.id)).toEqual(['a/01']);
    expect(await effects(name)).toEqual([{ message_id: 'b/01', value: 'b' }]);
    fixed = false;
    expect(await consumer.redrive()).toBe(0);
    expect(await consumer.parked()).toMatchObject([{ id: 'a/01', attempts: 4, error: 'not yet' }]);
  });
});

describe('end to end', () => {
  it('consumes a two-phase message published by the coordinator to Kafka once, with the id <gid>/01', async () => {
    const coordinator = await inProcessCoordinator({
      store: await freshDatabase(),
      env: { ...fastCoordinator, CONCORD_KAFKA_BROKERS: inject('kafkaBrokers') },
    });
    try {
      const topic = await freshTopic();
      const name = `c-${randomUUID()}`;
      const seen: { id: string; key?: string; headers: Record<string, string> }[] = [];
      const { handler } = recorder(name);
      await startKafkaConsumer(topic, name, async (m) => {
        seen.push({ id: m.id, key: m.key, headers: m.headers });
        await handler(m);
      });
      const gid = `e2e-${randomUUID()}`;
      await new Msg(coordinator.dtm, gid).add(`kafka://default/${topic}`, { orderId: 9 }, { key: 'order-9' }).submit();
      await expect.poll(async () => (await effects(name)).length, { timeout: 30_000 }).toBe(1);
      expect(await effects(name)).toEqual([{ message_id: `${gid}/01`, value: '{"orderId":9}' }]);
      expect(seen[0]).toMatchObject({ id: `${gid}/01`, key: 'order-9', headers: { 'dtm-gid': gid, 'dtm-branch-id': '01' } });
    } finally {
      await coordinator.stop();
    }
  });
});
