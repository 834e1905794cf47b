/**
 * The service side of a saga's broker steps. The coordinator publishes a command (the step's
 * payload, with headers naming the saga, the branch, the op, the command type and where to
 * reply) to a Kafka topic or a RabbitMQ queue; a participant runs the handler registered for the
 * command type inside the branch barrier, in its own database, and publishes the reply. The
 * command is acknowledged only after the reply is, so a crash in between redelivers it, and the
 * barrier turns the rerun into a duplicate that answers SUCCESS without running the business again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import { z } from 'zod';
import { backoffInterval, jitter, type BackoffPolicy } from '../schemas/backoff.js';
import { gidSchema } from '../schemas/dtm.js';
import { commandHeaders, type SagaReply } from '../schemas/saga.js';
import { BranchBarrier, ensureBarrierTable } from './barrier.js';
import type { Deliver, HandlerRetry, RunningSource } from './consume.js';
import type { KafkaSource } from './consume-kafka.js';
import { ensureKafkaTopic, startKafkaCommands } from './participant-kafka.js';
import { startRabbitSource, type RabbitSource } from './consume-rabbitmq.js';
import { isBranchFailure } from './errors.js';
import type { InboxMessage } from './inbox.js';
import { kafkaReplyPublisher, rabbitReplyPublisher, type ReplyPublisher } from './participant-reply.js';
import type { TransactionSource } from './sql-executor.js';
import { inMessageSpan } from './tracing.js';
import { brokerHeaders } from '../schemas/broker-messages.js';

/** A Kafka consumer group reading the participant's topic; replies go to the same brokers. */
export type ParticipantKafkaSource = Omit<KafkaSource, 'topic'>;
/** A RabbitMQ broker; the participant's queue is asserted durable, and replies go to the same broker. */
export type ParticipantRabbitSource = Omit<RabbitSource, 'queue'>;

export interface ParticipantOptions {
  /** Where the commands come from; the topic (Kafka) or queue (RabbitMQ) is participant()'s first argument. */
  source: { kafka: ParticipantKafkaSource } | { rabbitmq: ParticipantRabbitSource };
  /** The participant's own database (pg Pool or drizzle database): the barrier table and the handlers' transactions. */
  db: TransactionSource;
  /** Handler runs per command before the reply is ERROR (default 3), and the backoff between them. */
  retry?: HandlerRetry;
  /** Aborting it closes the participant. */
  signal?: AbortSignal;
  /** A pino logger; the participant logs through a child `{ component: 'sdk.participant', topic }`. Silent by default. */
  logger?: Logger;
}

/** What a command handler gets. */
export interface SagaCommand<Tx> {
  /** The open transaction (a pg client, or a drizzle transaction): write with it, or the barrier cannot cover the write. */
  tx: Tx;
  /** The step's payload, as sent. */
  payload: string;
  /** The payload parsed as JSON (a function property, so that it may be destructured). */
  json: <T = unknown>() => T;
  gid: string;
  branchId: string;
  op: 'action' | 'compensate';
  /** The command type (`concord-command`), which picked this handler. */
  command: string;
  /** 1 for the coordinator's first publication, 2, 3… for its republications. */
  attempt: number;
  /** The message's headers, lower-case names. */
  headers: Record<string, string>;
}

/**
 * Runs once per (gid, branch, op) in effect. Its return value (JSON) is the reply's result;
 * BranchFailure replies FAILURE (an action's FAILURE rolls the saga back); any other error is
 * retried, then replied as ERROR, and the step's retry policy applies.
 */
export type CommandHandler<Tx> = (command: SagaCommand<Tx>) => Promise<unknown>;

