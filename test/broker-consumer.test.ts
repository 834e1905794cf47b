/**
 * The coordinator's broker consumer (relay/consumer.ts, which reads saga replies) on the real Kafka
 * of the test setup: it reads on while earlier messages are still being handled, commits only
 * offsets whose message and every one before it were handled, and hands a message whose
 * handling failed over again.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, type Admin, type Producer } from 'kafkajs';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { consumeBrokers, type BrokerConsumer } from '../relay/consumer.js';
import { HandledOffsets, OffsetCommits, type CommitOffset } from '../schemas/handled-offsets.js';

describe('HandledOffsets', () => {
  it('answers, per partition, the last message handled with every one before it', () => {
    const offsets = new HandledOffsets<{ partition: number; offset: bigint }>();
    const m = (partition: number, offset: number) => ({ partition, offset: BigInt(offset) });
    const [a0, a1, a2, b0] = [m(0, 0), m(0, 1), m(0, 2), m(1, 0)];
    const [e0, e1, e2, f0] = [a0, a1, a2, b0].map((x) => offsets.received(x));
    expect(offsets.handled(e1!)).toBe(false); // 0 is still being handled
    expect(offsets.handled(f0!)).toBe(true);
    expect(offsets.take()).toEqual([b0]);
    expect(offsets.handled(e0!)).toBe(true);
    expect(offsets.take()).toEqual([a1]);
    expect(offsets.take()).toEqual([]);
    expect(offsets.handled(e2!)).toBe(true);
    expect(offsets.take()).toEqual([a2]);
  });
});

describe('OffsetCommits', () => {
  it('commits the partitions freed since the last commit in one request, and never moves an offset back', async () => {
    const sent: CommitOffset[][] = [];
    // An interval no test waits for: the commits here are the ones asked for.
    const commits = new OffsetCommits<{ topic: string; partition: number; offset: bigint }>(async (o) => void sent.push(o), 60_000);
    const m = (partition: number, offset: number) => ({ topic: 't', partition, offset: BigInt(offset) });
    const at = (partition: number, offset: number) => ({ topic: 't', partition, offset: BigInt(offset), leaderEpoch: -1 });
    commits.handled(commits.received(m(0, 5)));
    commits.handled(commits.received(m(1, 2)));
    await commits.commit();
    expect(sent).toEqual([[at(0, 6), at(1, 3)]]);
    // Offset 4 of partition 0 fetched again after a rebalance: committing it would move the partition back.
    commits.handled(commits.received(m(0, 4)));
    await commits.commit();
    expect(sent).toHaveLength(1);
    commits.handled(commits.received(m(0, 6)));
    await commits.commit();
    expect(sent).toEqual([[at(0, 6), at(1, 3)], [at(0, 7)]]);
  });
});

describe('consuming a Kafka topic', () => {
  const brokers = () => inject('kafkaBrokers').split(',');
  let kafka: Kafka;
  let producer: Producer;
  let admin: Admin;
  const listeners: BrokerConsumer[] = [];

  beforeAll(async () => {
    kafka = new Kafka({ brokers: brokers(), logLevel: logLevel.NOTHING });
    producer = kafka.producer();
    admin = kafka.admin();
    await Promise.all([producer.connect(), admin.connect()]);
  });
  afterAll(async () => {
    await Promise.all(listeners.map((l) => l.close()));
    await Promise.all([producer?.disconnect(), admin?.disconnect()]);
  });

  const listen = (topic: string, onMessage: (body: string) => Promise<void>) => {
    const listener = consumeBrokers({
      connections: { kafka: { default: brokers() }, rabbitmq: {} },
      topic,
      clientId: 'test-consumer',
      onMessage,
      logger: pino({ level: 'silent' }),
    });
    listener.listen(`kafka://default/${topic}`);
    listeners.push(listener);
    return listener;
  };
  /** The group's committed offset summed over the topic's partitions (the group is named after the topic). */
  const committed = async (topic: string) => {
    const [offsets] = await admin.fetchOffsets({ groupId: topic, topics: [topic] });
    return (offsets?.partitions ?? []).reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
  };
  /** Messages with one key land on one partition. */
  const send = (topic: string, ...bodies: string[]) => producer.send({ topic, messages: bodies.map((value) => ({ key: 'k', value })) });

  it('reads on while an earlier message of the partition is being handled, and commits only past handled ones', async () => {
    const topic = `consumer-${randomUUID()}`;
    const handled: string[] = [];
    let started = false;
    let release: () => void = () => undefined;
    const slow = new Promise<void>((resolve) => (release = resolve));
    listen(topic, async (body) => {
      if (body === 'first') {
        started = true;
        await slow;
      }
      handled.push(body);
    });
    // The listener creates the topic and joins its group; the first message waits for that.
    await expect.poll(async () => (await admin.listTopics()).includes(topic), { timeout: 30_000 }).toBe(true);
    await send(topic, 'first');
    // Sent once 'first' is being handled, so that it comes in a later fetch.
    await expect.poll(() => started, { timeout: 30_000 }).toBe(true);
    await send(topic, 'second');
    await expect.poll(() => handled, { timeout: 30_000 }).toEqual(['second']);
    // 'second' is handled but 'first' is not: nothing may be committed yet.
    expect(await committed(topic)).toBe(0);
    release();
    await expect.poll(() => committed(topic), { timeout: 30_000 }).toBe(2);
    expect(handled).toEqual(['second', 'first']);
  });

  it('hands a message whose handling failed over again, and a new member starts after the committed ones', async () => {
    const topic = `consumer-${randomUUID()}`;
    const seen: string[] = [];
    let failures = 0;
    const first = listen(topic, async (body) => {
      seen.push(body);
      if (body === 'm2' && failures++ === 0) throw new Error('store down');
    });
    await expect.poll(async () => (await admin.listTopics()).includes(topic), { timeout: 30_000 }).toBe(true);
    await send(topic, 'm1', 'm2', 'm3');
    await expect.poll(() => committed(topic), { timeout: 60_000 }).toBe(3);
    expect(seen.filter((b) => b === 'm2')).toHaveLength(2);
    await first.close();
    const later: string[] = [];
    listen(topic, async (body) => void later.push(body));
    await send(topic, 'm4');
    await expect.poll(() => later, { timeout: 60_000 }).toEqual(['m4']);
  });
});
