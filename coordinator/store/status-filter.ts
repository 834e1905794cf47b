/**
 * Conditions for statements that find their trans_global rows by gid. Written plainly, a status
 * or type condition (`g.status in ('submitted', 'aborting')`, `g.trans_type = u.trans_type`)
 * matches trans_global_due_idx (every unfinished transaction), trans_global_status_idx or
 * trans_global_type_idx (every transaction of a status or type), and when the statistics say those
 * rows are few (a new store, or a backlog built since the last analyze) Postgres scans all of them
 * for each batch and joins by gid, so a batch's cost grows with the store. Wrapped in
 * `is not false`, a condition selects the same rows (these columns are never null) but no index can
 * answer it, so the rows are reached through the gid's unique index, one probe per gid.
 */
import { sql, type SQL } from 'drizzle-orm';
import type { GlobalStatus } from '../../schemas/dtm.js';

/** `condition`, checked on rows found otherwise: no index can serve it. */
export function afterLookup(condition: SQL): SQL {
  return sql`(${condition}) is not false`;
}

/** `column in (statuses)`, checked on rows found by gid. */
export function statusIn(column: string, statuses: readonly GlobalStatus[]): SQL {
  return afterLookup(sql.raw(`${column} in (${statuses.map((s) => `'${s}'`).join(', ')})`));
}