export interface Participant<Tx = unknown> {
  /** Registers the handler of a command type (a step's `command` or `compensateCommand`). */
  on(commandType: string, handler: CommandHandler<Tx>): this;
  /** Creates the barrier table if missing, connects, and starts consuming. */
  start(): Promise<void>;
  /** Stops fetching, lets the command in progress finish (a backoff wait is cut short), then disconnects. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A participant reading commands from `topic`: a Kafka topic or a RabbitMQ queue, per `options.source`. */
export function participant<Tx = unknown>(topic: string, options: ParticipantOptions): Participant<Tx> {
  return new SagaParticipant<Tx>(topic, options);
}

/** The headers of a command; DTM's coordinates come from the relay's message headers. */
const commandSchema = z.object({
  gid: gidSchema,
  branchId: z.string().min(1).max(128),
  op: z.enum(['action', 'compensate']),
  command: z.string().min(1).max(128),
  attempt: z.coerce.number().int().min(1),
  replyTo: z.string().min(1).max(255),
});
type Command = z.infer<typeof commandSchema>;

const kafkaTopicName = /^[A-Za-z0-9._-]{1,249}$/;
/**
 * Kafka commands handled at once: they are independent (each in its own barrier; the coordinator
 * orders a saga's steps), so a partition's commands need not wait for each other's commits and
 * replies.
 */
const commandsAtOnce = 32;
const maxResult = 65_536;
const maxError = 4096;

type Outcome = Pick<SagaReply, 'outcome' | 'result' | 'error'>;

class SagaParticipant<Tx> implements Participant<Tx> {
  private readonly handlers = new Map<string, CommandHandler<Tx>>();
  private readonly attempts: number;
  private readonly policy: BackoffPolicy;
  private readonly base: Logger;
  private readonly log: Logger;
  private readonly stopping = new AbortController();
  private replies: ReplyPublisher | undefined;
  private running: RunningSource | undefined;
  private started: Promise<void> | undefined;
  private closed: Promise<void> | undefined;
  private readonly onAbort = () => void this.close();

  constructor(
    readonly topic: string,
    private readonly options: ParticipantOptions,
  ) {
    this.attempts = Math.max(1, options.retry?.attempts ?? 3);
    this.policy = { base: options.retry?.base ?? 0.2, cap: options.retry?.cap ?? 10 };
    this.base = (options.logger ?? pino({ level: 'silent' })).child({ component: 'sdk.participant' });
    this.log = this.base.child({ topic });
  }

  on(commandType: string, handler: CommandHandler<Tx>): this {
    this.handlers.set(commandType, handler);
    return this;
  }

  start(): Promise<void> {
    if (this.closed && !this.started) return Promise.reject(new Error('participant is closed'));
    this.started ??= this.connect();
    return this.started;
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.options.signal?.removeEventListener('abort', this.onAbort);
      this.stopping.abort();
      await this.started?.catch(() => undefined);
      await this.running?.stop();
      await this.replies?.close();
      this.log.info('participant closed');
    })();
    return this.closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private async connect(): Promise<void> {
    const { source, db, signal } = this.options;
    signal?.throwIfAborted();
    // close() waits for this start to finish, then stops what it started.
    signal?.addEventListener('abort', this.onAbort, { once: true });
    const deliver: Deliver = (message, heartbeat) => this.deliver(message, heartbeat);
    try {
      await ensureBarrierTable(db);
      if ('kafka' in source) {
        await this.ensureKafkaTopic(source.kafka);
        this.replies = await kafkaReplyPublisher(source.kafka);
        this.running = await retryWhileRetriable(() =>
          startKafkaCommands({ ...source.kafka, topic: this.topic }, deliver, this.base, commandsAtOnce),
        );
      } else {
        this.replies = await rabbitReplyPublisher(source.rabbitmq.url, this.topic, this.log);
        this.running = await startRabbitSource({ ...source.rabbitmq, queue: this.topic }, deliver, this.base);
      }
    } catch (err) {
      signal?.removeEventListener('abort', this.onAbort);
      await this.replies?.close();
      throw err;
    }
    this.log.info({ source: 'kafka' in source ? 'kafka' : 'rabbitmq', commands: [...this.handlers.keys()] }, 'participant started');
  }

  /** Creates the command topic when it is missing, so that a participant may start before any saga ran. */
  private async ensureKafkaTopic(source: ParticipantKafkaSource): Promise<void> {
    try {
      await ensureKafkaTopic(source, this.topic);
    } catch (err) {
      // Not fatal: without the right to create topics, the topic may still exist or be created elsewhere.
      this.log.warn({ err }, 'could not create the command topic');
    }
  }

