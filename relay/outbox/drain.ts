/**
 * The outbox drain: reads what is safely committed, hands it to the relay's publishers, and marks,
 * deletes or moves the cursor past what the brokers acknowledged. The three stages overlap: while
 * batch n is being produced, batch n+1 is read and batch n-1 is marked. Batches are produced one
 * after the other, so a failed batch is retried before anything after it goes out (per-key order).
 *
 * A row that can never be delivered as it is (undecodable payload, unknown destination, a refusal,
 * or a row-specific error that outlives maxAttempts) is copied to concord_outbox_parked with its
 * error and counts as handled; the other rows keep flowing. When every row of a batch fails the
 * broker is down: the batch is retried with backoff for as long as it takes, nothing is parked.
 *
 * One drain per name runs at a time (a session advisory lock); a second one waits as a standby.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Logger } from 'pino';
import { backoffInterval, jitter, type BackoffPolicy } from '../../schemas/backoff.js';
import { outboxStateDdlPostgres } from '../../schemas/db/outbox.js';
import type { Delivery, DeliveryResult, Relay } from '../publisher.js';
import { decodeRow, messageIdOf, type DecodedRow, type OutboxRow } from './decode-row.js';
import type { CheckedMapping } from './mapping-check.js';
import { outboxSql, quoteIdent, type OutboxSql } from './outbox-sql.js';
import { CursorReader, MarkingReader, type HandledBatch, type OutboxReader, type ReadBatch } from './readers.js';

export interface DrainOptions {
  /** The database holding the outbox table; Concord's cursor and parked tables are created there. 6 connections suffice. */
  pool: pg.Pool;
  mapping: CheckedMapping;
  relay: Pick<Relay, 'publish' | 'publishMany' | 'problem'>;
  logger: Logger;
  /** Rows per read and per produce (default 500). */
  batchSize?: number;
  /** Wait between empty reads, ms (default 10 when polling, 1000 with a notify channel). */
  pollMs?: number;
  /** A delivery not acknowledged within this is an error (default 30 s). */
  timeoutMs?: number;
  /** Row-specific failures before a row is parked (default 10). */
  maxAttempts?: number;
  retry?: BackoffPolicy;
  /** published=none: how long a writer may take between getting its id and its transaction id (default 200 ms). */
  settleMs?: number;
  /** Return once nothing is left to publish, instead of waiting for more. */
  stopWhenIdle?: boolean;
  signal?: AbortSignal;
}

export interface DrainStats {
  published: number;
  parked: number;
  batches: number;
  /** Retries of deliveries that failed (row-specific or broker down). */
  retries: number;
}

interface Item {
  row: OutboxRow;
  decoded: DecodedRow;
  attempts: number;
}

export class OutboxDrain {
  readonly stats: DrainStats = { published: 0, parked: 0, batches: 0, retries: 0 };
  private readonly sql: OutboxSql;
  private readonly o: Required<Omit<DrainOptions, 'signal' | 'pollMs'>> & { pollMs: number; signal?: AbortSignal };
  private wake: (() => void) | undefined;
  private notified = false;
  private halted = false;

  constructor(options: DrainOptions) {
    this.sql = outboxSql(options.mapping);
    this.o = {
      batchSize: 500,
      timeoutMs: 30_000,
      maxAttempts: 10,
      retry: { base: 0.1, cap: 5 },
      settleMs: 200,
      stopWhenIdle: false,
      ...options,
      pollMs: options.pollMs ?? (options.mapping.mapping.notifyChannel ? 1_000 : 10),
    };
  }

  private get name(): string {
    return this.o.mapping.name;
  }

  /** Drains until the signal aborts (or, with stopWhenIdle, until nothing is pending). */
  async run(): Promise<void> {
    const { pool, logger } = this.o;
    // One implicit transaction: drains starting together would race on CREATE ... IF NOT EXISTS.
    await pool.query(`select pg_advisory_xact_lock(4244); ${outboxStateDdlPostgres}`);
    const session = await pool.connect();
    let lost: Error | undefined;
    session.on('error', (err) => (lost = err));
    try {
      await this.lock(session);
      const channel = this.o.mapping.mapping.notifyChannel;
      if (channel) {
        session.on('notification', () => this.poke());
        await session.query(`listen ${quoteIdent(channel)}`);
      }
      const reader: OutboxReader =
        this.o.mapping.mapping.published === 'none'
          ? new CursorReader(pool, this.sql, this.o.mapping, { settleMs: this.o.settleMs, maxMissing: 50_000, maxWindow: 2_000_000n })
          : new MarkingReader(pool, this.sql);
      await this.pipeline(reader, () => lost);
    } finally {
      this.halted = true; // database steps still retrying in the background give up
      session.release(lost ?? true); // never reuse a session that held the lock
      logger.info({ drain: this.name, ...this.stats }, 'outbox drain stopped');
    }
  }

