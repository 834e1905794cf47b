/**
 * read=logical: the outbox table's inserts, streamed in commit order from a pgoutput replication
 * slot (pg-logical-replication speaks the protocol). Nothing polls: rows arrive as transactions
 * commit. The slot's position is confirmed only up to a commit whose rows, and all before them, are
 * published (and marked), so a drain killed at any point resumes from there and publishes again at
 * most what was in flight (same message ids: consumers' inboxes drop the copies).
 *
 * With published=flag or delete the stream says which rows to send and in what order, and the table
 * says which are still unpublished (the old poller, or the catch-up, may have sent some): each batch
 * is read back by id. With published=none the stream's row is sent as it is.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import type { Logger } from 'pino';
import type { OutboxRow } from './decode-row.js';
import type { LogicalNames } from './logical-slot.js';
import type { CheckedMapping } from './mapping-check.js';
import type { Queryable } from './outbox-db.js';
import type { OutboxSql } from './outbox-sql.js';
import type { HandledBatch, OutboxReader, ReadBatch } from './readers.js';

/** Rows held in memory before the stream is paused (TCP backpressure on the walsender). */
const highWater = 5_000;
/** How long an empty read waits for the stream before the drain's idle step. */
const waitMs = 200;
/** Status updates to the server, so that it neither times the connection out nor keeps WAL needlessly. */
const statusMs = 5_000;

/** pg's own bytea parser (hex or escape output). */
const byteaParser = pg.types.getTypeParser(17) as (text: string) => Buffer;

export class LogicalReader implements OutboxReader {
  private readonly service: LogicalReplicationService;
  private buffer: { row: OutboxRow; seq: number }[] = [];
  private received = 0;
  private handedOut = 0;
  /** Positions the slot may be confirmed at once every row received before them is handled. */
  private checkpoints: { seq: number; lsn: string }[] = [];
  /** Batches handed out, in order (`no` is the batch's cursor); `handled` once published and marked. */
  private readonly issued: { no: number; end: number; handled: boolean }[] = [];
  private batches = 0;
  private confirmed: string | undefined;
  private inTransaction = false;
  private paused = false;
  private failure: Error | undefined;
  private arrived: (() => void) | undefined;
  private caughtUp = false;
  private startLsn = 0n;
  private timer: NodeJS.Timeout | undefined;
  private readonly table: { schema: string; name: string };

  constructor(
    private readonly pool: pg.Pool,
    private readonly db: Queryable,
    private readonly sql: OutboxSql,
    private readonly checked: CheckedMapping,
    private readonly names: LogicalNames,
    private readonly logger: Logger,
  ) {
    // The library's own timer would confirm whatever arrived, published or not: status updates are ours.
    this.service = new LogicalReplicationService(pool.options, { acknowledge: { auto: false, timeoutSeconds: 0 } });
    const [schema, name] = checked.mapping.table.includes('.') ? checked.mapping.table.split('.') : [undefined, checked.mapping.table];
    this.table = { schema: schema ?? '', name };
  }

