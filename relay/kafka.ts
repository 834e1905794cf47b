/**
 * Kafka publisher on @platformatic/kafka: an idempotent producer with acks from all in-sync
 * replicas. Calls that arrive together go out as one send per connection, so a burst of messages
 * costs one round trip to the broker. A delivery succeeds only on the broker's ack.
 *
 * Producing is the relay's hottest loop (an outbox drain sends tens of thousands of records a
 * second), and this client encodes a record for about a third of kafkajs's CPU (docs/brokers.md);
 * the saga replies are read with it too (consumer.ts), and the SDK's participant uses it; `consume` stays on kafkajs.
 *
 * Destination: kafka://<connection>/<topic>; the message key comes with the delivery.
 */
import type { MessageToProduce, Producer } from '@platformatic/kafka';
import type { Logger } from 'pino';
import { ConnectionStates, type Delivery, type DeliveryResult, type Publisher } from './publisher.js';
import { messageHeaders, parseDestination, withTimeout } from './destination.js';

type Bytes = string | Buffer;
type Producer_ = Producer<Bytes, Bytes, Bytes, Bytes>;
type Record_ = MessageToProduce<Bytes, Bytes, Bytes, Bytes>;

const record = (topic: string, delivery: Delivery): Record_ => ({
  topic,
  key: delivery.key ?? undefined,
  value: delivery.payload,
  headers: messageHeaders(delivery),
});

const bytes = (data: Bytes | undefined): Buffer | undefined => (typeof data === 'string' ? Buffer.from(data) : data);

/**
 * Header names are a few constants (message-id, the dtm-* coordinates, content-type, the callers'
 * own): encoded once and shared by every record, not once per header of each record. The producer
 * only reads them.
 */
function headerKeyBytes(): (data: Bytes | undefined) => Buffer | undefined {
  const known = new Map<string, Buffer>();
  return (data) => {
    if (typeof data !== 'string') return data;
    let encoded = known.get(data);
    if (!encoded) {
      if (known.size >= 1_000) known.clear();
      encoded = Buffer.from(data);
      known.set(data, encoded);
    }
    return encoded;
  };
}

/**
 * Java's partitioner (murmur2 of the key, as kafkajs's default and the Java client), so a key lands
 * on the partition every other producer of the topic puts it on. Keyless records have their
 * partition already (stickyPartitions).
 */
function partitioner(javaCompatible: (message: never, key: Buffer) => number): (message: unknown, key: Buffer | undefined) => number {
  return (_message, key) => javaCompatible(undefined as never, key!);
}

/**
 * Keyless records of one produce request all go to one partition of their topic, the next request's
 * to the next (the Java client's sticky partitioner, KIP-480): one record batch per topic instead of
 * one per partition, so the broker appends and the consumers fetch a few large batches rather than
 * many of a record or two. Keyless records have no order to keep; keyed ones stay on their key's.
 */
function stickyPartitions(): (records: Record_[]) => void {
  const next = new Map<string, number>();
  return (records) => {
    const chosen = new Map<string, number>();
    for (const r of records) {
      if (r.key !== undefined) continue;
      let partition = chosen.get(r.topic);
      if (partition === undefined) {
        partition = next.get(r.topic) ?? 0;
        chosen.set(r.topic, partition);
        // The producer takes it modulo the topic's partition count.
        next.set(r.topic, (partition + 1) & 0x7fffffff);
        if (next.size > 10_000) next.clear();
      }
      r.partition = partition;
    }
  };
}

/** The error's own words and those of the broker errors under it, for last_error. */
function describe(err: unknown): string {
  const e = err as Error & { errors?: unknown[] };
  const inner = Array.isArray(e.errors) ? e.errors.map(describe) : [];
  const cause = e.cause instanceof Error ? [describe(e.cause)] : [];
  return [e.message, ...new Set([...inner, ...cause])].filter(Boolean).join(': ');
}

/** Messages to one topic that succeed or fail together: one delivery, or a run of publishMany. */
interface Pending {
  topic: string;
  records: Record_[];
  resolve: (result: DeliveryResult) => void;
}

