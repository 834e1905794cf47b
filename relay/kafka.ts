/**
 * Kafka publisher on kafkajs: an idempotent producer with acks from all in-sync replicas. Calls
 * that arrive together go out as one produce request per connection (sendBatch), so a burst of
 * messages costs one round trip to the broker. A delivery succeeds only on the broker's ack.
 *
 * Destination: kafka://<connection>/<topic>; the message key comes with the delivery.
 */
import type { Message, Producer } from 'kafkajs';
import type { Logger } from 'pino';
import { ConnectionStates, type Delivery, type DeliveryResult, type Publisher } from './publisher.js';
import { messageHeaders, parseDestination, withTimeout } from './destination.js';

/** Messages to one topic that succeed or fail together: one delivery, or a run of publishMany. */
interface Pending {
  topic: string;
  messages: Message[];
  resolve: (result: DeliveryResult) => void;
}

export function createKafkaPublisher(connections: Record<string, string[]>, logger: Logger): Publisher {
  const producers = new Map<string, Promise<Producer>>();
  // Known from connects and produce requests: kafkajs says nothing about a broker between requests.
  const states = new ConnectionStates('kafka');
  const queues = new Map<string, Pending[]>();
  const flushing = new Set<string>();
  const scheduled = new Set<string>();
  // Destinations are few and messages many (an outbox drain sends thousands per second to one topic).
  const destinations = new Map<string, ReturnType<typeof parseDestination>>();
  const parsed = (url: string) => {
    if (!destinations.has(url)) {
      if (destinations.size > 10_000) destinations.clear();
      destinations.set(url, parseDestination(url));
    }
    return destinations.get(url);
  };

  const producerFor = (name: string): Promise<Producer> => {
    let producer = producers.get(name);
    if (!producer) {
      const brokers = connections[name];
      if (!brokers) return Promise.reject(new Error(`no Kafka connection named "${name}"`));
      // kafkajs is loaded on first use: a coordinator without Kafka destinations does not carry it.
      producer = import('kafkajs')
        .then(async ({ Kafka, logLevel }) => {
          const kafka = new Kafka({ clientId: 'concord', brokers, logLevel: logLevel.NOTHING, retry: { retries: 2 } });
          // Idempotent: a retried produce request cannot duplicate or reorder messages in a partition.
          const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
          await p.connect();
          states.up(name);
          return p;
        })
        .catch((err: unknown) => {
          states.down(name, err);
          producers.delete(name);
          throw err;
        });
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
        for (const p of batch) {
          const messages = byTopic.get(p.topic);
          if (messages) for (const m of p.messages) messages.push(m);
          else byTopic.set(p.topic, [...p.messages]);
        }
        try {
          const producer = await producerFor(name);
          await producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
          states.up(name);
          for (const p of batch) p.resolve({ outcome: 'SUCCESS', detail: `kafka ack ${p.topic}` });
        } catch (err) {
          logger.warn({ err, connection: name }, 'kafka produce failed');
          states.down(name, err);
          producers.delete(name); // reconnect on the next attempt
          for (const p of batch) p.resolve({ outcome: 'ERROR', detail: `kafka: ${(err as Error).message}` });
        }
      }
    } finally {
      flushing.delete(name);
    }
  };

  const problem = (url: string): string | undefined => {
    const dest = parsed(url);
    if (!dest || dest.path.length !== 1 || dest.path[0] === '') return `bad Kafka destination "${url}": use kafka://<connection>/<topic>`;
    if (!connections[dest.connection]) return `no Kafka connection named "${dest.connection}" (configure kafkaBrokers or connections)`;
    return undefined;
  };

  const enqueue = (connection: string, topic: string, messages: Message[]) =>
    new Promise<DeliveryResult>((resolve) => {
      const queue = queues.get(connection) ?? [];
      queue.push({ topic, messages, resolve });
      queues.set(connection, queue);
      // The batch leaves after the current tick, so deliveries started together share it.
      if (!scheduled.has(connection)) {
        scheduled.add(connection);
        setImmediate(() => {
          scheduled.delete(connection);
          void flush(connection);
        });
      }
    });

  return {
    schemes: ['kafka'],
    problem,
    publish(delivery: Delivery): Promise<DeliveryResult> {
      const bad = problem(delivery.url);
      const dest = parsed(delivery.url);
      if (bad || !dest) return Promise.resolve({ outcome: 'ERROR', detail: bad ?? 'bad destination' });
      const message: Message = { key: delivery.key ?? null, value: delivery.payload, headers: messageHeaders(delivery) };
      return withTimeout(enqueue(dest.connection, dest.path[0]!, [message]), delivery.timeoutMs);
    },
    /**
     * Many deliveries in order, with one promise and one timer per run of messages to the same
     * topic instead of per message (an outbox drain hands over thousands at once).
     */
    publishMany(deliveries: Delivery[]): Promise<DeliveryResult[]> {
      const results: Promise<DeliveryResult>[] = [];
      const counts: number[] = [];
      let run: { url: string; messages: Message[]; timeoutMs: number } | undefined;
      const close = () => {
        if (!run) return;
        const bad = problem(run.url);
        const dest = parsed(run.url);
        results.push(
          bad || !dest
            ? Promise.resolve({ outcome: 'ERROR', detail: bad ?? 'bad destination' })
            : withTimeout(enqueue(dest.connection, dest.path[0]!, run.messages), run.timeoutMs),
        );
        counts.push(run.messages.length);
        run = undefined;
      };
      for (const delivery of deliveries) {
        if (run?.url !== delivery.url) close();
        run ??= { url: delivery.url, messages: [], timeoutMs: delivery.timeoutMs };
        run.messages.push({ key: delivery.key ?? null, value: delivery.payload, headers: messageHeaders(delivery) });
      }
      close();
      return Promise.all(results).then((settled) => settled.flatMap((result, i) => new Array<DeliveryResult>(counts[i]!).fill(result)));
    },
    async close() {
      await Promise.all([...producers.values()].map((p) => p.then((producer) => producer.disconnect()).catch(() => undefined)));
    },
    connections: () => states.list(),
    reconnect: (name) =>
      producerFor(name).then(
        () => undefined,
        () => undefined,
      ),
  };
}
