/**
 * Exactly-once in effect on top of at-least-once delivery. Each message runs its handler inside the
 * consumer's own database transaction, together with an inbox row keyed by the message id, and
 * only after that commit is the message acknowledged (Kafka offset, RabbitMQ ack). A redelivery
 * finds the inbox row and changes nothing. A handler that keeps failing is retried with capped,
 * jittered backoff, then parked in a dead-letter table, and consumption goes on; `redrive` replays
 * parked messages once the cause is fixed. Given a coordinator, the consumer reports what it parked
 * there and takes the redrives operators ask for in the admin UI (parked-reporter.ts).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import { backoffInterval, jitter, type BackoffPolicy } from '../schemas/backoff.js';
import { startKafkaSource, type KafkaSource } from './consume-kafka.js';
import { startRabbitSource, type RabbitSource } from './consume-rabbitmq.js';
import { CoordinatorClient } from './coordinator-client.js';
import { isBranchFailure } from './errors.js';
import { ConcordError } from '../schemas/errors.js';
import { consumerNameMaxLength } from '../schemas/consumer-parked.js';
import { startParkedReporter, type ParkedReporter } from './parked-reporter.js';
import {
  applyOnce,
  ensureInboxTables,
  listParked,
  parkMessage,
  recordParkedFailure,
  type InboxMessage,
  type ParkedMessage,
} from './inbox.js';
import type { TransactionSource } from './sql-executor.js';
import { inMessageSpan } from './tracing.js';

export type { KafkaSource } from './consume-kafka.js';
export type { RabbitSource } from './consume-rabbitmq.js';

/** Where messages come from: a Kafka topic read by a consumer group, or a RabbitMQ queue. */
export type ConsumeSource = { kafka: KafkaSource } | { rabbitmq: RabbitSource };

/** What the handler gets: the message, and the transaction to make its changes in. */
export interface ConsumedMessage<Tx> extends Omit<InboxMessage, 'source'> {
  /** The open transaction (a pg client, or a drizzle transaction): write with it, or the inbox cannot cover the write. */
  tx: Tx;
}

/** Runs once per message id in effect. Throw BranchFailure to park the message without retrying. */
export type ConsumeHandler<Tx> = (message: ConsumedMessage<Tx>) => Promise<void>;

/** How often a handler runs before its message is given up on, and the backoff between runs. */
export interface HandlerRetry {
  /** Runs in all, the first included. */
  attempts?: number;
  /** First delay, seconds (default 0.2). */
  base?: number;
  /** Largest delay, seconds (default 10). */
  cap?: number;
}

export interface ConsumeOptions {
  /** The consumer's own database (pg Pool or drizzle database): inbox, dead-letter table and the handler's transaction. */
  db: TransactionSource;
  /** Names the inbox rows and parked messages of this consumer; keep it stable across restarts. */
  consumerName: string;
  /** Handler runs per message before it is parked (default 5), and the backoff between them. */
  retry?: HandlerRetry;
  /** Aborting it closes the consumer. */
  signal?: AbortSignal;
  /** A pino logger; the consumer logs through a child `{ component: 'sdk.consume', consumer }`. Silent by default. */
  logger?: Logger;
  /**
   * The coordinator to report parked messages to, for its admin UI, and to take operators'
   * redrives from (docs/consumers.md#parked-messages-in-the-admin-ui). Without it they stay local.
   */
  coordinator?: ParkedReportOptions;
}

export interface ParkedReportOptions {
  /** The coordinator's DTM API, as for Msg: http://host:36789/api/dtmsvr (or /t/<token>/api/dtmsvr). */
  server: string;
  /** An API token (the report is no operator action), sent as a bearer. */
  token?: string;
  /** Seconds between reports, and so how soon a redrive asked in the admin UI runs (default 10). */
  interval?: number;
}

export interface Consumer {
  /** Stops fetching, lets the handler in progress finish (a backoff wait is cut short), then disconnects. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
  /** The parked messages of this consumer, oldest first. */
  parked(): Promise<ParkedMessage[]>;
  /**
   * Runs the handler once more for each parked message (those of `ids`, message ids, when given),
   * oldest first, under the same inbox rules; a success deletes the parked row in the same
   * transaction. Returns how many succeeded; a failure stays parked with one more attempt counted.
   */
  redrive(ids?: string[]): Promise<number>;
}

/** What a broker adapter calls for each message; resolves once it may be acknowledged. */
export type Deliver = (message: InboxMessage, heartbeat?: () => Promise<void>) => Promise<void>;

/** The adapter's side of a running source. */
export interface RunningSource {
  /** Stops fetching and waits for the message in progress. */
  stop(): Promise<void>;
}

