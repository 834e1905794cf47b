/** The relay's Kafka publisher against the real test broker: how it spreads records over partitions. */
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createKafkaPublisher } from '../relay/kafka.js';
import type { Delivery, Publisher } from '../relay/publisher.js';
import { topicReader } from './helpers/kafka-topics.js';

const topics = topicReader(inject('kafkaBrokers').split(','));
const publisher: Publisher = createKafkaPublisher({ default: inject('kafkaBrokers').split(',') }, pino({ level: 'silent' }));

afterAll(async () => {
  await topics.close();
  await publisher.close();
});

const delivery = (topic: string, payload: string, key?: string): Delivery => ({
  url: `kafka://default/${topic}`,
  params: {},
  payload,
  headers: {},
  timeoutMs: 10_000,
  ...(key === undefined ? {} : { key }),
});

describe('Kafka publisher', () => {
  it('sends the keyless records of one produce request to one partition, and the next request to another', async () => {
    const topic = `sticky-${randomUUID()}`;
    const seen = await topics.collect(topic);
    const first = Array.from({ length: 12 }, (_, i) => delivery(topic, `a${i}`));
    const keyed = [delivery(topic, 'k1', 'order-1'), delivery(topic, 'k2', 'order-2'), delivery(topic, 'k3', 'order-3')];
    // Single publishes made in one tick share a produce request, as publishMany's do.
    const results = await Promise.all([...first, ...keyed].map((d) => publisher.publish(d)));
    expect(results.every((r) => r.outcome === 'SUCCESS')).toBe(true);
    const second = await publisher.publishMany!(Array.from({ length: 12 }, (_, i) => delivery(topic, `b${i}`)));
    expect(second.every((r) => r.outcome === 'SUCCESS')).toBe(true);
    await expect.poll(() => seen.length, { timeout: 30_000 }).toBe(27);

    const partitionsOf = (prefix: string) =>
      new Set(seen.filter((m) => m.key === undefined && m.value.startsWith(prefix)).map((m) => m.partition));
    expect(partitionsOf('a').size).toBe(1);
    expect(partitionsOf('b').size).toBe(1);
    // Over requests the keyless records still spread over the topic.
    expect([...partitionsOf('b')][0]).not.toBe([...partitionsOf('a')][0]);
    // Keyed records keep their key (and the partition its hash gives: broker-destinations.test.ts).
    expect(seen.filter((m) => m.key !== undefined).map((m) => m.key)).toEqual(expect.arrayContaining(['order-1', 'order-2', 'order-3']));
    // In order within the partition, as sent.
    expect(seen.filter((m) => m.value.startsWith('a')).map((m) => m.value)).toEqual(first.map((d) => d.payload));
  });
});
