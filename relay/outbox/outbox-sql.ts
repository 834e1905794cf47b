/**
 * The SQL a drain runs on an adopted table, built once from a checked mapping. Identifiers come
 * from the mapping (validated as plain identifiers) and are quoted; values are always parameters.
 */
import { outboxCursorTable, outboxParkedTable, outboxStatsTable } from '../../schemas/db/outbox.js';
import type { CheckedMapping } from './mapping-check.js';

export interface OutboxSql {
  /** Rows as the drain reads them: id, destination, key, payload, headers (aliases). */
  columns: string;
  /** Unpublished rows with published=flag (true otherwise). */
  unpublished: string;
  /** flag/delete: unpublished rows in id order; $1 = limit, $2 = after this id (the second form). */
  readFirst: string;
  readAfter: string;
  /** flag/delete: readFirst without the rows whose ids are in $2 (those in flight); $2 is never empty. */
  readExcept: string;
  /** flag/delete: the rows whose ids are in $1 that are still unpublished, in id order. */
  readIds: string;
  /**
   * none: the snapshot, then rows with ids in $1 (ids still missing), in ($4, $2] (the whole window,
   * when too many are missing to list), and above $2 (at most $3 of these).
   */
  readWindow: string;
  /** flag/delete: marks or deletes the rows whose ids are in $1 (text[]). */
  markDone?: string;
  /**
   * Postgres flag/delete: markDone of the ids in $3, then readExcept ($1 limit, $2 in flight, which
   * must hold $3: the read sees the table as it was before the mark) in one statement. Each row
   * carries `marked` (how many $3 marked); no row found gives one row with a null id.
   */
  markThenRead?: string;
  /** none: moves the cursor of $1 forward to $2. */
  saveCursor: string;
  loadCursor: string;
  /** Copies row $2 into the parked table for drain $1 with message id $3, error $4, attempts $5. */
  park: string;
  /** How many rows are pending ($1 = cursor with none), and when the oldest was written. */
  pending: string;
  /** Age in seconds of the oldest pending row (null: none pending); $1 = the drain's name. Needs createdAtColumn. */
  oldestAge?: string;
  /** Adds $2 published, $3 duplicates, $4 parked to the stats of drain $1. */
  recordStats: string;
  /** The stats of drain $1 (published, duplicates as text; first_at, last_at) and how many of its rows are parked now. */
  stats: string;
  /** Parked rows of drain $1 (row_id, row_data), all of them or (byId) those whose ids are in $2. */
  parked: string;
  parkedById: string;
}

/** One of `count` parts of a table split by a hash of the key (of the id for keyless rows). */
export interface Partition {
  index: number;
  count: number;
}

export function quoteIdent(name: string): string {
  return name
    .split('.')
    .map((part) => `"${part.replaceAll('"', '""')}"`)
    .join('.');
}

