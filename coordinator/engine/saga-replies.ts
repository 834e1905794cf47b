/**
 * Saga participants' replies, read from the reply topic (Kafka) or queue (RabbitMQ) of each broker
 * connection a saga uses, from the moment it uses it: a coordinator that only sends messages never
 * creates a reply topic or joins a group. A reply is acknowledged only once `onReply` has recorded
 * it, so replies sent while no coordinator runs, or while the store is down, wait in the broker.
 */
import type { Logger } from 'pino';
import { consumeBrokers, type BrokerConsumer } from '../../relay/consumer.js';
import { sagaReplySchema, type SagaReply } from '../../schemas/saga.js';

export type ReplyListener = BrokerConsumer;

export function listenForSagaReplies(
  connections: { kafka: Record<string, string[]>; rabbitmq: Record<string, string> },
  topic: string,
  onReply: (reply: SagaReply) => Promise<void>,
  logger: Logger,
): ReplyListener {
  /** A malformed reply can never be used: logged and dropped (acknowledged), not redelivered forever. */
  const onMessage = async (body: string, where: string): Promise<void> => {
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      json = undefined;
    }
    const parsed = sagaReplySchema.safeParse(json);
    if (parsed.success) return onReply(parsed.data);
    logger.warn({ where, body: body.slice(0, 200), issue: parsed.error.issues[0]?.message }, 'malformed saga reply dropped');
  };
  return consumeBrokers({ connections, topic, clientId: 'concord-replies', onMessage, logger });
}