export function createKafkaPublisher(connections: Record<string, string[]>, logger: Logger): Publisher {
  const producers = new Map<string, Promise<Producer_>>();
  // Known from connects and produce requests: the client says nothing about a broker between requests.
  const states = new ConnectionStates('kafka');
  const queues = new Map<string, Pending[]>();
  const flushing = new Set<string>();
  const scheduled = new Set<string>();
  const assignPartitions = stickyPartitions();
  // Destinations are few and messages many (an outbox drain sends thousands per second to one topic).
  const destinations = new Map<string, ReturnType<typeof parseDestination>>();
  const parsed = (url: string) => {
    if (!destinations.has(url)) {
      if (destinations.size > 10_000) destinations.clear();
      destinations.set(url, parseDestination(url));
    }
    return destinations.get(url);
  };

  const producerFor = (name: string): Promise<Producer_> => {
    let producer = producers.get(name);
    if (!producer) {
      const brokers = connections[name];
      if (!brokers) return Promise.reject(new Error(`no Kafka connection named "${name}"`));
      // The client is loaded on first use: a coordinator without Kafka destinations does not carry it.
      producer = import('@platformatic/kafka')
        .then(async ({ Producer, compatibilityPartitioner }) => {
          // Idempotent: a retried produce request cannot duplicate or reorder messages in a partition.
          // Two retries, then the delivery fails and the engine retries it later: a broker that is
          // down must not hold the queue behind one endless send.
          const p: Producer_ = new Producer({
            clientId: 'concord',
            bootstrapBrokers: brokers,
            idempotent: true,
            retries: 2,
            retryDelay: 300,
            autocreateTopics: true,
            partitioner: partitioner(compatibilityPartitioner),
            serializers: { key: bytes, value: bytes, headerKey: headerKeyBytes(), headerValue: bytes },
          });
          try {
            await p.metadata({ topics: [] }); // connects, as kafkajs's connect() did: a bad broker fails here
          } catch (err) {
            await p.close().catch(() => undefined);
            throw err;
          }
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
        const records = batch.length === 1 ? batch[0]!.records : batch.flatMap((p) => p.records);
        assignPartitions(records);
        let producer: Promise<Producer_> | undefined;
        try {
          producer = producerFor(name);
          await (await producer).send({ messages: records });
          states.up(name);
          for (const p of batch) p.resolve({ outcome: 'SUCCESS', detail: `kafka ack ${p.topic}` });
        } catch (err) {
          const detail = describe(err);
          logger.warn({ err, detail, connection: name }, 'kafka produce failed');
          states.down(name, err);
          // A new producer (and connections) on the next attempt; this one may be stuck mid-request.
          if (producer && producers.get(name) === producer) {
            producers.delete(name);
            void producer.then((p) => p.close()).catch(() => undefined);
          }
          for (const p of batch) p.resolve({ outcome: 'ERROR', detail: `kafka: ${detail}` });
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

  const enqueue = (connection: string, topic: string, records: Record_[]) =>
    new Promise<DeliveryResult>((resolve) => {
      const queue = queues.get(connection) ?? [];
      queue.push({ topic, records, resolve });
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
      const topic = dest.path[0]!;
      return withTimeout(enqueue(dest.connection, topic, [record(topic, delivery)]), delivery.timeoutMs);
    },
    /**
     * Many deliveries in order, with one promise and one timer per run of messages to the same
     * topic instead of per message (an outbox drain hands over thousands at once).
     */
    publishMany(deliveries: Delivery[]): Promise<DeliveryResult[]> {
      const results: Promise<DeliveryResult>[] = [];
      const counts: number[] = [];
      let run: { url: string; deliveries: Delivery[]; timeoutMs: number } | undefined;
      const close = () => {
        if (!run) return;
        const bad = problem(run.url);
        const dest = parsed(run.url);
        const topic = dest?.path[0];
        results.push(
          bad || !dest || topic === undefined
            ? Promise.resolve({ outcome: 'ERROR', detail: bad ?? 'bad destination' })
            : withTimeout(
                enqueue(
                  dest.connection,
                  topic,
                  run.deliveries.map((d) => record(topic, d)),
                ),
                run.timeoutMs,
              ),
        );
        counts.push(run.deliveries.length);
        run = undefined;
      };
      for (const delivery of deliveries) {
        if (run?.url !== delivery.url) close();
        run ??= { url: delivery.url, deliveries: [], timeoutMs: delivery.timeoutMs };
        run.deliveries.push(delivery);
      }
      close();
      return Promise.all(results).then((settled) => settled.flatMap((result, i) => new Array<DeliveryResult>(counts[i]!).fill(result)));
    },
    async close() {
      await Promise.all([...producers.values()].map((p) => p.then((producer) => producer.close()).catch(() => undefined)));
    },
    connections: () => states.list(),
    reconnect: (name) =>
      producerFor(name).then(
        () => undefined,
        () => undefined,
      ),
  };
}
