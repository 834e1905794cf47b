/**
 * Consumes one topic (Kafka) or queue (RabbitMQ) of the same name on each broker connection it is
 * asked to (`listen`), from that moment on: one consumer group, named after the topic, shared by
 * every process that consumes it, so each message goes to one of them. A message is acknowledged
 * only once `onMessage` has handled it, so messages sent while nobody consumes, or while the
 * handler cannot finish (its store is down), wait in the broker. A connection that cannot be made,
 * or is lost, is retried with capped, jittered backoff. What the messages mean is the caller's.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChannelModel } from 'amqplib';
import type { Consumer as KafkaConsumer, Message, MessagesStream } from '@platformatic/kafka';
import type { Logger } from 'pino';
import { backoffInterval, jitter } from '../schemas/backoff.js';
import { isTopicAlreadyThere } from '../schemas/broker-messages.js';
import { parseDestination } from './destination.js';
import { OffsetCommits } from '../schemas/handled-offsets.js';

export interface BrokerConsumer {
  /** Starts consuming on the connection of this broker destination (kafka://… or rabbitmq://…), unless it already does. */
  listen(url: string): void;
  close(): Promise<void>;
}

export interface BrokerConsumerOptions {
  connections: { kafka: Record<string, string[]>; rabbitmq: Record<string, string> };
  /** The Kafka topic (and consumer group) or RabbitMQ queue, created when missing. */
  topic: string;
  /** Kafka client id, for the brokers' logs. */
  clientId: string;
  /** Handles one message body; the message is acknowledged when this resolves and comes again when it rejects. */
  onMessage: (body: string, where: string) => Promise<void>;
  logger: Logger;
}

type KafkaMessage = Message<Buffer, Buffer, Buffer, Buffer>;
type KafkaStream = MessagesStream<Buffer, Buffer, Buffer, Buffer>;

const reconnect = { base: 0.5, cap: 15 };
/** Messages handled at once: RabbitMQ's prefetch window. */
const concurrency = 32;
/** Kafka messages handled at once; the stream pauses above it (they share the handler's store commits). */
const maxInFlight = 256;
/** Partitions of a topic this consumer creates: they spread the messages over the processes of the group. */
const partitions = 8;

export function consumeBrokers({ connections, topic, clientId, onMessage, logger }: BrokerConsumerOptions): BrokerConsumer {
  const stopping = new AbortController();
  const closers: (() => Promise<void>)[] = [];

  /** Runs `session` again and again (after a failure, with backoff) until the listener closes. */
  const keepRunning = (name: string, session: () => Promise<void>) => {
    void (async () => {
      for (let failures = 0; !stopping.signal.aborted;) {
        try {
          await session();
          failures = 0;
        } catch (err) {
          if (stopping.signal.aborted) return;
          logger.warn({ err, connection: name, topic }, 'broker consumer lost its connection, retrying');
          await sleep(jitter(backoffInterval(reconnect, failures++)) * 1000, undefined, { signal: stopping.signal }).catch(() => undefined);
        }
      }
    })();
  };

  const listenKafka = (name: string, brokers: string[]) => {
    let consumer: KafkaConsumer | undefined;
    closers.push(async () => {
      if (consumer) await closeConsumer(consumer);
    });
    keepRunning(name, async () => {
      // Loaded when first used, as the publisher does.
      const { Admin, Consumer } = await import('@platformatic/kafka');
      const admin = new Admin({ clientId, bootstrapBrokers: brokers });
      try {
        await admin.createTopics({ topics: [topic], partitions });
      } catch (err) {
        if (!isTopicAlreadyThere(err)) throw err;
      } finally {
        await admin.close().catch(() => undefined);
      }
      // A coordinator that died holds its partitions until the session times out: keep that short.
      const c = new Consumer({ clientId, bootstrapBrokers: brokers, groupId: topic, sessionTimeout: 10_000, heartbeatInterval: 1_000 });
      consumer = c;
      try {
        // The stream fetches on while earlier messages are handled (kafkajs fetched again only once
        // a fetch's every message was handled); the offsets committed are those handled (OffsetCommits).
        const stream = await c.consume({ topics: [topic], mode: 'committed', fallbackMode: 'earliest', autocommit: false });
        logger.info({ connection: name, topic }, 'consuming from kafka');
        await handleStream(name, stream);
      } finally {
        await closeConsumer(c);
      }
    });
  };

  /**
   * Hands every message of `stream` to onMessage, up to maxInFlight at once, and commits what was
   * handled, in one request at most every 100 ms (OffsetCommits: a coordinator that stops or dies
   * meanwhile leaves them uncommitted; those replies come again, and recording one twice changes
   * nothing). Ends when the listener closes; throws when the stream fails or a message could not
   * be handled (the session starts again from the committed offsets, so that message comes again).
   */
  const handleStream = (name: string, stream: KafkaStream) =>
    new Promise<void>((resolve, reject) => {
      // A commit refused (the partition went to another member meanwhile) only means the message
      // is handled again there, which a reply's recording absorbs.
      const offsets = new OffsetCommits<KafkaMessage>((handled) =>
        stream.consumer.commit({ offsets: handled }).then(
          () => undefined,
          (err: unknown) => logger.debug({ err, connection: name, topic }, 'offsets not committed'),
        ),
      );
      let inFlight = 0;
      const fail = (err: unknown) => {
        stream.pause();
        reject(err instanceof Error ? err : new Error(String(err)));
      };
      stream.on('data', (message: KafkaMessage) => {
        const entry = offsets.received(message);
        if (++inFlight >= maxInFlight) stream.pause();
        onMessage(message.value.toString(), `kafka ${name} ${topic}/${message.partition}/${message.offset}`).then(() => {
          if (--inFlight === maxInFlight / 2 && stream.isPaused()) stream.resume();
          offsets.handled(entry);
        }, fail);
      });
      stream.on('error', fail);
      stream.on('close', () => reject(new Error('kafka message stream closed')));
      stopping.signal.addEventListener('abort', () => resolve(), { once: true });
    });

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
      await channel.prefetch(concurrency);
      await channel.consume(topic, (msg) => {
        if (!msg) return;
        // Acked only once handled; a failure requeues it for another try.
        onMessage(msg.content.toString(), `rabbitmq ${name} ${topic}`).then(
          () => channel.ack(msg),
          (err: unknown) => {
            logger.warn({ err, connection: name, queue: topic }, 'message not handled, requeued');
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
      logger.info({ connection: name, queue: topic }, 'consuming from rabbitmq');
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

/** Closes at once (force): messages in flight are not waited for; their offsets were not committed. */
function closeConsumer(consumer: KafkaConsumer): Promise<void> {
  return new Promise((resolve) => consumer.close(true, () => resolve()));
}
