/**
 * The SQL a drain runs on an adopted table, built once from a checked mapping. Identifiers come
 * from the mapping (validated as plain identifiers) and are quoted; values are always parameters.
 */
import { outboxCursorTable, outboxParkedTable } from '../../schemas/db/outbox.js';
import type { CheckedMapping } from './mapping-check.js';

export interface OutboxSql {
  /** Rows as the drain reads them: id, destination, key, payload, headers (aliases). */
  columns: string;
  /** Unpublished rows with published=flag (true otherwise). */
  unpublished: string;
  /** flag/delete: unpublished rows in id order; $1 = limit, $2 = after this id (the second form). */
  readFirst: string;
  readAfter: string;
  /**
   * none: the snapshot, then rows with ids in $1 (ids still missing), in ($4, $2] (the whole window,
   * when too many are missing to list), and above $2 (at most $3 of these).
   */
  readWindow: string;
  /** flag/delete: marks or deletes the rows whose ids are in $1 (text[]). */
  markDone?: string;
  /** none: moves the cursor of $1 forward to $2. */
  saveCursor: string;
  loadCursor: string;
  /** Copies row $2 into the parked table for drain $1 with message id $3, error $4, attempts $5. */
  park: string;
  /** How many rows are pending ($1 = cursor with none), and when the oldest was written. */
  pending: string;
}

export function quoteIdent(name: string): string {
  return name
    .split('.')
    .map((part) => `"${part.replaceAll('"', '""')}"`)
    .join('.');
}

export function outboxSql(checked: CheckedMapping): OutboxSql {
  const m = checked.mapping;
  const t = quoteIdent(m.table);
  const id = quoteIdent(m.idColumn);
  const col = (c: string | undefined, cast = '::text') => (c ? `t.${quoteIdent(c)}${cast}` : 'null::text');
  const columns = [
    `t.${id}::text as id`,
    `${col(m.destinationColumn)} as destination`,
    `${col(m.keyColumn)} as key`,
    // bytea arrives as a Buffer; everything else as the text Postgres prints.
    `${col(m.payloadColumn, m.payloadEncoding === 'bytea' ? '' : '::text')} as payload`,
    `${col(m.headersColumn)} as headers`,
  ].join(', ');
  const idMatch = checked.integerId ? `t.${id} = any($1::bigint[])` : `t.${id}::text = any($1::text[])`;
  let unpublished = 'true';
  let markDone: string | undefined;
  if (m.published === 'flag') {
    const flag = quoteIdent(m.publishedColumn!);
    const [test, value] = {
      boolean: [`t.${flag} is not true`, 'true'],
      number: [`coalesce(t.${flag}, 0) = 0`, '1'],
      timestamp: [`t.${flag} is null`, 'now()'],
    }[checked.flagKind!] as [string, string];
    unpublished = test;
    markDone = `update ${t} t set ${flag} = ${value} where ${idMatch}`;
  } else if (m.published === 'delete') {
    markDone = `delete from ${t} t where ${idMatch}`;
  }
  // Compared as the column's own type, so the primary key index serves the order and the bound.
  const idParam = (n: number) => `$${n}::${checked.integerId ? 'bigint' : 'text'}`;
  const idExpr = checked.integerId ? `t.${id}` : `t.${id}::text`;
  return {
    columns,
    unpublished,
    readFirst: `select ${columns} from ${t} t where ${unpublished} order by ${idExpr} limit $1`,
    readAfter: `select ${columns} from ${t} t where ${unpublished} and ${idExpr} > ${idParam(2)} order by ${idExpr} limit $1`,
    readWindow: `select s.snap, r.* from (select pg_current_snapshot()::text as snap) s left join lateral (
      (select ${columns} from ${t} t where ${idMatch})
      union all
      (select ${columns} from ${t} t where t.${id} > $4::bigint and t.${id} <= $2::bigint)
      union all
      (select ${columns} from ${t} t where t.${id} > $2::bigint order by t.${id} limit $3)
    ) r on true`,
    markDone,
    saveCursor: `insert into ${outboxCursorTable} (drain, last_id) values ($1, $2) on conflict (drain)
      do update set last_id = greatest(${outboxCursorTable}.last_id, excluded.last_id), updated_at = now()`,
    loadCursor: `select last_id::text as last_id from ${outboxCursorTable} where drain = $1`,
    park: `insert into ${outboxParkedTable} (drain, row_id, message_id, row_data, error, attempts)
      select $1, t.${id}::text, $3, to_jsonb(t), $4, $5 from ${t} t where ${idExpr} = ${idParam(2)}
      on conflict (drain, row_id) do update set error = excluded.error, attempts = ${outboxParkedTable}.attempts + excluded.attempts, parked_at = now()`,
    pending: `select count(*)::text as pending, ${m.createdAtColumn ? `extract(epoch from now() - min(t.${quoteIdent(m.createdAtColumn)}))` : 'null'}::float8 as oldest_age
      from ${t} t where ${unpublished}${m.published === 'none' ? ` and t.${id} > $1::bigint` : ''}`,
  };
}
