/**
 * Listens for saga participants' replies: the reply topic on a Kafka connection (one consumer
 * group shared by the coordinators of a store) and the reply queue on a RabbitMQ connection, from
 * the moment a saga uses that connection (`listen`): a coordinator that only sends messages never
 * creates a reply topic or joins a group. A reply is
 * acknowledged only once `onReply` has recorded it, so replies sent while no coordinator runs, or
 * while the store is down, wait in the broker and are handled when it is back. A connection that
 * cannot be made, or is lost, is retried with capped, jittered backoff.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChannelModel } from 'amqplib';
import type { Consumer } from 'kafkajs';
import type { Logger } from 'pino';
import { backoffInterval, jitter } from '../schemas/backoff.js';
import { parseDestination } from './destination.js';
import { sagaReplySchema, type SagaReply } from '../schemas/saga.js';

export interface ReplyListener {
  /** Starts listening on the connection of this broker destination, unless it already does. */
  listen(url: string): void;
  close(): Promise<void>;
}

const reconnect = { base: 0.5, cap: 15 };
/** Replies recorded at once, per Kafka batch or RabbitMQ prefetch window. */
const replyConcurrency = 32;
/** Partitions of a reply topic this listener creates. */
const replyPartitions = 8;

export function listenForReplies(
  connections: { kafka: Record<string, string[]>; rabbitmq: Record<string, string> },
  topic: string,
  onReply: (reply: SagaReply) => Promise<void>,
  logger: Logger,
): ReplyListener {
  const stopping = new AbortController();
  const closers: (() => Promise<void>)[] = [];

  /** The reply in a message body, or undefined (logged and dropped: a malformed reply can never be used). */
  const parse = (body: string, where: string): SagaReply | undefined => {
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      json = undefined;
    }
    const parsed = sagaReplySchema.safeParse(json);
    if (parsed.success) return parsed.data;
    logger.warn({ where, body: body.slice(0, 200), issue: parsed.error?.issues[0]?.message }, 'malformed saga reply dropped');
    return undefined;
  };

  /** Runs `session` again and again (after a failure, with backoff) until the listener closes. */
  const keepRunning = (name: string, session: () => Promise<void>) => {
    void (async () => {
      for (let failures = 0; !stopping.signal.aborted;) {
        try {
          await session();
          failures = 0;
        } catch (err) {
          if (stopping.signal.aborted) return;
          logger.warn({ err, connection: name }, 'reply listener lost its connection, retrying');
          await sleep(jitter(backoffInterval(reconnect, failures++)) * 1000, undefined, { signal: stopping.signal }).catch(() => undefined);
        }
      }
    })();
  };

  const listenKafka = (name: string, brokers: string[]) => {
    let consumer: Consumer | undefined;
    closers.push(async () => {
      await consumer?.disconnect().catch(() => undefined);
    });
    keepRunning(name, async () => {
      const { Kafka, logLevel } = await import('kafkajs'); // loaded when a saga uses Kafka, as the publisher does
      const kafka = new Kafka({ clientId: 'concord-replies', brokers, logLevel: logLevel.NOTHING });
      const admin = kafka.admin();
      await admin.connect();
      // Partitions spread the replies over the coordinators of the store (the key is the gid).
      await admin.createTopics({ topics: [{ topic, numPartitions: replyPartitions }] }).finally(() => admin.disconnect());
      // A coordinator that died holds its partitions until the session times out: keep that short.
      const c = kafka.consumer({ groupId: topic, sessionTimeout: 10_000, heartbeatInterval: 1_000 });
      consumer = c;
      const crashed = new Promise<void>((_, reject) =>
        c.on(c.events.CRASH, (event) => {
          if (!event.payload.restart) reject(event.payload.error);
        }),
      );
      crashed.catch(() => undefined); // raced below; never unhandled
      await c.connect();
      await c.subscribe({ topic, fromBeginning: true });
      await c.run({
        eachBatchAutoResolve: false,
        // Replies of a batch are recorded side by side (each touches its own saga); the offset moves
        // past the batch only once all are recorded, so a reply not yet recorded comes again.
        eachBatch: async (payload) => {
          const { batch } = payload;
          for (let i = 0; i < batch.messages.length && payload.isRunning() && !payload.isStale(); i += replyConcurrency) {
            const slice = batch.messages.slice(i, i + replyConcurrency);
            await Promise.all(
              slice.map(async (message) => {
                const reply = parse(message.value?.toString() ?? '', `kafka ${name} ${topic}/${batch.partition}/${message.offset}`);
                if (reply) await onReply(reply);
              }),
            );
            payload.resolveOffset(slice[slice.length - 1]!.offset);
            await payload.heartbeat();
          }
        },
      });
      logger.info({ connection: name, topic }, 'listening for saga replies on kafka');
      // kafkajs restarts itself after retriable errors; a crash it gives up on starts a new session.
      await Promise.race([crashed, new Promise((resolve) => stopping.signal.addEventListener('abort', resolve, { once: true }))]);
      await c.disconnect().catch(() => undefined);
    });
  };

  const listenRabbit = (name: string, url: string) => {
    let model: ChannelModel | undefined;
    closers.push(async () => {
      await model?.close().catch(() => undefined);
    });
    keepRunning(name, async () => {
      const { connect } = await import('amqplib');
      const m = await connect(url);
      model = m;
      const closed = new Promise<void>((resolve, reject) => {
        m.on('close', () => (stopping.signal.aborted ? resolve() : reject(new Error('rabbitmq connection closed'))));
        m.on('error', () => undefined); // 'close' follows
      });
      closed.catch(() => undefined); // awaited below; never unhandled
      const channel = await m.createChannel();
      channel.on('error', () => undefined); // the connection's 'close' follows
      await channel.assertQueue(topic, { durable: true });
      await channel.prefetch(replyConcurrency);
      await channel.consume(topic, (msg) => {
        if (!msg) return;
        const reply = parse(msg.content.toString(), `rabbitmq ${name} ${topic}`);
        // Acked only once recorded; a failure requeues it for another try.
        (reply ? onReply(reply) : Promise.resolve()).then(
          () => channel.ack(msg),
          (err: unknown) => {
            logger.warn({ err, connection: name }, 'saga reply not recorded, requeued');
            setTimeout(() => {
              try {
                channel.nack(msg, false, true);
              } catch {
                // the channel is gone; the broker requeues it anyway
              }
            }, 500);
          },
        );
      });
      logger.info({ connection: name, queue: topic }, 'listening for saga replies on rabbitmq');
      await closed;
    });
  };

  const listening = new Set<string>();
  return {
    listen(url) {
      const dest = parseDestination(url);
      if (!dest || stopping.signal.aborted) return;
      const id = `${dest.scheme}://${dest.connection}`;
      if (listening.has(id)) return;
      const brokers = dest.scheme === 'kafka' ? connections.kafka[dest.connection] : undefined;
      const amqpUrl = dest.scheme === 'rabbitmq' ? connections.rabbitmq[dest.connection] : undefined;
      if (brokers) listenKafka(dest.connection, brokers);
      else if (amqpUrl) listenRabbit(dest.connection, amqpUrl);
      else return;
      listening.add(id);
    },
    async close() {
      stopping.abort();
      await Promise.all(closers.map((close) => close()));
    },
  };
}
