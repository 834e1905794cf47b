/** Two-phase messages delivered to real Kafka and RabbitMQ brokers, directly or through topics. */
import { randomUUID } from 'node:crypto';
import { connect, type ChannelModel } from 'amqplib';
import { Partitioners } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Msg } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { topicReader } from './helpers/kafka-topics.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';

let coordinator: TestCoordinator;
let bank: BankService;
let amqp: ChannelModel;
const topics = topicReader(inject('kafkaBrokers').split(','));

beforeAll(async () => {
  coordinator = await inProcessCoordinator({
    store: await freshDatabase(),
    env: { ...fastCoordinator, CONCORD_KAFKA_BROKERS: inject('kafkaBrokers'), CONCORD_AMQP_URL: inject('amqpUrl') },
  });
  bank = await startBankService(await freshDatabase());
  amqp = await connect(inject('amqpUrl'));
});
afterAll(async () => {
  await topics.close();
  await amqp?.close();
  await bank?.close();
  await coordinator?.stop();
});

const gid = () => `b-${randomUUID()}`;

describe('Kafka destinations', () => {
  it('publishes with the key, a stable message id and the content type, and succeeds on the ack', async () => {
    const topic = `orders-${randomUUID()}`;
    const seen = await topics.collect(topic);
    const g = gid();
    await new Msg(coordinator.dtm, g, { branchHeaders: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } })
      .add(`kafka://default/${topic}`, { orderId: 42 }, { key: 'order-42', headers: { 'event-type': 'OrderPlaced' } })
      .submit();
    await waitForStatus(coordinator.dtm, g, 'succeed');
    await expect.poll(() => seen.length, { timeout: 20_000 }).toBe(1);
    expect(seen[0]).toMatchObject({
      key: 'order-42',
      value: '{"orderId":42}',
      headers: {
        'message-id': `${g}/01`,
        'content-type': 'application/json',
        'event-type': 'OrderPlaced',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      },
    });
  });

  it('sends messages of one key to one partition, in submit order when each waits for its result', async () => {
    const topic = `seq-${randomUUID()}`;
    const seen = await topics.collect(topic);
    for (let i = 0; i < 20; i++) {
      await new Msg(coordinator.dtm, gid(), { waitResult: true }).add(`kafka://default/${topic}`, { i }, { key: `k${i % 3}` }).submit();
    }
    await expect.poll(() => seen.length, { timeout: 20_000 }).toBe(20);
    for (const key of ['k0', 'k1', 'k2']) {
      const values = seen.filter((m) => m.key === key).map((m) => (JSON.parse(m.value) as { i: number }).i);
      expect(values).toEqual([...values].sort((a, b) => a - b));
      expect(new Set(seen.filter((m) => m.key === key).map((m) => m.partition)).size).toBe(1);
    }
  });

  it("puts a key on the partition Java's partitioner (and kafkajs's default) gives it", async () => {
    const topic = `java-${randomUUID()}`;
    const seen = await topics.collect(topic);
    const keys = Array.from({ length: 12 }, (_, i) => `customer-${i}`);
    await Promise.all(
      keys.map((key) => new Msg(coordinator.dtm, gid(), { waitResult: true }).add(`kafka://default/${topic}`, { key }, { key }).submit()),
    );
    await expect.poll(() => seen.length, { timeout: 20_000 }).toBe(keys.length);
    const java = Partitioners.DefaultPartitioner();
    const partitionMetadata = [0, 1, 2].map((partitionId) => ({ partitionId, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] }));
    for (const m of seen) expect(m.partition).toBe(java({ topic, partitionMetadata, message: { key: m.key, value: m.value } }));
    expect(new Set(seen.map((m) => m.partition)).size).toBeGreaterThan(1);
  });
});

describe('RabbitMQ destinations', () => {
  it('publishes persistent messages with a stable id and succeeds on the confirm', async () => {
    const queue = `q-${randomUUID()}`;
    const channel = await amqp.createChannel();
    await channel.assertQueue(queue, { durable: true });
    const g = gid();
    await new Msg(coordinator.dtm, g, { waitResult: true }).add(`rabbitmq://default//${queue}`, { orderId: 7 }).submit();
    const got = await channel.get(queue, { noAck: true });
    expect(got && got.content.toString()).toBe('{"orderId":7}');
    expect(got && got.properties).toMatchObject({ messageId: `${g}/01`, contentType: 'application/json', deliveryMode: 2 });
    await channel.close();
  });

  it('shows an unroutable message as a failing branch, never as delivered', async () => {
    const g = gid();
    await new Msg(coordinator.dtm, g).add(`rabbitmq://default//no-queue-${randomUUID()}`, { x: 1 }).submit();
    await expect
      .poll(async () => (await query(coordinator.dtm, g)).branches[0]?.last_error ?? '', { timeout: 10_000 })
      .toMatch(/unroutable/);
    expect((await query(coordinator.dtm, g)).transaction?.status).toBe('submitted');
  });
});

