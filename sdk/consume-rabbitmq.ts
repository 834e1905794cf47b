/**
 * The RabbitMQ side of `consume`, on amqplib: manual acks, a prefetch window, and one message at a
 * time in delivery order. A message is acked only after the handler's transaction committed or the
 * message was parked; one left unacked when the channel closes is requeued by the broker, and the
 * inbox absorbs the redelivery.
 */
import { createHash } from 'node:crypto';
import { connect, type ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import type { Deliver, RunningSource } from './consume.js';

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
  const model = await connect(source.url);
  let stopping = false;
  model.on('error', (err: unknown) => log.error({ err }, 'rabbitmq connection error'));
  model.on('close', () => {
    if (!stopping) log.error('rabbitmq connection closed; this consumer receives nothing more');
  });
  try {
    const channel = await model.createChannel();
    channel.on('error', (err: unknown) => log.error({ err }, 'rabbitmq channel error'));
    await channel.prefetch(source.prefetch ?? 16);
    let chain = Promise.resolve();

    const handle = async (msg: ConsumeMessage): Promise<void> => {
      if (stopping) return; // unacked: the broker requeues it when the channel closes
      try {
        await deliver(toInboxMessage(source.queue, msg));
        channel.ack(msg);
      } catch (err) {
        if (stopping) return;
        log.error({ err }, 'message not handled, requeued');
        channel.nack(msg, false, true);
      }
    };

    const { consumerTag } = await channel.consume(
      source.queue,
      (msg) => {
        if (msg === null) log.error('rabbitmq cancelled the consumer (queue deleted?)');
        // One at a time, in delivery order: the prefetch only saves round trips.
        else chain = chain.then(() => handle(msg));
      },
      { noAck: false },
    );
    return {
      async stop() {
        stopping = true;
        await channel.cancel(consumerTag).catch(() => undefined);
        await chain;
        await model.close().catch(() => undefined);
      },
    };
  } catch (err) {
    stopping = true;
    await model.close().catch(() => undefined);
    throw err;
  }
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
    headers['message-id'] ||
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
