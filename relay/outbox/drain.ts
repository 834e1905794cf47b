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
 * One drain per name runs at a time (a session lock: advisory on Postgres, GET_LOCK on MySQL); a
 * second one waits as a standby.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { Logger } from 'pino';
import { backoffInterval, jitter, type BackoffPolicy } from '../../schemas/backoff.js';
import type { Delivery, DeliveryResult, Relay } from '../publisher.js';
import { decodeRow, messageIdOf, type DecodedRow, type OutboxRow } from './decode-row.js';
import type { CheckedMapping } from './mapping-check.js';
import { outboxDb, type OutboxDb, type OutboxPool, type OutboxSession } from './outbox-db.js';
import { outboxSql, quoteIdent, type OutboxSql, type Partition } from './outbox-sql.js';
import type { LogicalReader } from './logical-reader.js';
import { catchUpDone, ensureLogical, logicalNamesIn, recordCatchUp } from './logical-slot.js';
import { CursorReader, MarkingReader, type HandledBatch, type OutboxReader, type ReadBatch } from './readers.js';

export interface DrainOptions {
  /** The database holding the outbox table (Postgres or MySQL); Concord's cursor and parked tables are created there. 6 connections suffice. */
  pool: OutboxPool;
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
  /** Drain only this part of the table (mapping.partitions); each part has its own lock. */
  partition?: Partition;
  /** Asked before each try for the lock: false stands by (this node holds its share of the parts already). */
  mayTake?: () => boolean;
  /** Called once the lock is held. */
  onLocked?: () => void;
  /** Asked after each batch: true ends the drain cleanly (its batches marked, the lock released) so another node takes over. */
  shouldYield?: () => boolean;
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
  private readonly db: OutboxDb;
  private readonly o: Required<Omit<DrainOptions, 'signal' | 'pollMs' | Hook>> & { pollMs: number; signal?: AbortSignal };
  private readonly hooks: Pick<DrainOptions, Hook>;
  private wake: (() => void) | undefined;
  private notified = false;
  private halted = false;

  constructor(options: DrainOptions) {
    this.sql = outboxSql(options.mapping, options.partition);
    this.db = outboxDb(options.pool);
    this.hooks = options;
    this.o = {
      batchSize: 500,
      timeoutMs: 30_000,
      maxAttempts: 10,
      retry: { base: 0.1, cap: 5 },
      settleMs: 200,
      stopWhenIdle: false,
      ...options,
      partition: options.partition ?? { index: 0, count: 1 },
      pollMs: options.pollMs ?? (options.mapping.mapping.notifyChannel ? 1_000 : 10),
    };
  }

  private get name(): string {
    return this.o.mapping.name;
  }

  /** Drains until the signal aborts (or, with stopWhenIdle, until nothing is pending). */
  async run(): Promise<void> {
    const { db } = this;
    const { logger } = this.o;
    await db.ensureState();
    const session = await db.session();
    try {
      await this.lock(session);
      const channel = this.o.mapping.mapping.notifyChannel;
      if (channel) await session.listen(channel, () => this.poke());
      if (this.o.mapping.mapping.read === 'logical') await this.runLogical(session);
      else await this.pipeline(this.tableReader(), () => session.lost());
    } finally {
      this.halted = true; // database steps still retrying in the background give up
      session.release();
      logger.info({ drain: this.name, ...this.stats }, 'outbox drain stopped');
    }
  }

  private tableReader(): OutboxReader {
    return this.o.mapping.mapping.published === 'none'
      ? new CursorReader(this.db, this.sql, this.o.mapping, { settleMs: this.o.settleMs, maxMissing: 50_000, maxWindow: 2_000_000n })
      : new MarkingReader(this.db, this.sql);
  }

  /**
   * read=logical: rows written before the slot existed are not in its stream, so they are read from
   * the table first (with flag/delete at every start: what is unpublished; with none once per slot,
   * from the cursor), up to the highest id at that point; then the slot streams the rest.
   */
  private async runLogical(session: OutboxSession): Promise<void> {
    const { db } = this;
    const { mapping } = this.o.mapping;
    if (!(this.o.pool instanceof pg.Pool)) throw new Error('read=logical needs a Postgres pool');
    const names = await logicalNamesIn(db, this.name);
    await ensureLogical(db, names, mapping.table);
    if (mapping.published !== 'none' || !(await catchUpDone(db, names))) {
      const { rows } = await db.query<{ max: string | null }>(
        `select max(${quoteIdent(mapping.idColumn)})::text as max from ${quoteIdent(mapping.table)}`,
      );
      const last = rows[0]!.max;
      if (last !== null) {
        const caughtUp =
          mapping.published === 'none'
            ? (batch: ReadBatch) => batch.cursor !== undefined && batch.cursor >= BigInt(last)
            : (batch: ReadBatch) =>
                (batch.rows.length === 0 && !batch.more) ||
                (this.o.mapping.integerId && batch.rows.length > 0 && BigInt(batch.rows[0]!.id) > BigInt(last));
        await this.pipeline(this.tableReader(), () => session.lost(), caughtUp);
      }
      if (this.o.signal?.aborted) return;
      if (mapping.published === 'none') await recordCatchUp(db, names);
    }
    // Loaded only in this mode: the replication client costs the other drains 15 MB.
    const { LogicalReader: Reader } = await import('./logical-reader.js');
    const reader: LogicalReader = new Reader(this.o.pool, db, this.sql, this.o.mapping, names, this.o.logger);
    await reader.start();
    this.o.logger.info({ drain: this.name, slot: names.slot }, 'outbox drain streaming from its replication slot');
    try {
      await this.pipeline(reader, () => session.lost() ?? reader.lost());
    } finally {
      await reader.stop();
    }
  }