describe('per-key order', () => {
  it('delivers messages of one key in submit order, also when the first keeps failing and retries', async () => {
    const routingKey = `rk-${randomUUID()}`;
    const destination = `rabbitmq://default/amq.direct/${routingKey}`;
    // Nothing is bound yet: every delivery is unroutable, so the first message fails and retries.
    const gids = Array.from({ length: 5 }, gid);
    for (const [i, g] of gids.entries()) await new Msg(coordinator.dtm, g).add(destination, { i }, { key: 'account-1' }).submit();
    await expect
      .poll(async () => (await query(coordinator.dtm, gids[0]!)).branches[0]?.attempts ?? 0, { timeout: 10_000 })
      .toBeGreaterThan(1);
    for (const g of gids.slice(1)) expect((await query(coordinator.dtm, g)).branches[0]?.attempts).toBe(0);
    const channel = await amqp.createChannel();
    const { queue } = await channel.assertQueue('', { exclusive: true });
    await channel.bindQueue(queue, 'amq.direct', routingKey);
    for (const g of gids) await waitForStatus(coordinator.dtm, g, 'succeed', 30_000);
    const order: number[] = [];
    for (let got = await channel.get(queue, { noAck: true }); got; got = await channel.get(queue, { noAck: true })) {
      order.push((JSON.parse(got.content.toString()) as { i: number }).i);
    }
    expect(order).toEqual([0, 1, 2, 3, 4]);
    await channel.close();
  });
});

describe('topics', () => {
  it('fans a topic out to every subscriber: HTTP, Kafka and RabbitMQ', async () => {
    const name = `t-${randomUUID()}`;
    const kafkaTopic = `fan-${randomUUID()}`;
    const seen = await topics.collect(kafkaTopic);
    const queue = `fan-${randomUUID()}`;
    const channel = await amqp.createChannel();
    await channel.assertQueue(queue);
    for (const url of [`${bank.url}/TransIn`, `kafka://default/${kafkaTopic}`, `rabbitmq://default//${queue}`]) {
      const res = await fetch(`${coordinator.dtm}/subscribe?topic=${name}&url=${encodeURIComponent(url)}&remark=test`);
      expect(res.status).toBe(200);
    }
    const g = gid();
    await new Msg(coordinator.dtm, g, { waitResult: true }).addTopic(name, { amount: 3 }).submit();
    expect((await query(coordinator.dtm, g)).branches.map((b) => b.branch_id)).toEqual(['01-01', '01-02', '01-03']);
    expect(bank.received(g, '/TransIn')).toBe(1);
    await expect.poll(() => seen.length, { timeout: 20_000 }).toBe(1);
    expect((await channel.get(queue, { noAck: true })) !== false).toBe(true);
    await channel.close();
  });

  it('delivers to the subscribers of prepare time, even when the topic changes before submit', async () => {
    const name = `t-${randomUUID()}`;
    const sub = (verb: string, path: string) =>
      fetch(`${coordinator.dtm}/${verb}?topic=${name}&url=${encodeURIComponent(bank.url + path)}`);
    expect((await sub('subscribe', '/TransIn')).status).toBe(200);
    const g = gid();
    const msg = new Msg(coordinator.dtm, g, { waitResult: true }).addTopic(name, { amount: 2 });
    await msg.prepare(`${bank.url}/QueryPrepared`);
    expect((await sub('unsubscribe', '/TransIn')).status).toBe(200);
    expect((await sub('subscribe', '/TransOut')).status).toBe(200);
    await msg.submit();
    expect(bank.received(g, '/TransIn')).toBe(1);
    expect(bank.received(g, '/TransOut')).toBe(0);
    expect((await query(coordinator.dtm, g)).branches).toMatchObject([{ branch_id: '01', status: 'succeed' }]);
  });

  it('validates subscriptions and topic steps with errors that name the field', async () => {
    const name = `t-${randomUUID()}`;
    const sub = (q: string) => fetch(`${coordinator.dtm}/subscribe?${q}`).then(async (r) => ({ status: r.status, body: await r.json() }));
    expect(await sub(`topic=${name}&url=kafka://nowhere/x`)).toMatchObject({ status: 400, body: { field: 'url' } });
    expect(await sub(`topic=${name}`)).toMatchObject({ status: 400, body: { field: 'url' } });
    expect(await sub(`topic=${name}&url=${encodeURIComponent(bank.url + '/TransIn')}`)).toMatchObject({ status: 200 });
    expect(await sub(`topic=${name}&url=${encodeURIComponent(bank.url + '/TransIn')}`)).toMatchObject({
      status: 409,
      body: { field: 'url' },
    });
    const unsub = await fetch(`${coordinator.dtm}/unsubscribe?topic=${name}&url=http://other/x`);
    expect(unsub.status).toBe(404);
    const res = await fetch(`${coordinator.dtm}/submit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ gid: gid(), trans_type: 'msg', steps: [{ action: 'topic://nobody-listens' }], payloads: ['{}'] }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { field: string }).field).toBe('steps.0.action');
    expect((await fetch(`${coordinator.dtm}/topic/${name}`, { method: 'DELETE' })).status).toBe(200);
    expect((await fetch(`${coordinator.dtm}/topic/${name}`, { method: 'DELETE' })).status).toBe(404);
  });
});
