/** What `concord outbox inspect` reports: pending rows, the oldest one's age, and a dry run of the mapping on real rows. */
import type pg from 'pg';
import { outboxCursorTable } from '../../schemas/db/outbox.js';
import type { Relay } from '../publisher.js';
import { decodeRow, type OutboxRow } from './decode-row.js';
import type { CheckedMapping } from './mapping-check.js';
import { outboxDb, type OutboxPool } from './outbox-db.js';
import { outboxSql } from './outbox-sql.js';
import { brokerHeaders } from '../../schemas/broker-messages.js';
import { logicalNamesIn, slotStatus, type SlotStatus } from './logical-slot.js';

export interface SampleRow {
  id: string;
  /** Where it would go, its key and body size; or why it would be parked. */
  url?: string;
  key?: string;
  bytes?: number;
  messageId?: string;
  error?: string;
}

export interface Inspection {
  pending: number;
  /** Seconds since the oldest pending row was written (needs createdAtColumn). */
  oldestAgeSeconds: number | null;
  /** published=none: the drain's saved cursor. */
  cursor?: string;
  /** The drain's replication slot (read=logical, or left behind by it). */
  slot?: SlotStatus;
  sample: SampleRow[];
}

export async function inspectOutbox(
  pool: OutboxPool | pg.ClientBase,
  checked: CheckedMapping,
  relay: Pick<Relay, 'problem'>,
  sampleSize = 20,
): Promise<Inspection> {
  const sql = outboxSql(checked);
  const db = outboxDb(pool);
  let cursor: string | undefined;
  const slot = db.dialect === 'postgres' ? await slotStatus(db, await logicalNamesIn(db, checked.name)) : undefined;
  if (checked.mapping.read === 'logical' && checked.mapping.published === 'none') {
    // No table cursor moves in this mode: what is pending is what the slot has not confirmed (its lag).
    return { pending: 0, oldestAgeSeconds: null, ...(slot ? { slot } : {}), sample: [] };
  }
  if (checked.mapping.published === 'none') {
    const exists = await db.query<{ t: string | null }>('select to_regclass($1)::text as t', [outboxCursorTable]);
    cursor = '0';
    if (exists.rows[0]?.t) cursor = (await db.query<{ last_id: string }>(sql.loadCursor, [checked.name])).rows[0]?.last_id ?? '0';
  }
  const pending = await db.query<{ pending: string; oldest_age: number | null }>(sql.pending, cursor === undefined ? [] : [cursor]);
  const rows =
    cursor === undefined
      ? (await db.query<OutboxRow>(sql.readFirst, [sampleSize])).rows
      : (await db.query<OutboxRow>(sql.readAfter, [sampleSize, cursor])).rows;
  const sample = rows.map((row): SampleRow => {
    const decoded = decodeRow(checked.mapping, row);
    if ('error' in decoded) return { id: row.id, error: decoded.error };
    const problem = relay.problem(decoded.url);
    if (problem) return { id: row.id, url: decoded.url, error: problem };
    return {
      id: row.id,
      url: decoded.url,
      ...(decoded.key === undefined ? {} : { key: decoded.key }),
      bytes: Buffer.byteLength(decoded.payload),
      messageId: decoded.headers[brokerHeaders.messageId]!,
    };
  });
  return {
    pending: Number(pending.rows[0]!.pending),
    oldestAgeSeconds: pending.rows[0]!.oldest_age === null ? null : Number(pending.rows[0]!.oldest_age),
    ...(cursor === undefined ? {} : { cursor }),
    ...(slot ? { slot } : {}),
    sample,
  };
}