export function outboxSql(checked: CheckedMapping, partition?: Partition): OutboxSql {
  if (checked.dialect === 'mysql') return mysqlOutboxSql(checked, partition);
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
    // Only rows still unpublished: the others the old poller marked first (and published too).
    markDone = `update ${t} t set ${flag} = ${value} where ${idMatch} and ${test}`;
  } else if (m.published === 'delete') {
    markDone = `delete from ${t} t where ${idMatch}`;
  }
  // Compared as the column's own type, so the primary key index serves the order and the bound.
  const idParam = (n: number) => `$${n}::${checked.integerId ? 'bigint' : 'text'}`;
  const idExpr = checked.integerId ? `t.${id}` : `t.${id}::text`;
  // A key always hashes to the same part, so its rows keep their order; keyless rows spread by id.
  const hashed = m.keyColumn ? `coalesce(t.${quoteIdent(m.keyColumn)}::text, t.${id}::text)` : `t.${id}::text`;
  const mine =
    partition && partition.count > 1
      ? ` and (hashtextextended(${hashed}, 0) & 9223372036854775807) % ${partition.count} = ${partition.index}`
      : '';
  const cursorBound =
    m.published === 'none'
      ? ` and t.${id} > coalesce((select last_id from ${outboxCursorTable} where drain = $1), 0)`
      : ' and $1::text is not null';
  return {
    columns,
    unpublished,
    readFirst: `select ${columns} from ${t} t where ${unpublished}${mine} order by ${idExpr} limit $1`,
    readAfter: `select ${columns} from ${t} t where ${unpublished}${mine} and ${idExpr} > ${idParam(2)} order by ${idExpr} limit $1`,
    readExcept: `select ${columns} from ${t} t where ${unpublished}${mine} and not (${idMatch.replace('$1', '$2')}) order by ${idExpr} limit $1`,
    readIds: `select ${columns} from ${t} t where ${idMatch} and ${unpublished} order by ${idExpr}`,
    ...(m.createdAtColumn
      ? {
          oldestAge: `select extract(epoch from now() - t.${quoteIdent(m.createdAtColumn)})::float8 as age
            from ${t} t where ${unpublished}${cursorBound} order by ${idExpr} limit 1`,
        }
      : {}),
    readWindow: `select s.snap, r.* from (select pg_current_snapshot()::text as snap) s left join lateral (
      (select ${columns} from ${t} t where ${idMatch})
      union all
      (select ${columns} from ${t} t where t.${id} > $4::bigint and t.${id} <= $2::bigint)
      union all
      (select ${columns} from ${t} t where t.${id} > $2::bigint order by t.${id} limit $3)
    ) r on true`,
    markDone,
    ...(markDone
      ? {
          markThenRead: `with done as (${markDone.replace('$1', '$3')} returning 1)
            select n.marked, r.* from (select count(*)::int as marked from done) n left join lateral (
              select ${columns} from ${t} t where ${unpublished}${mine} and not (${idMatch.replace('$1', '$2')}) order by ${idExpr} limit $1
            ) r on true`,
        }
      : {}),
    saveCursor: `insert into ${outboxCursorTable} (drain, last_id) values ($1, $2) on conflict (drain)
      do update set last_id = greatest(${outboxCursorTable}.last_id, excluded.last_id), updated_at = now()`,
    loadCursor: `select last_id::text as last_id from ${outboxCursorTable} where drain = $1`,
    park: `insert into ${outboxParkedTable} (drain, row_id, message_id, row_data, error, attempts)
      select $1, t.${id}::text, $3, to_jsonb(t), $4, $5 from ${t} t where ${idExpr} = ${idParam(2)}
      on conflict (drain, row_id) do update set error = excluded.error, attempts = ${outboxParkedTable}.attempts + excluded.attempts, parked_at = now()`,
    pending: `select count(*)::text as pending, ${m.createdAtColumn ? `extract(epoch from now() - min(t.${quoteIdent(m.createdAtColumn)}))` : 'null'}::float8 as oldest_age
      from ${t} t where ${unpublished}${m.published === 'none' ? ` and t.${id} > $1::bigint` : ''}`,
    recordStats: `insert into ${outboxStatsTable} as s (drain, published, duplicates, parked) values ($1, $2, $3, $4) on conflict (drain)
      do update set published = s.published + excluded.published, duplicates = s.duplicates + excluded.duplicates,
      parked = s.parked + excluded.parked, last_at = now()`,
    stats: `select s.published::text as published, s.duplicates::text as duplicates, s.first_at, s.last_at,
      (select count(*) from ${outboxParkedTable} p where p.drain = $1)::text as parked_now
      from (select 1) one left join ${outboxStatsTable} s on s.drain = $1`,
    parked: `select row_id, row_data from ${outboxParkedTable} where drain = $1 order by parked_at, row_id`,
    parkedById: `select row_id, row_data from ${outboxParkedTable} where drain = $1 and row_id = any($2::text[]) order by parked_at, row_id`,
  };
}

