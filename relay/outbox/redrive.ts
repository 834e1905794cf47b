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
  db: pg.Pool,
  checked: CheckedMapping,
  relay: Pick<Relay, 'publish' | 'problem'>,
  options: { ids?: string[]; timeoutMs?: number } = {},
): Promise<RedriveResult> {
  const { rows } = await db.query<{ row_id: string; row_data: Record<string, unknown> }>(
    `select row_id, row_data from ${outboxParkedTable} where drain = $1 and ($2::text[] is null or row_id = any($2::text[]))
     order by parked_at, row_id`,
    [checked.name, options.ids ?? null],
  );
  const result: RedriveResult = { delivered: [], failed: [] };
  for (const parked of rows) {
    const decoded = decodeRow(checked.mapping, rowOf(checked, parked.row_id, parked.row_data));
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
        `update ${outboxParkedTable} set error = $3, attempts = attempts + 1, parked_at = now() where drain = $1 and row_id = $2`,
        [checked.name, parked.row_id, error.slice(0, 2000)],
      );
      result.failed.push({ id: parked.row_id, error });
    }
  }
  return result;
}
