/**
 * Gap-free reading by id without marking rows (published=none). Ids come from a sequence, so a
 * writer may commit id 5 after id 7 was read: reading "id > last seen" would skip 5 for ever.
 *
 * The window is (cursor, hi]: ids above the cursor that may still need publishing. Every read
 * fetches the ids of the window not seen yet ("missing") plus new rows above hi, in one statement
 * that also returns its snapshot. A row with an id ≤ M (M = the highest id one read saw) was given
 * its id before M's transaction committed, so before that read's snapshot: it is visible to that
 * read, or its transaction was in progress then (in the snapshot's xip list), or it rolled back.
 * Once none of those in-progress transactions is in progress any more (a later snapshot's xip), and
 * a later read has fetched the missing ids, every id ≤ M is final: the cursor may pass M.
 *
 * A transaction gets its transaction id when it first writes, a moment after nextval gave it its
 * row id: a snapshot taken in between would not list it. So the in-progress list a step waits on is
 * taken from the first read at least `settleMs` after the step, when any such writer has its id.
 */

export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  xip: bigint[];
}

/** pg_current_snapshot() as text: "xmin:xmax:xip1,xip2". */
export function parseSnapshot(text: string): Snapshot {
  const [xmin, xmax, xip] = text.split(':');
  return { xmin: BigInt(xmin!), xmax: BigInt(xmax!), xip: xip ? xip.split(',').map((x) => BigInt(x)) : [] };
}

interface Barrier {
  upTo: bigint;
  /** The transactions that must end before the cursor passes upTo; null until settleMs has passed. */
  inProgress: bigint[] | null;
  at: number;
}

export class CursorWindow {
  /** Every id ≤ settled is final: published, parked, or never committed. */
  settled: bigint;
  /** The highest id read. */
  hi: bigint;
  private readonly seen = new Set<bigint>();
  private barriers: Barrier[] = [];

  constructor(
    cursor: bigint,
    private readonly options: { settleMs: number; maxMissing: number; maxWindow: bigint },
  ) {
    this.settled = cursor;
    this.hi = cursor;
  }

  /** Ids of the window not read yet (held by open transactions, or rolled back). Null when too many to list. */
  missing(): bigint[] | null {
    const out: bigint[] = [];
    if (BigInt(this.seen.size) === this.hi - this.settled) return out; // no gap (a backlog streaming in order)
    for (let id = this.settled + 1n; id <= this.hi; id++) {
      if (this.seen.has(id)) continue;
      if (out.length >= this.options.maxMissing) return null;
      out.push(id);
    }
    return out;
  }

  /** How many new rows the next read may fetch above hi: none while the window is full. */
  room(batch: number): number {
    return this.hi - this.settled >= this.options.maxWindow ? 0 : batch;
  }

  /**
   * Takes one read: the ids it returned and its snapshot; `complete` says the read fetched every
   * missing id. Returns the ids seen for the first time, in order.
   */
  accept(ids: bigint[], snapshot: Snapshot, complete: boolean, now = Date.now()): bigint[] {
    const fresh = ids.filter((id) => id > this.settled && !this.seen.has(id));
    if (fresh.some((id, i) => i > 0 && id < fresh[i - 1]!)) fresh.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const id of fresh) {
      this.seen.add(id);
      if (id > this.hi) this.hi = id;
    }
    if (this.barriers.at(-1)?.upTo !== this.hi) this.barriers.push({ upTo: this.hi, inProgress: null, at: now });
    for (const b of this.barriers) if (b.inProgress === null && now - b.at >= this.options.settleMs) b.inProgress = snapshot.xip;
    if (complete) {
      const open = new Set(snapshot.xip);
      let upTo: bigint | undefined;
      while (this.barriers.length > 0) {
        const b = this.barriers[0]!;
        if (b.inProgress === null || b.inProgress.some((x) => open.has(x))) break;
        upTo = b.upTo;
        this.barriers.shift();
      }
      if (upTo !== undefined && upTo > this.settled) {
        for (const id of this.seen) if (id <= upTo) this.seen.delete(id);
        this.settled = upTo;
      }
    }
    return fresh;
  }
}
