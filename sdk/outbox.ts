/**
 * The native outbox: a message written as a row in the service's own transaction, so it exists
 * exactly when the business change commits. `concord outbox drain --native` publishes the rows
 * (and deletes them), with the message id `outbox:concord_outbox:<id>` that consumer inboxes dedup.
 */
import type pg from 'pg';
import { nativeOutboxDdlPostgres, nativeOutboxNotifyDdlPostgres, nativeOutboxTable } from '../schemas/db/outbox.js';
import { ConcordError } from '../schemas/errors.js';
import { drizzleExecutor, inTransaction, pgExecutor, type DrizzleLike, type SqlExecutor, type TransactionSource } from './sql-executor.js';

export interface OutboxPublishOptions {
  /** Message key: Kafka partitioning and the order kept between messages of one key. */
  key?: string;
  /** Extra message headers. */
  headers?: Record<string, string>;
}

function executorOf(tx: pg.ClientBase | DrizzleLike): SqlExecutor {
  return typeof (tx as pg.ClientBase).query === 'function' ? pgExecutor(tx as pg.ClientBase) : drizzleExecutor(tx as DrizzleLike);
}

export const outbox = {
  /**
   * Writes a message into the native outbox within `tx` (a pg client inside BEGIN, or a drizzle
   * transaction). `destination` is a URL as for two-phase messages: kafka://<connection>/<topic>,
   * rabbitmq://<connection>/<exchange>/<routing key> or http(s)://…; a payload that is not a string
   * is sent as JSON. Returns the message id the consumers will see.
   */
  async publish(
    tx: pg.ClientBase | DrizzleLike,
    destination: string,
    payload: unknown,
    options: OutboxPublishOptions = {},
  ): Promise<string> {
    if (!/^[a-z][a-z0-9+.-]*:\/\/./i.test(destination))
      throw new ConcordError('INVALID_REQUEST', `destination "${destination}" is not a URL (kafka://…, rabbitmq://…, http(s)://…)`, {
        field: 'destination',
      });
    const body = typeof payload === 'string' ? payload : JSON.stringify(payload);
    if (body === undefined) throw new ConcordError('INVALID_REQUEST', 'payload cannot be serialised as JSON', { field: 'payload' });
    const { rows } = await executorOf(tx).execute(
      `insert into ${nativeOutboxTable} (destination, key, payload, headers) values ($1, $2, $3, $4::jsonb) returning id::text as id`,
      [destination, options.key ?? null, body, JSON.stringify(options.headers ?? {})],
    );
    return `outbox:${nativeOutboxTable}:${String(rows[0]!.id)}`;
  },
};

/**
 * Creates the native outbox table if it is missing; with `notify`, also the trigger that wakes the
 * drain at once (one NOTIFY per writing transaction) instead of at its next poll.
 */
export async function ensureOutboxTable(db: TransactionSource, options: { notify?: boolean } = {}): Promise<void> {
  await inTransaction(db, async (exec) => {
    // Services starting together would race on CREATE ... IF NOT EXISTS.
    await exec.execute('select pg_advisory_xact_lock(4245)', []);
    await exec.execute(nativeOutboxDdlPostgres, []);
    if (options.notify) {
      const [fn, drop, create] = nativeOutboxNotifyDdlPostgres.split(/;\n(?=DROP|CREATE TRIGGER)/);
      for (const statement of [fn!, drop!, create!]) await exec.execute(statement, []);
    }
  });
}