  private async lock(session: OutboxSession): Promise<void> {
    let told = false;
    const { index, count } = this.o.partition;
    const lockName = count > 1 ? `concord_outbox:${this.name}:${index}/${count}` : `concord_outbox:${this.name}`;
    for (;;) {
      if (this.hooks.mayTake?.() !== false && (await session.tryLock(lockName))) {
        this.hooks.onLocked?.();
        return;
      }
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

  /** Reads, produces and marks until stopped; with `caughtUp`, also once a batch it holds for is handled. */
  private async pipeline(reader: OutboxReader, lost: () => Error | undefined, caughtUp?: (batch: ReadBatch) => boolean): Promise<void> {
    const { signal, batchSize } = this.o;
    const read = () => this.retrying('read', () => reader.read(batchSize));
    let next = read();
    // Marks of different batches touch different rows (and the cursor only moves forward), so a
    // few run at once, each on its own connection, while the next batches are produced.
    const marking = new Set<Promise<unknown>>();
    const handledOf = (batch: ReadBatch): HandledBatch => ({
      ids: batch.rows.map((r) => r.id),
      ...(batch.cursor === undefined ? {} : { cursor: batch.cursor }),
    });
    const doneThenRead = reader.doneThenRead?.bind(reader);
    const markAfter = async (batch: ReadBatch) => {
      const handled = handledOf(batch);
      const mark = this.retrying('mark', () => reader.done(handled))
        .then((marked) => this.record(marked === undefined ? 0 : handled.ids.length - marked))
        .finally(() => marking.delete(mark));
      marking.add(mark);
      while (marking.size >= maxMarks) await Promise.race(marking);
    };
    let busy = false;
    while (!signal?.aborted && !this.hooks.shouldYield?.()) {
      const failure = lost();
      if (failure) throw new Error(`the drain's session to the database was lost: ${failure.message}`);
      const batch = await next;
      if (batch === undefined) break; // aborted
      if (batch.rows.length === 0) {
        await markAfter(batch); // published=none: the cursor may have settled further
        if (caughtUp?.(batch)) break;
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
      // A backlog: the next batch is read while this one is produced. A trickle: it is read once this
      // one is out, so the rows committed meanwhile come in one batch instead of one small batch each
      // (fewer statements and produce requests per row, for a read's round trip more latency).
      const backlog = batch.rows.length >= batchSize / 4;
      if (backlog) next = read();
      // Stopped while retrying: the batch is not marked, the next drain publishes it again.
      if (!(await this.deliver(batch.rows))) break;
      this.stats.batches++;
      if (!backlog && doneThenRead) {
        // A trickle: this batch's mark and the next read go as one statement where the reader can.
        const handled = handledOf(batch);
        next = this.retrying('mark', () => doneThenRead(handled, batchSize)).then(async (both) => {
          if (both) await this.record(handled.ids.length - both.marked);
          return both?.batch;
        });
      } else {
        if (!backlog) next = read();
        await markAfter(batch);
      }
      if (caughtUp?.(batch)) break;
    }
    await Promise.all(marking);
    await this.record(0, true);
  }

  private recorded = { published: 0, parked: 0, duplicates: 0, at: 0 };
  private duplicates = 0;
  /**
   * Adds what was published since it last wrote to concord_outbox_stats, for `concord outbox
   * cutover`: at most once a second (one drain's stats are one row, and a write per batch would
   * cost a statement and a commit per batch), and at the end of a drain (`final`).
   */
  private async record(duplicates: number, final = false): Promise<void> {
    this.duplicates += duplicates;
    if (!final && performance.now() - this.recorded.at < statsEveryMs) return;
    const published = this.stats.published - this.recorded.published;
    const parked = this.stats.parked - this.recorded.parked;
    const newDuplicates = this.duplicates - this.recorded.duplicates;
    this.recorded = { published: this.stats.published, parked: this.stats.parked, duplicates: this.duplicates, at: performance.now() };
    if (published === 0 && parked === 0 && newDuplicates === 0) return;
    const write = () => this.db.query(this.sql.recordStats, [this.name, published, newDuplicates, parked]);
    // The last write happens after a stop too (retrying gives up once stopped); once, as a stop should not wait.
    if (final)
      await write().catch((err: unknown) => this.o.logger.warn({ err, drain: this.name }, 'outbox drain: last stats not recorded'));
    else await this.retrying('record', write);
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
    await this.retrying('park', () => this.db.query(this.sql.park, [this.name, row.id, messageId, error.slice(0, 2000), attempts]));
    this.stats.parked++;
    this.o.logger.warn({ drain: this.name, row: row.id, error }, 'outbox row parked');
  }
}

type Hook = 'mayTake' | 'onLocked' | 'shouldYield';
const waiting = 'not sent: an earlier row of its key is not delivered yet';
const maxMarks = 3;
const statsEveryMs = 1_000;
