/** The SDK's native outbox: a row in the service's own transaction (pg or drizzle), drained to Kafka and RabbitMQ. */
import { randomUUID } from 'node:crypto';
import { connect } from 'amqplib';
import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { ensureOutboxTable, isConcordError, nativeOutboxMapping, outbox, type DrizzleLike } from '../sdk/index.js';
import { freshDatabase } from './helpers/db.js';
import { startDrain, testRelay } from './helpers/outbox.js';

const brokers = inject('kafkaBrokers');
const amqpUrl = inject('amqpUrl');
let pool: pg.Pool;
const relay = testRelay(brokers, amqpUrl);

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase(), max: 8 });
  await Promise.all([ensureOutboxTable(pool, { notify: true }), ensureOutboxTable(pool, { notify: true })]);
  await pool.query('create table orders (id text primary key)');
});
afterAll(async () => {
  await relay.close();
  await pool?.end();
});

it('publishes what committed with its business row, never what rolled back; pg and drizzle; Kafka and RabbitMQ', async () => {
  const topic = `native-${randomUUID()}`;
  const queue = `native-${randomUUID()}`;
  const amqp = await connect(amqpUrl);
  const channel = await amqp.createChannel();
  await channel.assertQueue(queue, { durable: false });
  const kafka = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  await admin.disconnect();
  const consumer = kafka.consumer({ groupId: `g-${randomUUID()}` });
  const got: { id: string; key: string; value: string; trace: string }[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      got.push({
        id: String(message.headers?.['message-id']),
        key: String(message.key),
        value: String(message.value),
        trace: String(message.headers?.traceparent),
      });
    },
  });
  const drain = await startDrain(pool, { ...nativeOutboxMapping, notifyChannel: 'concord_outbox' }, relay);
  try {
    const client = await pool.connect();
    let committedId: string;
    try {
      await client.query('begin');
      await client.query(`insert into orders values ('o1')`);
      committedId = await outbox.publish(
        client,
        `kafka://default/${topic}`,
        { order: 'o1' },
        { key: 'o1', headers: { traceparent: 't-1' } },
      );
      await client.query('commit');
      await client.query('begin');
      await client.query(`insert into orders values ('o2')`);
      await outbox.publish(client, `kafka://default/${topic}`, { order: 'o2' }, { key: 'o2' });
      await client.query('rollback');
    } finally {
      client.release();
    }
    const db = drizzle(pool) as unknown as DrizzleLike;
    await db.transaction(async (tx) => {
      await outbox.publish(tx, `kafka://default/${topic}`, 'plain text', { key: 'o3' });
      await outbox.publish(tx, `rabbitmq://default//${queue}`, { order: 'o3' });
    });
    await expect.poll(() => got.length, { timeout: 20_000 }).toBe(2);
    expect(got[0]).toEqual({ id: committedId, key: 'o1', value: '{"order":"o1"}', trace: 't-1' });
    expect(committedId).toMatch(/^outbox:concord_outbox:\d+$/);
    expect(got[1]).toMatchObject({ key: 'o3', value: 'plain text' });
    expect(got.map((g) => g.value)).not.toContain('{"order":"o2"}');
    let fromRabbit: string | undefined;
    await expect
      .poll(async () => {
        const message = await channel.get(queue, { noAck: true });
        if (message) fromRabbit = `${String(message.properties.messageId)} ${message.content.toString()}`;
        return fromRabbit;
      })
      .toMatch(/^outbox:concord_outbox:\d+ \{"order":"o3"\}$/);
    // Published rows are deleted.
    await expect.poll(async () => (await pool.query('select count(*)::int as n from concord_outbox')).rows[0].n).toBe(0);
  } finally {
    await drain.stop();
    await consumer.disconnect();
    await amqp.close();
  }
});

it('refuses a destination that is not a URL, naming the field, and writes nothing', async () => {
  const client = await pool.connect();
  try {
    await client.query('begin');
    const err: unknown = await outbox.publish(client, 'orders', {}).catch((e: unknown) => e);
    await client.query('rollback');
    expect(isConcordError(err) && err.field).toBe('destination');
  } finally {
    client.release();
  }
});
