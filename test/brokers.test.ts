/** The test brokers of the global setup (test/services/kafka.ts, rabbitmq.ts) carry messages end to end. */
import { randomBytes } from 'node:crypto';
import { connect } from 'amqplib';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';

/** Closers of whatever a test opened, run after it whether it passed or not. */
const open: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of open.splice(0).reverse()) await close();
});

function unique(name: string): string {
  return `concord-test-${name}-${randomBytes(6).toString('hex')}`;
}

describe('Kafka test broker', () => {
  it('delivers a produced message to a consumer of a fresh topic', async () => {
    const kafka = new Kafka({ clientId: 'concord-brokers-test', brokers: inject('kafkaBrokers').split(','), logLevel: logLevel.NOTHING });
    const topic = unique('topic');
    const value = unique('value');

    const admin = kafka.admin();
    await admin.connect();
    open.push(() => admin.disconnect());
    expect(await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })).toBe(true);

    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    open.push(() => producer.disconnect());
    const [sent] = await producer.send({ topic, acks: -1, messages: [{ key: 'greeting', value }] });
    expect(sent).toMatchObject({ topicName: topic, partition: 0, errorCode: 0 });

    const consumer = kafka.consumer({ groupId: unique('group') });
    await consumer.connect();
    open.push(() => consumer.disconnect());
    await consumer.subscribe({ topic, fromBeginning: true });
    const received: { key: string | undefined; value: string | undefined }[] = [];
    await consumer.run({
      eachMessage: async ({ message }) => {
        received.push({ key: message.key?.toString(), value: message.value?.toString() });
      },
    });
    // Joining a new consumer group takes a few seconds on a fresh broker.
    await expect.poll(() => received, { timeout: 30_000, interval: 50 }).toEqual([{ key: 'greeting', value }]);
  });
});

describe('RabbitMQ test broker', () => {
  it('confirms a message published to a fresh queue and hands it back', async () => {
    const connection = await connect(inject('amqpUrl'));
    open.push(() => connection.close());
    const channel = await connection.createConfirmChannel();
    // Exclusive: the queue goes with the connection, also on a shared broker (CONCORD_TEST_AMQP_URL).
    const { queue } = await channel.assertQueue(unique('queue'), { exclusive: true });
    const content = unique('content');

    channel.sendToQueue(queue, Buffer.from(content), { persistent: true, contentType: 'text/plain' });
    await channel.waitForConfirms(); // rejects if the broker nacks

    const message = await vi.waitFor(
      async () => {
        const got = await channel.get(queue, { noAck: false });
        if (got === false) throw new Error(`queue ${queue} is empty`);
        return got;
      },
      { timeout: 10_000, interval: 50 },
    );
    expect(message.content.toString()).toBe(content);
    expect(message.properties.contentType).toBe('text/plain');
    channel.ack(message);
    expect(await channel.checkQueue(queue)).toMatchObject({ queue, messageCount: 0 });
  });
});
