/**
 * How a saga participant answers the coordinator: the reply (schemas/saga.ts) goes to the
 * command's `concord-reply-to`, a Kafka topic on the participant's brokers or a RabbitMQ queue on
 * its broker. A send resolves only once the broker has the reply (Kafka acks from all in-sync
 * replicas, RabbitMQ publisher confirm); the command is acknowledged only after that.
 */
import { randomUUID } from 'node:crypto';
import type { ChannelModel, ConfirmChannel } from 'amqplib';
import type { MessageToProduce, Producer } from '@platformatic/kafka';
import type { Logger } from 'pino';
import { sagaReplySchema, type SagaReply } from '../schemas/saga.js';
import { dtmHeaders } from '../schemas/broker-messages.js';
import type { KafkaSource } from './consume-kafka.js';
import { optionalPeer } from './optional-peer.js';
import { sendTogether } from './send-together.js';

export interface ReplyPublisher {
  /** Resolves when the broker acknowledged the reply; rejects otherwise. */
  send(replyTo: string, reply: SagaReply): Promise<void>;
  close(): Promise<void>;
}

/** A reply the broker has not acknowledged by then is treated as lost (and the command redelivered). */
const replyTimeoutMs = 30_000;

function replyHeaders(reply: SagaReply): Record<string, string> {
  return dtmHeaders({ gid: reply.gid, branch_id: reply.branch_id, op: reply.op });
}

/**
 * One idempotent producer (@platformatic/kafka) for every reply topic, connected once; replies
 * sent while a produce is in flight go together in the next one (sendTogether).
 */
export async function kafkaReplyPublisher(source: Omit<KafkaSource, 'topic'>): Promise<ReplyPublisher> {
  const { Producer, compatibilityPartitioner } = await optionalPeer('@platformatic/kafka', () => import('@platformatic/kafka'));
  // Idempotent: a retried produce request cannot write a reply twice. Acks from all in-sync replicas.
  const producer: Producer<string, string, string, string> = new Producer({
    clientId: source.clientId ?? 'concord-participant',
    bootstrapBrokers: source.brokers,
    idempotent: true,
    acks: -1,
    timeout: replyTimeoutMs,
    autocreateTopics: true,
    // Java's partitioner (murmur2 of the gid), as the coordinator's producer and kafkajs.
    partitioner: compatibilityPartitioner,
    serializers: { key: text, value: text, headerKey: text, headerValue: text },
  });
  try {
    await producer.metadata({ topics: [] }); // connects: a bad broker fails start()
  } catch (err) {
    await producer.close().catch(() => undefined);
    throw err;
  }
  const send = sendTogether<MessageToProduce<string, string, string, string>>(async (messages) => {
    await withTimeout(producer.send({ messages }));
  });
  return {
    async send(replyTo, reply) {
      const value = JSON.stringify(sagaReplySchema.parse(reply));
      await send({ topic: replyTo, key: reply.gid, value, headers: replyHeaders(reply) });
    },
    close: () => producer.close(),
  };
}

const text = (data: string | undefined): Buffer | undefined => (data === undefined ? undefined : Buffer.from(data));

interface Link {
  model: ChannelModel;
  channel: ConfirmChannel;
  /** Replies the broker returned as unroutable (no such queue), by message id, until their confirm. */
  returned: Map<string, string>;
}

/**
 * A confirm channel on its own connection, reopened on the next reply after it is lost. `queue`
 * (the participant's command queue) is asserted durable on it when it opens.
 */
export async function rabbitReplyPublisher(url: string, queue: string, logger: Logger): Promise<ReplyPublisher> {
  let link: Promise<Link> | undefined;
  let closing = false;
  const open = (): Promise<Link> => {
    if (link) return link;
    const current: Promise<Link> = (async () => {
      const { connect } = await optionalPeer('amqplib', () => import('amqplib'));
      const model = await connect(url);
      try {
        const channel = await model.createConfirmChannel();
        await channel.assertQueue(queue, { durable: true });
        const returned = new Map<string, string>();
        channel.on('return', (msg: { properties: { messageId?: string }; fields: { replyText?: string } }) => {
          if (msg.properties.messageId) returned.set(msg.properties.messageId, msg.fields.replyText ?? 'NO_ROUTE');
        });
        const drop = (err?: unknown) => {
          if (err && !closing) logger.warn({ err }, 'rabbitmq reply connection lost');
          if (link === current) link = undefined;
        };
        model.on('error', drop);
        model.on('close', () => drop());
        channel.on('error', drop);
        channel.on('close', () => drop());
        return { model, channel, returned };
      } catch (err) {
        await model.close().catch(() => undefined);
        throw err;
      }
    })();
    link = current;
    current.catch(() => {
      if (link === current) link = undefined;
    });
    return current;
  };
  await open();
  return {
    async send(replyTo, reply) {
      const body = Buffer.from(JSON.stringify(sagaReplySchema.parse(reply)));
      const { channel, returned } = await open();
      const messageId = randomUUID();
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          channel.sendToQueue(
            replyTo,
            body,
            // mandatory: a reply queue that does not exist shows up in the log instead of nowhere.
            { persistent: true, mandatory: true, contentType: 'application/json', messageId, headers: replyHeaders(reply) },
            (err: unknown) => (err ? reject(err instanceof Error ? err : new Error('reply nacked by the broker')) : resolve()),
          );
        }),
      );
      // The return arrives before the confirm. The reply is gone for good; redelivering the
      // command would only loop, so the coordinator's reply timeout (a new attempt) takes over.
      const reason = returned.get(messageId);
      returned.delete(messageId);
      if (reason) logger.error({ replyTo, reason, gid: reply.gid, branchId: reply.branch_id }, 'reply unroutable: no such queue');
    },
    async close() {
      closing = true;
      const last = link;
      link = undefined;
      if (last) await last.then((l) => l.model.close()).catch(() => undefined);
    },
  };
}

function withTimeout<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no broker acknowledgement of the reply within ${replyTimeoutMs} ms`)), replyTimeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
