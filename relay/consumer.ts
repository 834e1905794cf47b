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
import type { Consumer } from 'kafkajs';
import type { Logger } from 'pino';
import { backoffInterval, jitter } from '../schemas/backoff.js';
import { parseDestination } from './destination.js';

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

const reconnect = { base: 0.5, cap: 15 };
/** Messages handled at once, per Kafka batch or RabbitMQ prefetch window. */
const concurrency = 32;
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
    let consumer: Consumer | undefined;
    closers.push(async () => {
      await consumer?.disconnect().catch(() => undefined);
    });
    keepRunning(name, async () => {
      const { Kafka, logLevel } = await import('kafkajs'); // loaded when first used, as the publisher does
      const kafka = new Kafka({ clientId, brokers, logLevel: logLevel.NOTHING });
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic, numPartitions: partitions }] }).finally(() => admin.disconnect());
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
        // Each partition's batch is handled beside the others', so the replies of one fetch share
        // the handler's store commits instead of waiting for them partition after partition.
        partitionsConsumedConcurrently: partitions,
        eachBatchAutoResolve: false,
        // Messages of a batch are handled side by side; the offset moves past the batch only once
        // all are handled, so a message not yet handled comes again.
        eachBatch: async (payload) => {
          const { batch } = payload;
          for (let i = 0; i < batch.messages.length && payload.isRunning() && !payload.isStale(); i += concurrency) {
            const slice = batch.messages.slice(i, i + concurrency);
            await Promise.all(
              slice.map((message) =>
                onMessage(message.value?.toString() ?? '', `kafka ${name} ${topic}/${batch.partition}/${message.offset}`),
              ),
            );
            payload.resolveOffset(slice[slice.length - 1]!.offset);
            await payload.heartbeat();
          }
        },
      });
      logger.info({ connection: name, topic }, 'consuming from kafka');
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