  /** One command: run, reply, and only then return (= acknowledge the command). */
  private async deliver(message: InboxMessage, heartbeat?: () => Promise<void>): Promise<void> {
    const h = message.headers;
    const parsed = commandSchema.safeParse({
      gid: h[brokerHeaders.gid],
      branchId: h[brokerHeaders.branchId],
      op: h[commandHeaders.op],
      command: h[commandHeaders.command],
      attempt: h[commandHeaders.attempt],
      replyTo: h[commandHeaders.replyTo],
    });
    const kafka = 'kafka' in this.options.source;
    if (!parsed.success || (kafka && !kafkaTopicName.test(parsed.data.replyTo))) {
      // Nobody to answer, or nothing to answer about: redelivering it would not help.
      const problems = parsed.success
        ? ['replyTo: not a Kafka topic name']
        : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
      this.log.error({ messageId: message.id, source: message.source, problems }, 'command dropped: invalid headers');
      return;
    }
    const command = parsed.data;
    const log = this.log.child({
      gid: command.gid,
      trans_type: 'saga',
      branchId: command.branchId,
      op: command.op,
      command: command.command,
      attempt: command.attempt,
    });
    const handler = this.handlers.get(command.command);
    if (!handler) log.error('no handler for command');
    // The handler runs in a span, child of the saga's trace (the command's traceparent).
    const attributes = { 'concord.gid': command.gid, 'concord.branch_id': command.branchId, 'concord.op': command.op };
    const outcome: Outcome = handler
      ? await inMessageSpan(`${command.command} process`, message.headers, attributes, () =>
          this.execute(handler, command, message, log, heartbeat),
        )
      : { outcome: 'ERROR', error: `no handler for command ${command.command}` };
    const reply: SagaReply = { gid: command.gid, branch_id: command.branchId, op: command.op, attempt: command.attempt, ...outcome };
    await this.publish(command.replyTo, reply, log, heartbeat);
    log.debug({ outcome: reply.outcome }, 'command answered');
  }

  private async execute(
    handler: CommandHandler<Tx>,
    command: Command,
    message: InboxMessage,
    log: Logger,
    heartbeat?: () => Promise<void>,
  ): Promise<Outcome> {
    const { gid, branchId, op } = command;
    let error: unknown;
    for (let run = 1; run <= this.attempts; run++) {
      if (run > 1) {
        // Cut short by close(): the command is not acknowledged, so it comes again.
        await sleep(jitter(backoffInterval(this.policy, run - 2)) * 1000, undefined, { signal: this.stopping.signal });
        await heartbeat?.();
      }
      // A new barrier per run: its barrier_id must stay "01", or a later duplicate would not meet this run's rows.
      const barrier = new BranchBarrier({ trans_type: 'saga', gid, branch_id: branchId, op });
      try {
        const result = await barrier.run<string | undefined, Tx>(this.options.db, async (tx) => {
          const value = await handler({
            tx,
            payload: message.value,
            json: <T>() => JSON.parse(message.value) as T,
            gid,
            branchId,
            op,
            command: command.command,
            attempt: command.attempt,
            headers: message.headers,
          });
          // Serialized inside the transaction: a result that cannot be replied rolls the work back.
          const json = value === undefined ? undefined : (JSON.stringify(value) as string | undefined);
          if (json !== undefined && json.length > maxResult) throw new Error(`result is longer than ${maxResult} characters`);
          return json;
        });
        return result === undefined ? { outcome: 'SUCCESS' } : { outcome: 'SUCCESS', result };
      } catch (err) {
        if (isBranchFailure(err)) {
          log.info({ reason: err.message }, 'command refused');
          return { outcome: 'FAILURE', error: errorText(err) };
        }
        error = err;
        if (run < this.attempts) log.warn({ err, run }, 'command handler failed, retrying');
      }
    }
    log.error({ err: error, runs: this.attempts }, 'command handler failed, replying ERROR');
    return { outcome: 'ERROR', error: errorText(error) };
  }

  /** Publishes the reply, retrying with backoff; throws (the command is redelivered) when it cannot. */
  private async publish(replyTo: string, reply: SagaReply, log: Logger, heartbeat?: () => Promise<void>): Promise<void> {
    for (let tries = 1; ; tries++) {
      try {
        await this.replies!.send(replyTo, reply);
        return;
      } catch (err) {
        if (tries >= this.attempts) {
          log.error({ err, replyTo }, 'reply not published; the command will be redelivered');
          throw err;
        }
        log.warn({ err, replyTo, tries }, 'reply not published, retrying');
        await sleep(jitter(backoffInterval(this.policy, tries - 1)) * 1000, undefined, { signal: this.stopping.signal });
        await heartbeat?.();
      }
    }
  }
}

function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.length > maxError ? `${text.slice(0, maxError - 1)}…` : text;
}

/**
 * Runs `start` again (a few times, with backoff) while it fails with an error the Kafka client
 * calls retriable: a topic created a moment ago may not be known to every broker yet.
 */
async function retryWhileRetriable<T>(start: () => Promise<T>): Promise<T> {
  for (let failures = 0; ; failures++) {
    try {
      return await start();
    } catch (err) {
      if (failures >= 5 || !(err as { findBy?: (p: string, v: unknown) => unknown }).findBy?.('canRetry', true)) throw err;
      await sleep(jitter(backoffInterval({ base: 0.2, cap: 2 }, failures)) * 1000);
    }
  }
}
