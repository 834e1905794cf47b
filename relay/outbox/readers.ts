/**
 * The two ways a drain reads what is left to publish. With a published flag or deletion, every
 * unpublished row stays findable, so a late commit is simply found by the next scan. Without either,
 * a cursor over ids advances only as far as the snapshot rules in cursor-window allow.
 */
import type { OutboxRow } from './decode-row.js';
import { CursorWindow, parseSnapshot } from './cursor-window.js';
import type { CheckedMapping } from './mapping-check.js';
import type { Queryable } from './outbox-db.js';
import type { OutboxSql } from './outbox-sql.js';

export interface ReadBatch {
  rows: OutboxRow[];
  /** published=none: the cursor that may be saved once this batch and all before it are handled. */
  cursor?: bigint;
  /** The read stopped at its limit: read again at once, even if nothing in it was new. */
  more?: boolean;
  /** published=none: some ids read are not behind the cursor yet (their transactions may still end). */
  unsettled?: boolean;
}

/** What marking needs of a batch: not its payloads, which can go once they are published. */
export interface HandledBatch {
  ids: string[];
  cursor?: bigint;
}

export interface OutboxReader {
  read(limit: number): Promise<ReadBatch>;
  /**
   * Records that a batch's rows are handled (published or parked): mark, delete or save the cursor.
   * flag/delete: returns how many of them this drain marked or deleted; the others the old poller had.
   */
  done(batch: HandledBatch): Promise<number | undefined>;
  /**
   * done(), then read(), in one round trip where the database allows it: what a drain in a trickle
   * does after each batch, so each batch costs one statement fewer.
   */
  doneThenRead?(batch: HandledBatch, limit: number): Promise<{ marked: number; batch: ReadBatch }>;
}

/**
 * published=flag or delete. Every read starts from the lowest unpublished id: a row that commits
 * late (a lower id than rows already read) is then read before any later row of its key, which its
 * writer can only commit after it, so per-key order holds. Rows handed out but not marked yet come
 * back and are skipped, so the read asks for that many more.
 */
export class MarkingReader implements OutboxReader {
  private reads = 0;
  /** Handed out, not marked yet: a read must not hand them out again. */
  private readonly pending = new Set<string>();
  /** Marked while some read was running, which may still return them: id → reads started at that time. */
  private readonly marked = new Map<string, number>();

  constructor(
    private readonly pool: Queryable,
    private readonly sql: OutboxSql,
  ) {
    if (sql.markThenRead) this.doneThenRead = (batch, limit) => this.markThenRead(batch, limit);
  }

  async read(limit: number): Promise<ReadBatch> {
    const started = ++this.reads;
    // Rows in flight are left out by the database, so their payloads are not fetched again.
    const inFlight = [...this.pending, ...this.marked.keys()];
    const { rows } =
      inFlight.length === 0
        ? await this.pool.query<OutboxRow>(this.sql.readFirst, [limit])
        : await this.pool.query<OutboxRow>(this.sql.readExcept, [limit, inFlight]);
    return this.handOut(rows, started, limit);
  }

  async done({ ids }: HandledBatch): Promise<number> {
    if (ids.length === 0) return 0;
    const { rowCount } = await this.pool.query(this.sql.markDone!, [ids]);
    this.forget(ids);
    return rowCount;
  }

  readonly doneThenRead?: (batch: HandledBatch, limit: number) => Promise<{ marked: number; batch: ReadBatch }>;

  private async markThenRead({ ids }: HandledBatch, limit: number): Promise<{ marked: number; batch: ReadBatch }> {
    const started = ++this.reads;
    const inFlight = [...this.pending, ...this.marked.keys()];
    const { rows } = await this.pool.query<OutboxRow & { marked: number }>(this.sql.markThenRead!, [limit, inFlight, ids]);
    this.forget(ids);
    const found = rows.filter((r) => r.id !== null);
    return { marked: rows[0]?.marked ?? 0, batch: this.handOut(found, started, limit) };
  }

  /** Marked rows are no longer pending; reads already running may still return them. */
  private forget(ids: string[]): void {
    for (const id of ids) {
      this.pending.delete(id);
      this.marked.set(id, this.reads);
    }
  }

  private handOut(rows: OutboxRow[], started: number, limit: number): ReadBatch {
    // A mark that committed before this read began is invisible to it: forget those.
    for (const [id, at] of this.marked) if (at < started) this.marked.delete(id);
    const fresh = rows.filter((r) => !this.pending.has(r.id) && !this.marked.has(r.id));
    for (const r of fresh) this.pending.add(r.id);
    return { rows: fresh, more: rows.length === limit };
  }
}

/** published=none. */
export class CursorReader implements OutboxReader {
  private window: CursorWindow | undefined;
  private saved = -1n;

  constructor(
    private readonly pool: Queryable,
    private readonly sql: OutboxSql,
    private readonly checked: CheckedMapping,
    private readonly options: { settleMs: number; maxMissing: number; maxWindow: bigint },
  ) {}

  private async open(): Promise<CursorWindow> {
    if (!this.window) {
      const { rows } = await this.pool.query<{ last_id: string }>(this.sql.loadCursor, [this.checked.name]);
      this.saved = BigInt(rows[0]?.last_id ?? '0');
      this.window = new CursorWindow(this.saved, this.options);
    }
    return this.window;
  }

  async read(limit: number): Promise<ReadBatch> {
    const window = await this.open();
    const missing = window.missing();
    // Too many gaps to list (a jump of the sequence): read the whole window and keep what is new.
    const wideFrom = missing === null ? window.settled : window.hi;
    const { rows } = await this.pool.query<OutboxRow & { snap: string }>(this.sql.readWindow, [
      (missing ?? []).map(String),
      window.hi.toString(),
      window.room(limit),
      wideFrom.toString(),
    ]);
    const snapshot = parseSnapshot(rows[0]!.snap);
    const found = rows.filter((r) => r.id !== null);
    const ids = found.map((r) => BigInt(r.id));
    const fresh = new Set(window.accept(ids, snapshot, true));
    let batch = found.flatMap(({ snap: _snap, ...row }, i) => (fresh.has(ids[i]!) ? [{ row, id: ids[i]! }] : []));
    // Rows arrive in id order, except late ones fetched as missing, which come first.
    if (missing?.length !== 0) batch = batch.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return {
      rows: batch.map((b) => b.row),
      cursor: window.settled,
      more: found.length >= limit,
      unsettled: window.settled < window.hi,
    };
  }

  async done(batch: HandledBatch): Promise<undefined> {
    if (batch.cursor === undefined || batch.cursor <= this.saved) return;
    await this.pool.query(this.sql.saveCursor, [this.checked.name, batch.cursor.toString()]);
    this.saved = batch.cursor;
  }
}
