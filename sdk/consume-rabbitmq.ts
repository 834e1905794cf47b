/**
 * The RabbitMQ side of `consume`, on amqplib: manual acks, a prefetch window, and one message at a
 * time in delivery order. A message is acked only after the handler's transaction committed or the
 * message was parked; one left unacked when the channel closes is requeued by the broker, and the
 * inbox absorbs the redelivery. A lost connection is reopened with capped, jittered backoff.
 */
import { createHash } from 'node:crypto';
import type { ChannelModel, ConsumeMessage } from 'amqplib';
import { backoffInterval, jitter } from '../schemas/backoff.js';
import type { Logger } from 'pino';
import type { Deliver, RunningSource } from './consume.js';
import { brokerHeaders } from '../schemas/broker-messages.js';
import { optionalPeer } from './optional-peer.js';

export interface RabbitSource {
  /** amqp://user:password@host:port/vhost */
  url: string;
  /** An existing queue. */
  queue: string;
  /** Unacked messages the broker may send ahead (default 16). */
  prefetch?: number;
}

export async function startRabbitSource(source: RabbitSource, deliver: Deliver, logger: Logger): Promise<RunningSource> {
  const log = logger.child({ queue: source.queue });
  let stopping = false;
  let current: { model: ChannelModel; consumerTag: string; chain: Promise<void> } | undefined;
  let reconnecting: NodeJS.Timeout | undefined;

  /** One connection's life: consume until it closes, then come back (unless stopping). */
  const session = async (): Promise<void> => {
    const { connect } = await optionalPeer('amqplib', () => import('amqplib'));
    const model = await connect(source.url);
    try {
      const channel = await model.createChannel();
      channel.on('error', (err: unknown) => log.error({ err }, 'rabbitmq channel error'));
      await channel.prefetch(source.prefetch ?? 16);
      const state = { model, consumerTag: '', chain: Promise.resolve() };
      const handle = async (msg: ConsumeMessage): Promise<void> => {
        if (stopping) return; // unacked: the broker requeues it when the channel closes
        try {
          await deliver(toInboxMessage(source.queue, msg));
          channel.ack(msg);
        } catch (err) {
          if (stopping) return;
          log.error({ err }, 'message not handled, requeued');
          try {
            channel.nack(msg, false, true);
          } catch {
            // the channel is gone; the broker requeues the message anyway
          }
        }
      };
      state.consumerTag = (
        await channel.consume(
          source.queue,
          (msg) => {
            if (msg === null) log.error('rabbitmq cancelled the consumer (queue deleted?)');
            // One at a time, in delivery order: the prefetch only saves round trips.
            else state.chain = state.chain.then(() => handle(msg));
          },
          { noAck: false },
        )
      ).consumerTag;
      model.on('error', (err: unknown) => log.warn({ err }, 'rabbitmq connection error'));
      model.on('close', () => {
        if (stopping) return;
        log.warn('rabbitmq connection closed; reconnecting');
        current = undefined;
        reconnect(0);
      });
      current = state;
    } catch (err) {
      await model.close().catch(() => undefined);
      throw err;
    }
  };

  // A lost broker is retried with the one backoff schedule until it is back or the consumer stops.
  const reconnect = (failures: number): void => {
    const delay = jitter(backoffInterval({ base: 0.5, cap: 10 }, failures));
    reconnecting = setTimeout(() => {
      if (stopping) return;
      session().then(
        () => log.info('rabbitmq consumer reconnected'),
        (err: unknown) => {
          log.warn({ err, failures: failures + 1 }, 'rabbitmq reconnect failed');
          reconnect(failures + 1);
        },
      );
    }, delay * 1000);
  };

  await session();
  return {
    async stop() {
      stopping = true;
      clearTimeout(reconnecting);
      const last = current;
      if (!last) return;
      const channelGone = last.model.close.bind(last.model);
      await last.chain;
      await channelGone().catch(() => undefined);
    },
  };
}

function toInboxMessage(queue: string, msg: ConsumeMessage) {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries<unknown>(msg.properties.headers ?? {})) {
    if (value === undefined || value === null) continue;
    headers[name.toLowerCase()] = Buffer.isBuffer(value) ? value.toString() : typeof value === 'string' ? value : JSON.stringify(value);
  }
  const messageId = msg.properties.messageId as unknown;
  // Without any id the body is the only stable thing: identical bodies then count as one message.
  const id =
    headers[brokerHeaders.messageId] ||
    (typeof messageId === 'string' && messageId !== ''
      ? messageId
      : `${queue}/sha256/${createHash('sha256').update(msg.content).digest('hex')}`);
  return {
    id,
    ...(msg.fields.routingKey ? { key: msg.fields.routingKey } : {}),
    value: msg.content.toString(),
    headers,
    source: `rabbitmq:${queue}`,
  };
}