export async function consume<Tx = unknown>(
  source: ConsumeSource,
  handler: ConsumeHandler<Tx>,
  options: ConsumeOptions,
): Promise<Consumer> {
  const { db, consumerName } = options;
  const attempts = Math.max(1, options.retry?.attempts ?? 5);
  const policy: BackoffPolicy = { base: options.retry?.base ?? 0.2, cap: options.retry?.cap ?? 10 };
  const logger = (options.logger ?? pino({ level: 'silent' })).child({ component: 'sdk.consume', consumer: consumerName });
  const stopping = new AbortController();
  if (options.coordinator && consumerName.length > consumerNameMaxLength)
    throw new ConcordError('INVALID_REQUEST', `consumerName is longer than ${consumerNameMaxLength} characters`, { field: 'consumerName' });
  await ensureInboxTables(db);
  let reporter: ParkedReporter | undefined;

  // Each run of the handler is a span, child of the trace context the message carries (traceparent).
  const apply = (message: InboxMessage) =>
    inMessageSpan(
      `${consumerName} process`,
      message.headers,
      { 'messaging.message.id': message.id, 'messaging.consumer.group.name': consumerName },
      () =>
        applyOnce<Tx>(db, consumerName, message.id, (tx) =>
          handler({ id: message.id, key: message.key, value: message.value, headers: message.headers, tx }),
        ),
    );

  const deliver: Deliver = async (message, heartbeat) => {
    const log = logger.child({ messageId: message.id, source: message.source });
    let firstFailure: Date | undefined;
    let error: unknown;
    let runs = 0;
    while (runs < attempts) {
      if (runs > 0) {
        // Cut short by close(): the message is not acknowledged, so it comes again.
        await sleep(jitter(backoffInterval(policy, runs - 1)) * 1000, undefined, { signal: stopping.signal });
        await heartbeat?.();
      }
      runs++;
      try {
        const ran = await apply(message);
        log.debug({ ran, attempt: runs }, ran ? 'message applied' : 'message already applied');
        return;
      } catch (err) {
        error = err;
        firstFailure ??= new Date();
        if (isBranchFailure(err)) break;
        if (runs < attempts) log.warn({ err, attempt: runs }, 'handler failed, retrying');
      }
    }
    const failure = { error: errorText(error), attempts: runs, firstFailure: firstFailure ?? new Date() };
    // Parking must land before the message is acknowledged; a database that is down is waited for.
    for (let tries = 0; ; tries++) {
      try {
        await parkMessage(db, consumerName, message, failure);
        break;
      } catch (err) {
        log.warn({ err }, 'parking failed, retrying');
        await sleep(jitter(backoffInterval(policy, tries)) * 1000, undefined, { signal: stopping.signal });
      }
    }
    log.error({ err: error, attempts: runs }, 'message parked');
    reporter?.nudge();
  };

  const redrive = async (ids?: string[]) => {
    let succeeded = 0;
    for (const message of await listParked(db, consumerName, ids)) {
      try {
        await apply(message);
        succeeded++;
        logger.info({ messageId: message.id }, 'parked message redriven');
      } catch (err) {
        await recordParkedFailure(db, consumerName, message.id, errorText(err));
        logger.warn({ err, messageId: message.id }, 'redrive failed, message stays parked');
      }
    }
    return succeeded;
  };

  const running: RunningSource =
    'kafka' in source ? await startKafkaSource(source.kafka, deliver, logger) : await startRabbitSource(source.rabbitmq, deliver, logger);
  logger.info({ source: 'kafka' in source ? 'kafka' : 'rabbitmq' }, 'consumer started');
  if (options.coordinator) {
    const { server, token, interval } = options.coordinator;
    reporter = startParkedReporter({
      client: new CoordinatorClient(server, { ...(token === undefined ? {} : { token }), signal: stopping.signal }),
      db,
      consumer: consumerName,
      // At least 50 ms: a zero would report in a tight loop.
      intervalMs: Math.max(50, (interval ?? 10) * 1000),
      redrive,
      logger,
      signal: stopping.signal,
    });
  }

  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= (async () => {
      options.signal?.removeEventListener('abort', onAbort);
      stopping.abort();
      await running.stop();
      await reporter?.stopped;
      logger.info('consumer closed');
    })();
    return closed;
  };
  const onAbort = () => void close();
  if (options.signal?.aborted) await close();
  else options.signal?.addEventListener('abort', onAbort, { once: true });

  return {
    close,
    [Symbol.asyncDispose]: close,
    parked: () => listParked(db, consumerName),
    redrive,
  };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