  private async lock(session: pg.PoolClient): Promise<void> {
    let told = false;
    for (;;) {
      const { rows } = await session.query<{ ok: boolean }>(`select pg_try_advisory_lock(hashtextextended($1, 0)) as ok`, [
        `concord_outbox:${this.name}`,
      ]);
      if (rows[0]!.ok) return;
      if (!told) this.o.logger.info({ drain: this.name }, 'another drain holds this outbox; standing by');
      told = true;
      await sleep(1_000, undefined, { signal: this.o.signal }).catch(() => undefined);
      if (this.o.signal?.aborted) throw new Error('aborted while standing by');
    }
  }

  private poke(): void {
    this.notified = true;
    this.wake?.();
  }

  private async idle(): Promise<void> {
    if (this.notified) {
      this.notified = false;
      return;
    }
    const { signal } = this.o;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, this.o.pollMs);
      this.wake = done;
      signal?.addEventListener('abort', done, { once: true });
    });
    this.wake = undefined;
    this.notified = false;
  }

  private async pipeline(reader: OutboxReader, lost: () => Error | undefined): Promise<void> {
    const { signal, batchSize } = this.o;
    const read = () => this.retrying('read', () => reader.read(batchSize));
    let next = read();
    // Marks of different batches touch different rows (and the cursor only moves forward), so a
    // few run at once, each on its own connection, while the next batches are produced.
    const marking = new Set<Promise<unknown>>();
    const markAfter = async (batch: ReadBatch) => {
      const handled: HandledBatch = { ids: batch.rows.map((r) => r.id), ...(batch.cursor === undefined ? {} : { cursor: batch.cursor }) };
      const mark = this.retrying('mark', () => reader.done(handled)).finally(() => marking.delete(mark));
      marking.add(mark);
      while (marking.size >= maxMarks) await Promise.race(marking);
    };
    let busy = false;
    while (!signal?.aborted) {
      const failure = lost();
      if (failure) throw new Error(`the drain's session to Postgres was lost: ${failure.message}`);
      const batch = await next;
      if (batch === undefined) break; // aborted
      if (batch.rows.length === 0) {
        await markAfter(batch); // published=none: the cursor may have settled further
        // The read after a busy one was sent before that batch was produced: ask once more at once
        // for what committed meanwhile, rather than sleeping a poll interval on a stale answer.
        const stale = busy;
        busy = false;
        if (!batch.more && !stale) {
          if (this.o.stopWhenIdle && !batch.unsettled) break;
          await this.idle();
        }
        next = read();
        continue;
      }
      busy = true;
      next = read(); // the next batch is read while this one is produced
      // Stopped while retrying: the batch is not marked, the next drain publishes it again.
      if (!(await this.deliver(batch.rows))) break;
      this.stats.batches++;
      await markAfter(batch);
    }
    await Promise.all(marking);
  }

  /** Runs a database step until it succeeds (Postgres restarting, a failover); undefined once aborted. */
  private async retrying<T>(what: string, step: () => Promise<T>): Promise<T | undefined> {
    for (let failures = 0; ; failures++) {
      if (this.o.signal?.aborted || this.halted) return undefined;
      try {
        return await step();
      } catch (err) {
        this.o.logger.warn({ err, drain: this.name, step: what }, 'outbox drain: database step failed; retrying');
        await this.backoff(failures);
      }
    }
  }

  private backoff(failures: number): Promise<void> {
    const ms = jitter(backoffInterval(this.o.retry, failures)) * 1000;
    return sleep(ms, undefined, { signal: this.o.signal }).catch(() => undefined);
  }

  /** Destinations are few and rows many: each one's problem is looked up once. */
  private readonly problems = new Map<string, string | undefined>();
  private problemOf(url: string): string | undefined {
    if (!this.problems.has(url)) {
      if (this.problems.size > 10_000) this.problems.clear();
      this.problems.set(url, this.o.relay.problem(url));
    }
    return this.problems.get(url);
  }

  /** Publishes the rows until each one is acknowledged or parked; false when stopped before that. */
  private async deliver(rows: OutboxRow[]): Promise<boolean> {
    let todo: Item[] = [];
    for (const row of rows) {
      const decoded = decodeRow(this.o.mapping.mapping, row);
      const problem = 'error' in decoded ? decoded.error : this.problemOf(decoded.url);
      if (problem !== undefined || 'error' in decoded) await this.park(row, problem ?? 'undecodable', 1);
      else todo.push({ row, decoded, attempts: 0 });
    }
    for (let outages = 0; todo.length > 0 && !this.o.signal?.aborted;) {
      const results = await this.publishAll(todo);
      const failed: [Item, DeliveryResult][] = [];
      for (const [i, item] of todo.entries()) {
        const result = results[i]!;
        if (result.outcome === 'SUCCESS') this.stats.published++;
        else if (result.outcome === 'FAILURE') await this.park(item.row, `refused: ${result.detail}`, item.attempts + 1);
        else failed.push([item, result]);
      }
      // Stopped meanwhile: a park may have been skipped, so the batch is left for the next drain.
      if (failed.length === 0) return !this.o.signal?.aborted;
      const outage = failed.length === todo.length;
      todo = [];
      for (const [item, result] of failed) {
        if (!outage && result.detail !== waiting) item.attempts++;
        if (item.attempts >= this.o.maxAttempts) await this.park(item.row, result.detail, item.attempts);
        else todo.push(item);
      }
      this.stats.retries += todo.length;
      this.o.logger.warn(
        { drain: this.name, failed: failed.length, outage, detail: failed[0]![1].detail },
        'outbox drain: deliveries failed; retrying',
      );
      await this.backoff(outage ? outages++ : Math.max(...todo.map((t) => t.attempts), 0));
    }
    return todo.length === 0 && !this.o.signal?.aborted;
  }

  /**
   * Brokers keep the order of the calls (one produce request per batch, one confirm channel), so
   * those rows go out at once. HTTP calls run in parallel, so the rows of one key go one by one.
   */
  private async publishAll(items: Item[]): Promise<DeliveryResult[]> {
    const results: DeliveryResult[] = new Array<DeliveryResult>(items.length);
    const delivery = (item: Item): Delivery => ({
      url: item.decoded.url,
      params: {},
      payload: item.decoded.payload,
      headers: item.decoded.headers,
      timeoutMs: this.o.timeoutMs,
      ...(item.decoded.key === undefined ? {} : { key: item.decoded.key }),
    });
    const send = (item: Item) => this.o.relay.publish(delivery(item));
    const chains = new Map<string, number[]>();
    const direct: number[] = [];
    items.forEach((item, i) => {
      if (!item.decoded.url.startsWith('http')) direct.push(i);
      else {
        const key = item.decoded.key ?? `\0${i}`; // keyless rows have no order to keep
        const chain = chains.get(key);
        if (chain) chain.push(i);
        else chains.set(key, [i]);
      }
    });
    const brokers = this.o.relay.publishMany(direct.map((i) => delivery(items[i]!))).then((answers) => {
      direct.forEach((i, n) => (results[i] = answers[n]!));
    });
    const chained = [...chains.values()].map(async (indexes) => {
      let blocked = false;
      for (const i of indexes) {
        results[i] = blocked ? { outcome: 'ERROR', detail: waiting } : await send(items[i]!);
        if (results[i].outcome !== 'SUCCESS') blocked = true;
      }
    });
    await Promise.all([brokers, ...chained]);
    return results;
  }

  private async park(row: OutboxRow, error: string, attempts: number): Promise<void> {
    const messageId = messageIdOf(this.o.mapping.mapping, row.id);
    await this.retrying('park', () => this.o.pool.query(this.sql.park, [this.name, row.id, messageId, error.slice(0, 2000), attempts]));
    this.stats.parked++;
    this.o.logger.warn({ drain: this.name, row: row.id, error }, 'outbox row parked');
  }
}

const waiting = 'not sent: an earlier row of its key is not delivered yet';
const maxMarks = 3;