export function quoteMysqlIdent(name: string): string {
  return name
    .split('.')
    .map((part) => `\`${part.replaceAll('`', '``')}\``)
    .join('.');
}

/**
 * MySQL/MariaDB (InnoDB): the same statements for flag and delete (published=none is refused by
 * checkMapping). Each statement runs alone, so each read sees what committed before it began.
 */
function mysqlOutboxSql(checked: CheckedMapping, partition?: Partition): OutboxSql {
  const m = checked.mapping;
  const q = quoteMysqlIdent;
  const t = q(m.table);
  const id = `t.${q(m.idColumn)}`;
  const col = (c: string | undefined) => (c ? `cast(t.${q(c)} as char)` : 'null');
  const columns = [
    `cast(${id} as char) as id`,
    `${col(m.destinationColumn)} as destination`,
    `${col(m.keyColumn)} as \`key\``,
    // Binary bodies arrive as Buffers; everything else as text.
    `${m.payloadEncoding === 'bytea' ? `t.${q(m.payloadColumn)}` : col(m.payloadColumn)} as payload`,
    `${col(m.headersColumn)} as headers`,
  ].join(', ');
  // Ids travel as text; compared as numbers when the column is one, so the primary key serves.
  const idParam = (n: number) => (checked.integerId ? `cast($${n} as signed)` : `$${n}`);
  let unpublished = 'true';
  let markDone: string | undefined;
  if (m.published === 'flag') {
    const flag = `t.${q(m.publishedColumn!)}`;
    const [test, value] = {
      boolean: [`${flag} is not true`, 'true'],
      number: [`coalesce(${flag}, 0) = 0`, '1'],
      timestamp: [`${flag} is null`, 'current_timestamp(6)'],
    }[checked.flagKind!] as [string, string];
    unpublished = test;
    markDone = `update ${t} t set ${flag} = ${value} where ${id} in ($1) and ${test}`;
  } else if (m.published === 'delete') {
    markDone = `delete t from ${t} t where ${id} in ($1)`;
  }
  const rowData = `json_object(${checked.columns
    .map((c) => `'${c.name.replaceAll("'", "''")}', ${c.binary ? `concat('\\\\x', lower(hex(t.${q(c.name)})))` : `t.${q(c.name)}`}`)
    .join(', ')})`;
  // A key always hashes to the same part (crc32 here: its own parts, not Postgres's).
  const hashed = m.keyColumn ? `coalesce(cast(t.${q(m.keyColumn)} as char), cast(${id} as char))` : `cast(${id} as char)`;
  const mine = partition && partition.count > 1 ? ` and crc32(${hashed}) % ${partition.count} = ${partition.index}` : '';
  const select = `select ${columns} from ${t} t where ${unpublished}${mine}`;
  return {
    columns,
    unpublished,
    readFirst: `${select} order by ${id} limit $1`,
    readAfter: `${select} and ${id} > ${idParam(2)} order by ${id} limit $1`,
    readExcept: `${select} and ${id} not in ($2) order by ${id} limit $1`,
    readIds: `select ${columns} from ${t} t where ${id} in ($1) and ${unpublished} order by ${id}`,
    ...(m.createdAtColumn
      ? {
          oldestAge: `select timestampdiff(microsecond, t.${q(m.createdAtColumn)}, now(6)) / 1e6 as age
            from ${t} t where ${unpublished} and $1 is not null order by ${id} limit 1`,
        }
      : {}),
    readWindow: 'published=none is not supported on MySQL',
    markDone,
    saveCursor: 'published=none is not supported on MySQL',
    loadCursor: 'published=none is not supported on MySQL',
    park: `insert into ${outboxParkedTable} (drain, row_id, message_id, row_data, error, attempts)
      select $1, cast(${id} as char), $3, ${rowData}, $4, $5 from ${t} t where ${id} = ${idParam(2)}
      on duplicate key update error = values(error), attempts = attempts + values(attempts), parked_at = current_timestamp(6)`,
    pending: `select cast(count(*) as char) as pending, ${m.createdAtColumn ? `timestampdiff(microsecond, min(t.${q(m.createdAtColumn)}), now(6)) / 1e6` : 'null'} as oldest_age
      from ${t} t where ${unpublished}`,
    recordStats: `insert into ${outboxStatsTable} (drain, published, duplicates, parked) values ($1, $2, $3, $4)
      on duplicate key update published = published + values(published), duplicates = duplicates + values(duplicates),
      parked = parked + values(parked), last_at = current_timestamp(6)`,
    stats: `select cast(s.published as char) as published, cast(s.duplicates as char) as duplicates, s.first_at, s.last_at,
      cast((select count(*) from ${outboxParkedTable} p where p.drain = $1) as char) as parked_now
      from (select 1) one left join ${outboxStatsTable} s on s.drain = $1`,
    parked: `select row_id, row_data from ${outboxParkedTable} where drain = $1 order by parked_at, row_id`,
    parkedById: `select row_id, row_data from ${outboxParkedTable} where drain = $1 and row_id in ($2) order by parked_at, row_id`,
  };
}
