/**
 * The participant's commands on Kafka, read with @platformatic/kafka. The stream fetches on while
 * earlier commands are handled (kafkajs fetched again only once every message of the last fetch
 * was handled, so a command that arrived meanwhile waited for the slowest handler and the next
 * fetch), and up to `atOnce` commands are handled side by side, whatever their partition: they
 * are independent (each in its own barrier; the coordinator orders a saga's steps).
 *
 * At least once: an offset is committed only once its command and every one before it in the
 * partition are answered (HandledOffsets), so a participant that dies mid-handler is given the
 * command again and the barrier absorbs it. A command whose delivery failed (its reply could not
 * be published) is delivered again after a pause, and its partition's offset waits for it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Consumer, Message, MessagesStream } from '@platformatic/kafka';
import type { Logger } from 'pino';
import { backoffInterval, jitter } from '../schemas/backoff.js';
import { brokerHeaders, isTopicAlreadyThere } from '../schemas/broker-messages.js';
import { OffsetCommits } from '../schemas/handled-offsets.js';
import type { Deliver, RunningSource } from './consume.js';
import type { KafkaSource } from './consume-kafka.js';
import type { InboxMessage } from './inbox.js';
import { optionalPeer } from './optional-peer.js';

type KafkaMessage = Message<Buffer, Buffer, Buffer, Buffer>;
type Stream = MessagesStream<Buffer, Buffer, Buffer, Buffer>;

const loadKafka = () => optionalPeer('@platformatic/kafka', () => import('@platformatic/kafka'));
/** Between two deliveries of a command that failed, and between two sessions after a lost connection. */
const pause = { base: 0.2, cap: 10 };
/** The group's takeover time when the source sets none (kafkajs's default, which the SDK had). */
const defaultSessionTimeout = 30_000;

/** Creates `topic` when it is missing (the broker's default partition count). */
export async function ensureKafkaTopic(source: Omit<KafkaSource, 'topic'>, topic: string): Promise<void> {
  const { Admin } = await loadKafka();
  const admin = new Admin({ clientId: source.clientId ?? 'concord-participant', bootstrapBrokers: source.brokers });
  try {
    await admin.createTopics({ topics: [topic] });
  } catch (err) {
    if (!isTopicAlreadyThere(err)) throw err;
  } finally {
    await admin.close().catch(() => undefined);
  }
}

/**
 * Consumes `source.topic` until stop(): a lost connection starts a new session (from the committed
 * offsets) once the commands in progress have ended. Resolves once consuming started.
 */
export async function startKafkaCommands(source: KafkaSource, deliver: Deliver, logger: Logger, atOnce: number): Promise<RunningSource> {
  const { Consumer } = await loadKafka();
  const log = logger.child({ topic: source.topic, groupId: source.groupId });
  const stopping = new AbortController();
  const sessionTimeout = source.sessionTimeout ?? defaultSessionTimeout;
  const open = async () => {
    const consumer: Consumer<Buffer, Buffer, Buffer, Buffer> = new Consumer({
      clientId: source.clientId ?? 'concord-consumer',
      bootstrapBrokers: source.brokers,
      groupId: source.groupId,
      sessionTimeout,
      rebalanceTimeout: Math.max(sessionTimeout, 60_000),
      heartbeatInterval: Math.max(100, Math.floor(sessionTimeout / 10)),
    });
    try {
      const stream = await consumer.consume({
        topics: [source.topic],
        mode: 'committed',
        fallbackMode: source.fromBeginning === false ? 'latest' : 'earliest',
        autocommit: false,
      });
      return new Session(consumer, stream, deliver, log, atOnce, stopping.signal);
    } catch (err) {
      await closeConsumer(consumer);
      throw err;
    }
  };
  let session = await open();
  const stopped = new Promise<void>((resolve) => stopping.signal.addEventListener('abort', () => resolve(), { once: true }));
  const running = (async () => {
    for (let failures = 0; ;) {
      const lost = await Promise.race([session.ended, stopped]);
      if (stopping.signal.aborted) return;
      log.warn({ err: lost }, 'kafka consumer lost its connection, reconnecting');
      await session.close();
      for (;;) {
        await sleep(jitter(backoffInterval(pause, failures++)) * 1000, undefined, { signal: stopping.signal }).catch(() => undefined);
        if (stopping.signal.aborted) return;
        try {
          session = await open();
          failures = 0;
          break;
        } catch (err) {
          log.warn({ err }, 'kafka consumer could not reconnect, retrying');
        }
      }
    }
  })();
  return {
    async stop() {
      stopping.abort();
      await running;
      await session.close();
    },
  };
}

