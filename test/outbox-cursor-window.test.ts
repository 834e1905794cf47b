/** The cursor of published=none moves past an id only once no transaction can still commit a lower one. */
import { describe, expect, it } from 'vitest';
import { CursorWindow, parseSnapshot } from '../relay/outbox/cursor-window.js';

const options = { settleMs: 0, maxMissing: 1000, maxWindow: 1_000_000n };
const snap = (xip: number[]) => ({ xmin: 1n, xmax: 100n, xip: xip.map(BigInt) });

describe('cursor window', () => {
  it('parses pg_current_snapshot()', () => {
    expect(parseSnapshot('10:15:10,12')).toEqual({ xmin: 10n, xmax: 15n, xip: [10n, 12n] });
    expect(parseSnapshot('10:10:')).toEqual({ xmin: 10n, xmax: 10n, xip: [] });
  });

  it('holds the cursor below a gap while the transactions of that read are open, and asks for the missing id', () => {
    const w = new CursorWindow(0n, options);
    // Read 1 sees ids 1, 2 and 4 while transaction 50 (which holds id 3) is open.
    expect(w.accept([1n, 2n, 4n], snap([50]), true)).toEqual([1n, 2n, 4n]);
    expect(w.settled).toBe(0n);
    expect(w.missing()).toEqual([3n]);
    // Read 2: 50 still open, nothing new.
    expect(w.accept([], snap([50, 51]), true)).toEqual([]);
    expect(w.settled).toBe(0n);
    // Read 3: 50 committed; id 3 arrives (fetched as missing), and the cursor passes 4, not the
    // newer id 5 read while 51 was open.
    expect(w.accept([3n, 5n], snap([51]), true)).toEqual([3n, 5n]);
    expect(w.settled).toBe(4n);
    // Id 3 or 4 again (a second reading of the window) is not new.
    expect(w.accept([4n], snap([]), true)).toEqual([]);
    expect(w.settled).toBe(5n);
    expect(w.missing()).toEqual([]);
  });

  it('passes ids that never commit (rolled back) once their transactions are over', () => {
    const w = new CursorWindow(10n, options);
    w.accept([11n, 13n], snap([70]), true); // 12 belongs to 70, which will roll back
    expect(w.missing()).toEqual([12n]);
    w.accept([], snap([]), true);
    expect(w.settled).toBe(13n);
    expect(w.missing()).toEqual([]);
  });

  it('waits settleMs before taking the list of open transactions to wait for', () => {
    const w = new CursorWindow(0n, { ...options, settleMs: 100 });
    w.accept([1n, 2n], snap([]), true, 1_000);
    expect(w.settled).toBe(0n); // an empty list, but taken too early: a writer may not have its transaction id yet
    w.accept([], snap([60]), true, 1_150); // 60 is such a writer: now waited for
    expect(w.settled).toBe(0n);
    w.accept([], snap([]), true, 1_200);
    expect(w.settled).toBe(2n);
  });

  it('stops reading ahead when the window is full', () => {
    const w = new CursorWindow(0n, { ...options, maxWindow: 3n });
    w.accept([1n, 2n, 3n], snap([9]), true);
    expect(w.room(100)).toBe(0);
    w.accept([], snap([]), true);
    expect(w.room(100)).toBe(100);
  });
});
