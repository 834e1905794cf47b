/**
 * The Kafka side of `consume`, on kafkajs (the saga participant reads its commands with
 * participant-kafka.ts). Messages of a partition are handled one at a time, in order
 * (`eachMessage`). An offset is marked for commit only when the handler's transaction has
 * committed or the message was parked, so a consumer that dies mid-handler is given the message
 * again and the inbox absorbs it. A parked message is committed like any other: its partition
 * moves on.
 */
import type { IHeaders, KafkaMessage } from 'kafkajs';
import type { Logger } from 'pino';
import type { Deliver, RunningSource } from './consume.js';
import { brokerHeaders } from '../schemas/broker-messages.js';
import { optionalPeer } from './optional-peer.js';

export interface KafkaSource {
  /** host:port of one or more brokers. */
  brokers: string[];
  topic: string;
  /** Consumer group: the members share the topic's partitions and its committed offsets. */
  groupId: string;
  /** Where a group with no committed offset starts: the topic's beginning (default) or its end. */
  fromBeginning?: boolean;
  /** Partitions handled at once by this member (default 1). A saga participant ignores it: it handles up to 32 commands at once, from all its partitions. */
  partitionsConsumedConcurrently?: number;
  /** Kafka client id (default `concord-consumer`). */
  clientId?: string;
  /**
   * Milliseconds after which the group gives a silent member's partitions to the others (default
   * 30 000). Shorter means faster takeover after a crash, and more rebalances on GC pauses.
   */
  sessionTimeout?: number;
}

export async function startKafkaSource(source: KafkaSource, deliver: Deliver, logger: Logger): Promise<RunningSource> {
  const log = logger.child({ topic: source.topic, groupId: source.groupId });
  const { Kafka, logLevel } = await optionalPeer('kafkajs', () => import('kafkajs'));
  const kafka = new Kafka({ clientId: source.clientId ?? 'concord-consumer', brokers: source.brokers, logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({
    groupId: source.groupId,
    ...(source.sessionTimeout !== undefined
      ? { sessionTimeout: source.sessionTimeout, heartbeatInterval: Math.max(100, Math.floor(source.sessionTimeout / 10)) }
      : {}),
  });
  consumer.on(consumer.events.CRASH, (event) =>
    log.error({ err: event.payload.error, restart: event.payload.restart }, 'kafka consumer crashed'),
  );
  await consumer.connect();
  try {
    await consumer.subscribe({ topic: source.topic, fromBeginning: source.fromBeginning ?? true });
    const toInbox = (topic: string, partition: number, message: KafkaMessage) => {
      const headers = textHeaders(message.headers);
      const position = `${topic}/${partition}/${message.offset}`;
      return {
        id: headers[brokerHeaders.messageId] || position,
        ...(message.key === null ? {} : { key: message.key.toString() }),
        value: message.value?.toString() ?? '',
        headers,
        source: `kafka:${position}`,
      };
    };
    await consumer.run({
      partitionsConsumedConcurrently: source.partitionsConsumedConcurrently ?? 1,
      // kafkajs resolves the offset only when this returns, and commits resolved offsets only.
      eachMessage: async (payload) => deliver(toInbox(payload.topic, payload.partition, payload.message), () => payload.heartbeat()),
    });
  } catch (err) {
    await consumer.disconnect().catch(() => undefined);
    throw err;
  }
  return {
    // disconnect() waits for the message in progress and commits the resolved offsets.
    stop: () => consumer.disconnect(),
  };
}

function textHeaders(headers: IHeaders | undefined): Record<string, string> {
  const text: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value === undefined) continue;
    text[name.toLowerCase()] = Array.isArray(value) ? value.map(String).join(',') : value.toString();
  }
  return text;
}
