/**
 * Kafka publisher on kafkajs: an idempotent producer with acks from all in-sync replicas. Calls
 * that arrive together go out as one produce request per connection (sendBatch), so a burst of
 * messages costs one round trip to the broker. A delivery succeeds only on the broker's ack.
 *
 * Destination: kafka://<connection>/<topic>; the message key comes with the delivery.
 */
import { Kafka, logLevel, type Message, type Producer } from 'kafkajs';
import type { Logger } from 'pino';
import type { Delivery, DeliveryResult, Publisher } from './publisher.js';
import { messageHeaders, parseDestination, withTimeout } from './destination.js';

interface Pending {
  topic: string;
  message: Message;
  resolve: (result: DeliveryResult) => void;
}

export function createKafkaPublisher(connections: Record<string, string[]>, logger: Logger): Publisher {
  const producers = new Map<string, Promise<Producer>>();
  const queues = new Map<string, Pending[]>();
  const flushing = new Set<string>();

  const producerFor = (name: string): Promise<Producer> => {
    let producer = producers.get(name);
    if (!producer) {
      const brokers = connections[name];
      if (!brokers) return Promise.reject(new Error(`no Kafka connection named "${name}"`));
      const kafka = new Kafka({ clientId: 'concord', brokers, logLevel: logLevel.NOTHING, retry: { retries: 2 } });
      // Idempotent: a retried produce request cannot duplicate or reorder messages in a partition.
      const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
      producer = p.connect().then(
        () => p,
        (err: unknown) => {
          producers.delete(name);
          throw err;
        },
      );
      producers.set(name, producer);
    }
    return producer;
  };

  const flush = async (name: string): Promise<void> => {
    if (flushing.has(name)) return;
    flushing.add(name);
    try {
      for (let batch = queues.get(name) ?? []; batch.length > 0; batch = queues.get(name) ?? []) {
        queues.set(name, []);
        const byTopic = new Map<string, Message[]>();
        for (const p of batch) byTopic.set(p.topic, [...(byTopic.get(p.topic) ?? []), p.message]);
        try {
          const producer = await producerFor(name);
          await producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
          for (const p of batch) p.resolve({ outcome: 'SUCCESS', detail: `kafka ack ${p.topic}` });
        } catch (err) {
          logger.warn({ err, connection: name }, 'kafka produce failed');
          producers.delete(name); // reconnect on the next attempt
          for (const p of batch) p.resolve({ outcome: 'ERROR', detail: `kafka: ${(err as Error).message}` });
        }
      }
    } finally {
      flushing.delete(name);
    }
  };

  const problem = (url: string): string | undefined => {
    const dest = parseDestination(url);
    if (!dest || dest.path.length !== 1 || dest.path[0] === '') return `bad Kafka destination "${url}": use kafka://<connection>/<topic>`;
    if (!connections[dest.connection]) return `no Kafka connection named "${dest.connection}" (configure kafkaBrokers or connections)`;
    return undefined;
  };

  return {
    schemes: ['kafka'],
    problem,
    publish(delivery: Delivery): Promise<DeliveryResult> {
      const bad = problem(delivery.url);
      const dest = parseDestination(delivery.url);
      if (bad || !dest) return Promise.resolve({ outcome: 'ERROR', detail: bad ?? 'bad destination' });
      const headers = messageHeaders(delivery);
      const acked = new Promise<DeliveryResult>((resolve) => {
        const message: Message = { key: delivery.key ?? null, value: delivery.payload, headers };
        const queue = queues.get(dest.connection) ?? [];
        queue.push({ topic: dest.path[0]!, message, resolve });
        queues.set(dest.connection, queue);
        // The batch leaves after the current tick, so deliveries started together share it.
        setImmediate(() => void flush(dest.connection));
      });
      return withTimeout(acked, delivery.timeoutMs);
    },
    async close() {
      await Promise.all([...producers.values()].map((p) => p.then((producer) => producer.disconnect()).catch(() => undefined)));
    },
  };
}