/** One consumer's life: its stream, the commands in progress, and the offsets they free. */
class Session {
  /** Settles with the error that ended the stream. */
  readonly ended: Promise<unknown>;
  /**
   * Answered offsets, committed together at most every 100 ms: a participant that dies loses at
   * most that much of commits, and the barrier absorbs the commands that come again.
   */
  private readonly offsets: OffsetCommits<KafkaMessage>;
  private readonly inProgress = new Set<Promise<void>>();
  private closing: Promise<void> | undefined;

  constructor(
    private readonly consumer: Consumer<Buffer, Buffer, Buffer, Buffer>,
    private readonly stream: Stream,
    private readonly deliver: Deliver,
    private readonly log: Logger,
    private readonly atOnce: number,
    private readonly stopping: AbortSignal,
  ) {
    this.ended = new Promise((resolve) => {
      stream.on('error', resolve);
      stream.on('close', () => resolve(new Error('kafka message stream closed')));
    });
    // Refused when a partition went to another member meanwhile: its commands come again there,
    // and the barrier absorbs them.
    this.offsets = new OffsetCommits((offsets) =>
      consumer.commit({ offsets }).then(
        () => undefined,
        (err: unknown) => log.debug({ err }, 'offsets not committed'),
      ),
    );
    stream.on('data', (message: KafkaMessage) => this.take(message));
  }

  private take(message: KafkaMessage): void {
    const entry = this.offsets.received(message);
    if (this.inProgress.size + 1 >= this.atOnce) this.stream.pause();
    const handling = this.handle(message).then((answered) => {
      this.inProgress.delete(handling);
      if (answered) this.offsets.handled(entry);
      if (!this.closing && this.stream.isPaused()) this.stream.resume();
    });
    this.inProgress.add(handling);
  }

  /**
   * Delivers until the command is answered (true), or until the session closes (false: it is not
   * acknowledged, so it comes again).
   */
  private async handle(message: KafkaMessage): Promise<boolean> {
    const inbox = toInbox(message);
    for (let failures = 0; ; failures++) {
      try {
        await this.deliver(inbox);
        return true;
      } catch (err) {
        if (this.stopping.aborted || this.closing) return false;
        this.log.warn({ err, source: inbox.source }, 'command not answered, delivering it again');
        await sleep(jitter(backoffInterval(pause, failures)) * 1000, undefined, { signal: this.stopping }).catch(() => undefined);
      }
    }
  }

  /** Stops fetching, waits for the commands in progress, commits what they answered, leaves the group. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stream.pause();
      await Promise.all(this.inProgress);
      await this.offsets.commit();
      await closeConsumer(this.consumer);
    })();
    return this.closing;
  }
}

function toInbox(message: KafkaMessage): InboxMessage {
  const headers: Record<string, string> = {};
  for (const [name, value] of message.headers) headers[name.toString().toLowerCase()] = value.toString();
  const position = `${message.topic}/${message.partition}/${message.offset}`;
  return {
    id: headers[brokerHeaders.messageId] || position,
    ...(message.key === undefined || message.key === null ? {} : { key: message.key.toString() }),
    value: message.value?.toString() ?? '',
    headers,
    source: `kafka:${position}`,
  };
}

/** Leaves the group at once (force): what was to be committed is, by then. */
function closeConsumer(consumer: Consumer<Buffer, Buffer, Buffer, Buffer>): Promise<void> {
  return new Promise((resolve) => consumer.close(true, () => resolve()));
}
