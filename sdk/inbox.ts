/**
 * The consumer's inbox and dead-letter table, in the consumer's own database. The inbox is the
 * barrier table: a row (gid = message id, branch_id = consumer, op = 'consume') written in the same
 * transaction as the handler's changes, so a redelivered message finds it and has no second effect.
 */
import { inboxDdlPostgres, parkedTable } from '../schemas/db/inbox.js';
import { BranchBarrier, ensureBarrierTable } from './barrier.js';
import { inTransaction, type TransactionSource } from './sql-executor.js';

/** A message as the consumer stores and replays it. */
export interface InboxMessage {
  /** The `message-id` header (`<gid>/<branch_id>` for Concord's messages), or the source's fallback. */
  id: string;
  /** Kafka message key, or RabbitMQ routing key. */
  key?: string;
  /** The body, as text (JSON for Concord's messages). */
  value: string;
  /** Broker headers, lower-case names, values as text. */
  headers: Record<string, string>;
  /** Where it came from: `kafka:<topic>/<partition>/<offset>` or `rabbitmq:<queue>`. */
  source: string;
}

/** A message whose handler gave up, waiting in the dead-letter table for a redrive. */
export interface ParkedMessage extends InboxMessage {
  /** The last error's message. */
  error: string;
  /** How many times the handler ran and failed, redrives included. */
  attempts: number;
  firstFailure: Date;
  lastFailure: Date;
}

/** Creates the barrier (inbox) table and the dead-letter table if they are missing. */
export async function ensureInboxTables(db: TransactionSource): Promise<void> {
  await ensureBarrierTable(db);
  await inTransaction(db, async (exec) => {
    // Consumers starting together would race on CREATE ... IF NOT EXISTS.
    await exec.execute('select pg_advisory_xact_lock(4243)', []);
    await exec.execute(inboxDdlPostgres, []);
  });
}

/**
 * Runs `business` in a new transaction on `db` with the inbox row, unless the row is there already
 * (the message was applied before). Returns whether `business` ran. A parked copy of the message is
 * deleted in the same transaction, so a message is parked exactly when it was never applied.
 */
export async function applyOnce<Tx>(db: TransactionSource, consumer: string, messageId: string, business: (tx: Tx) => Promise<void>) {
  return inTransaction<boolean, Tx>(db, async (exec, tx) => {
    let ran = false;
    const inbox = new BranchBarrier({ trans_type: 'msg', gid: messageId, branch_id: consumer, op: 'consume' });
    await inbox.within(exec, async () => {
      ran = true;
      await business(tx);
    });
    await exec.execute(`delete from ${parkedTable} where consumer = $1 and message_id = $2`, [consumer, messageId]);
    return ran;
  });
}

/** Writes (or, for a message parked before, updates) the dead-letter row. */
export async function parkMessage(
  db: TransactionSource,
  consumer: string,
  message: InboxMessage,
  failure: { error: string; attempts: number; firstFailure: Date },
): Promise<void> {
  await inTransaction(db, (exec) =>
    exec.execute(
      `insert into ${parkedTable} (consumer, message_id, source, key, value, headers, error, attempts, first_failure, last_failure)
       values ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, now())
       on conflict on constraint uniq_parked do update
       set error = excluded.error, attempts = ${parkedTable}.attempts + excluded.attempts, last_failure = excluded.last_failure`,
      [
        consumer,
        message.id,
        message.source,
        message.key ?? null,
        message.value,
        JSON.stringify(message.headers),
        failure.error,
        failure.attempts,
        failure.firstFailure,
      ],
    ),
  );
}

interface ParkedRow {
  message_id: string;
  key: string | null;
  value: string;
  headers: string | Record<string, string>;
  source: string;
  error: string;
  attempts: number | string;
  first_failure: string | Date;
  last_failure: string | Date;
}

const parkedColumns = 'message_id, source, key, value, headers, error, attempts, first_failure, last_failure';

/** The consumer's parked messages, oldest first; only those of `ids` when given. */
export async function listParked(db: TransactionSource, consumer: string, ids?: string[]): Promise<ParkedMessage[]> {
  const { rows } = await inTransaction(db, (exec) =>
    exec.execute(
      `select ${parkedColumns} from ${parkedTable}
       where consumer = $1 and ($2::jsonb is null or message_id in (select jsonb_array_elements_text($2::jsonb))) order by id`,
      // As JSON, not an array parameter: drizzle's sql tag would spread an array into a list.
      [consumer, ids ? JSON.stringify(ids) : null],
    ),
  );
  return (rows as unknown as ParkedRow[]).map(parkedMessage);
}

/**
 * The oldest `limit` parked messages and the time they were listed, by the database's clock (the
 * clock of their failure times): what the consumer reports to the coordinator.
 */
export async function parkedSnapshot(
  db: TransactionSource,
  consumer: string,
  limit: number,
): Promise<{ listedAt: Date; messages: ParkedMessage[] }> {
  return inTransaction(db, async (exec) => {
    const { rows: now } = await exec.execute('select now() as listed_at', []);
    const { rows } = await exec.execute(`select ${parkedColumns} from ${parkedTable} where consumer = $1 order by id limit $2`, [
      consumer,
      limit,
    ]);
    return {
      listedAt: new Date((now[0] as { listed_at: string | Date }).listed_at),
      messages: (rows as unknown as ParkedRow[]).map(parkedMessage),
    };
  });
}

function parkedMessage(row: ParkedRow): ParkedMessage {
  return {
    id: row.message_id,
    ...(row.key === null ? {} : { key: row.key }),
    value: row.value,
    // jsonb arrives parsed through pg, as text through some drizzle drivers.
    headers: (typeof row.headers === 'string' ? JSON.parse(row.headers) : row.headers) as Record<string, string>,
    source: row.source,
    error: row.error,
    attempts: Number(row.attempts),
    firstFailure: new Date(row.first_failure),
    lastFailure: new Date(row.last_failure),
  };
}

/** Counts one more failed attempt (a failed redrive) on a parked message. */
export async function recordParkedFailure(db: TransactionSource, consumer: string, messageId: string, error: string): Promise<void> {
  await inTransaction(db, (exec) =>
    exec.execute(
      `update ${parkedTable} set error = $3, attempts = attempts + 1, last_failure = now() where consumer = $1 and message_id = $2`,
      [consumer, messageId, error],
    ),
  );
}
