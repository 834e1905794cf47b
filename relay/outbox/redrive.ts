/**
 * Publishes parked rows again, from the copy kept in concord_outbox_parked (the source row may be
 * marked or deleted by now). A row delivered leaves the parked table; one that fails stays, with
 * the new error and one more attempt.
 */
import type pg from 'pg';
import { outboxParkedTable } from '../../schemas/db/outbox.js';
import type { Relay } from '../publisher.js';
import { decodeRow, type OutboxRow } from './decode-row.js';
import type { CheckedMapping } from './mapping-check.js';
import { outboxDb, type OutboxPool } from './outbox-db.js';
import { outboxSql } from './outbox-sql.js';

export interface RedriveResult {
  delivered: string[];
  failed: { id: string; error: string }[];
}

/** The parked copy (to_jsonb of the row) as the drain reads rows. */
function rowOf(checked: CheckedMapping, id: string, data: Record<string, unknown>): OutboxRow {
  const m = checked.mapping;
  const text = (column: string | undefined): string | null => {
    const value = column === undefined ? null : data[column];
    if (value === null || value === undefined) return null;
    return typeof value === 'string' ? value : JSON.stringify(value);
  };
  const payload = text(m.payloadColumn);
  return {
    id,
    destination: text(m.destinationColumn),
    key: text(m.keyColumn),
    // to_jsonb writes bytea as "\x<hex>".
    payload: m.payloadEncoding === 'bytea' && payload !== null ? Buffer.from(payload.replace(/^\\x/, ''), 'hex') : payload,
    headers: text(m.headersColumn),
  };
}

export async function redriveParked(
  pool: OutboxPool | pg.ClientBase,
  checked: CheckedMapping,
  relay: Pick<Relay, 'publish' | 'problem'>,
  options: { ids?: string[]; timeoutMs?: number } = {},
): Promise<RedriveResult> {
  const db = outboxDb(pool);
  const sql = outboxSql(checked);
  const { rows } = await db.query<{ row_id: string; row_data: Record<string, unknown> | string }>(
    options.ids ? sql.parkedById : sql.parked,
    options.ids ? [checked.name, options.ids] : [checked.name],
  );
  const result: RedriveResult = { delivered: [], failed: [] };
  for (const parked of rows) {
    // MariaDB's json is text.
    const data = typeof parked.row_data === 'string' ? (JSON.parse(parked.row_data) as Record<string, unknown>) : parked.row_data;
    const decoded = decodeRow(checked.mapping, rowOf(checked, parked.row_id, data));
    let error = 'error' in decoded ? decoded.error : relay.problem(decoded.url);
    if (error === undefined && !('error' in decoded)) {
      const answer = await relay.publish({
        url: decoded.url,
        params: {},
        payload: decoded.payload,
        headers: decoded.headers,
        timeoutMs: options.timeoutMs ?? 30_000,
        ...(decoded.key === undefined ? {} : { key: decoded.key }),
      });
      if (answer.outcome !== 'SUCCESS') error = answer.detail;
    }
    if (error === undefined) {
      await db.query(`delete from ${outboxParkedTable} where drain = $1 and row_id = $2`, [checked.name, parked.row_id]);
      result.delivered.push(parked.row_id);
    } else {
      await db.query(
        `update ${outboxParkedTable} set error = $3, attempts = attempts + 1, parked_at = current_timestamp where drain = $1 and row_id = $2`,
        [checked.name, parked.row_id, error.slice(0, 2000)],
      );
      result.failed.push({ id: parked.row_id, error });
    }
  }
  return result;
}