  /** Starts streaming from the slot's confirmed position. */
  async start(): Promise<void> {
    const { rows } = await this.db.query<{ lsn: string; confirmed: string | null }>(
      `select pg_current_wal_flush_lsn()::text as lsn,
         (select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1) as confirmed`,
      [this.names.slot],
    );
    this.startLsn = lsnValue(rows[0]!.lsn);
    // Status updates carry it from the start, so a stream paused before its first batch is published stays open.
    this.confirmed = rows[0]!.confirmed ?? undefined;
    this.service.on('data', (lsn: string, message: Pgoutput.Message) => this.onMessage(message));
    this.service.on('heartbeat', (lsn: string, _at: number, respond: boolean) => {
      if (!this.inTransaction) this.checkpoint(lsn);
      if (lsnValue(lsn) >= this.startLsn) this.caughtUp = true;
      if (respond) this.status();
      this.arrived?.();
    });
    this.service.on('error', (err: Error) => {
      this.failure ??= err;
      this.arrived?.();
    });
    const started = new Promise<void>((resolve) => this.service.once('start', () => resolve()));
    const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [this.names.publication] });
    const streaming = this.service.subscribe(plugin, this.names.slot).catch((err: Error) => {
      this.failure ??= err;
      this.arrived?.();
    });
    await Promise.race([started, streaming]);
    if (this.failure) throw new Error(`cannot stream from the slot ${this.names.slot}: ${this.failure.message}`);
    this.timer = setInterval(() => this.status(), statusMs);
  }

  /** Why the stream stopped, if it did: the drain starts again from the confirmed position. */
  lost(): Error | undefined {
    return this.failure;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.service.destroy().catch(() => undefined);
  }

  private onMessage(m: Pgoutput.Message): void {
    if (m.tag === 'relation' && this.isOurs(m)) {
      // Every value as the text Postgres prints (as the table reader's ::text casts), bytea as bytes.
      for (const c of m.columns) c.parser = c.typeOid === 17 ? byteaParser : (text: string) => text;
    } else if (m.tag === 'begin') {
      this.inTransaction = true;
    } else if (m.tag === 'insert' && this.isOurs(m.relation)) {
      this.buffer.push({ row: this.rowOf(m.new), seq: ++this.received });
      if (this.buffer.length >= highWater && !this.paused) this.pause(true);
    } else if (m.tag === 'commit') {
      this.inTransaction = false;
      if (m.commitEndLsn) this.checkpoint(m.commitEndLsn);
      if (m.commitEndLsn && lsnValue(m.commitEndLsn) >= this.startLsn) this.caughtUp = true;
    }
    this.arrived?.();
  }

  private isOurs(relation: Pgoutput.MessageRelation): boolean {
    return relation.name === this.table.name && (this.table.schema === '' || relation.schema === this.table.schema);
  }

  private rowOf(values: Record<string, unknown>): OutboxRow {
    const m = this.checked.mapping;
    const text = (column: string | undefined) => (column === undefined ? null : (values[column] as string | null));
    return {
      id: String(values[m.idColumn]),
      destination: text(m.destinationColumn),
      key: text(m.keyColumn),
      payload: values[m.payloadColumn] as string | Buffer | null,
      headers: text(m.headersColumn),
    };
  }

  private checkpoint(lsn: string): void {
    const last = this.checkpoints.at(-1);
    if (last && last.seq === this.received) last.lsn = lsn;
    else this.checkpoints.push({ seq: this.received, lsn });
  }

  private pause(on: boolean): void {
    // The library exposes no flow control that keeps keepalives in order with the data: pause its socket.
    const stream = (this.service as unknown as { _connection?: { stream?: { pause(): void; resume(): void } } })._connection?.stream;
    if (on) stream?.pause();
    else stream?.resume();
    this.paused = on;
  }

  private status(): void {
    if (this.confirmed) void this.service.acknowledge(beforeLsn(this.confirmed)).catch(() => undefined);
  }

  async read(limit: number): Promise<ReadBatch> {
    if (this.buffer.length === 0 && !this.failure) {
      // Asks the server for a keepalive: its position tells when the stream has caught up.
      if (!this.caughtUp) void this.service.acknowledge(beforeLsn(this.confirmed ?? '0/1'), true).catch(() => undefined);
      await Promise.race([new Promise<void>((resolve) => (this.arrived = resolve)), sleep(waitMs)]);
      this.arrived = undefined;
    }
    // The drain sees lost() before its next read and starts again from the confirmed position.
    if (this.failure) return { rows: [], more: true };
    const taken = this.buffer.slice(0, limit);
    let rows = taken.map((t) => t.row);
    if (this.checked.mapping.published !== 'none' && rows.length > 0) {
      // Still unpublished in the table, in the stream's (commit) order. (May fail: nothing taken yet.)
      const current = await this.db.query<OutboxRow>(this.sql.readIds, [rows.map((r) => r.id)]);
      const byId = new Map(current.rows.map((r) => [r.id, r]));
      rows = rows.flatMap((r) => byId.get(r.id) ?? []);
    }
    this.buffer.splice(0, taken.length);
    if (this.paused && this.buffer.length < highWater / 2) this.pause(false);
    if (taken.length > 0) this.handedOut = taken.at(-1)!.seq;
    const no = ++this.batches;
    this.issued.push({ no, end: this.handedOut, handled: false });
    return {
      rows,
      cursor: BigInt(no),
      more: this.buffer.length > 0 || taken.length > rows.length,
      unsettled: !this.caughtUp,
    };
  }

  async done(batch: HandledBatch): Promise<number | undefined> {
    if (batch.cursor === undefined) return undefined; // a read after the stream stopped
    const no = Number(batch.cursor);
    let marked: number | undefined;
    if (this.sql.markDone && batch.ids.length > 0) marked = (await this.db.query(this.sql.markDone, [batch.ids])).rowCount;
    else if (this.sql.markDone) marked = 0;
    // Batches are handed out in order but their marks may end out of order: confirm the handled prefix.
    this.issued.find((b) => b.no === no)!.handled = true;
    let handled = -1;
    while (this.issued[0]?.handled) handled = this.issued.shift()!.end;
    if (handled >= 0) this.confirm(handled);
    return marked;
  }

  private confirm(handled: number): void {
    let lsn: string | undefined;
    while (this.checkpoints[0] && this.checkpoints[0].seq <= handled) lsn = this.checkpoints.shift()!.lsn;
    if (lsn === undefined || lsn === this.confirmed) return;
    this.confirmed = lsn;
    this.status();
    this.logger.debug({ drain: this.checked.name, lsn }, 'outbox slot confirmed');
  }
}

/**
 * The library reports `lsn + 1` as flushed, the protocol's "last byte + 1". A commit's end LSN and a
 * keepalive's position already point past what was sent (the next record may start exactly there),
 * so they are handed to it minus one.
 */
export function beforeLsn(lsn: string): string {
  const v = lsnValue(lsn) - 1n;
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}
