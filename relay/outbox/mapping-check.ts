/**
 * A mapping is checked twice before a row is read: its shape (zod), then against the real table's
 * columns and types. Every refusal is a ConcordError whose `field` names the mapping key at fault.
 */
import type pg from 'pg';
import { ConcordError } from '../../schemas/errors.js';
import { outboxMappingSchema, type OutboxMapping } from '../../schemas/outbox.js';
import { logicalFacts, logicalNamesIn, logicalSetupProblem } from './logical-slot.js';
import { outboxDb, type OutboxDb, type OutboxDialect, type OutboxPool } from './outbox-db.js';

/** How a published flag column is set and tested. */
export type FlagKind = 'boolean' | 'number' | 'timestamp';

/** A mapping that matches its table, with what the SQL needs to know about the columns. */
export interface CheckedMapping {
  mapping: OutboxMapping;
  /** The drain's name: mapping.name or the table. */
  name: string;
  flagKind?: FlagKind;
  /** The id column is an integer (required by published=none, whose cursor is a number). */
  integerId: boolean;
  dialect: OutboxDialect;
  /** The table's columns (MySQL: parked rows copy them one by one; binary ones as \\x<hex>). */
  columns: { name: string; binary: boolean }[];
}

/** Parses a mapping (JSON object), or throws INVALID_REQUEST naming the first bad key. */
export function parseMapping(input: unknown): OutboxMapping {
  const parsed = outboxMappingSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const field = issue.path.map(String).join('.');
  const problems = parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(mapping)'}: ${i.message}`);
  throw new ConcordError('INVALID_REQUEST', `invalid outbox mapping: ${problems.join('; ')}`, { field });
}

const integerTypes = new Set(['smallint', 'integer', 'bigint']);
const textTypes = /^(text|character varying|character|varchar|char|name)\b/;
const timestampTypes = /^timestamp/;

/** Compares the mapping with the table; throws INVALID_REQUEST naming the mapping key that does not fit. */
export async function checkMapping(pool: OutboxPool | pg.ClientBase, mapping: OutboxMapping): Promise<CheckedMapping> {
  const fail = (field: keyof OutboxMapping, message: string): never => {
    throw new ConcordError('INVALID_REQUEST', `outbox mapping ${field}: ${message}`, { field });
  };
  const db = outboxDb(pool);
  const rows = db.dialect === 'mysql' ? await mysqlColumns(db, mapping.table) : await postgresColumns(db, mapping.table);
  if (rows.length === 0) return fail('table', `no table "${mapping.table}" in this database`);
  // Checked in Postgres' names (a MySQL blob counts as bytea); messages show the real type.
  const types = new Map(rows.map((r) => [r.name, r.as ?? r.type]));
  const shown = new Map(rows.map((r) => [r.name, r.type]));
  const columnList = rows.map((r) => `${r.name} ${r.type}`).join(', ');
  const typeOf = (field: keyof OutboxMapping): string | undefined => {
    const column = mapping[field];
    if (typeof column !== 'string') return undefined;
    const type = types.get(column);
    if (!type) return fail(field, `no column "${column}" in ${mapping.table} (it has: ${columnList})`);
    return type;
  };
  const expect = (field: keyof OutboxMapping, ok: (type: string) => boolean, what: string) => {
    const type = typeOf(field);
    if (type !== undefined && !ok(type))
      fail(field, `column "${mapping[field] as string}" is ${shown.get(mapping[field] as string)}; expected ${what}`);
  };

  const idType = typeOf('idColumn')!;
  const integerId = integerTypes.has(idType);
  if (mapping.published === 'none' && !integerId)
    fail('idColumn', `published=none keeps a numeric cursor, so "${mapping.idColumn}" must be smallint, integer or bigint, not ${idType}`);
  expect('destinationColumn', (t) => textTypes.test(t), 'text or varchar');
  expect('keyColumn', (t) => textTypes.test(t) || integerTypes.has(t) || t === 'uuid', 'text, varchar, an integer or uuid');
  const payload: Record<OutboxMapping['payloadEncoding'], [(t: string) => boolean, string]> = {
    text: [(t) => textTypes.test(t) || t === 'json' || t === 'jsonb', 'text or varchar'],
    json: [(t) => t === 'json' || t === 'jsonb' || textTypes.test(t), 'json, jsonb or text'],
    bytea: [(t) => t === 'bytea', 'bytea'],
    base64: [(t) => textTypes.test(t), 'text holding base64'],
  };
  const [payloadOk, payloadWhat] = payload[mapping.payloadEncoding];
  expect('payloadColumn', payloadOk, `${payloadWhat} for payloadEncoding=${mapping.payloadEncoding}`);
  expect('headersColumn', (t) => t === 'json' || t === 'jsonb' || textTypes.test(t), 'json, jsonb or text holding a JSON object');
  expect('createdAtColumn', (t) => timestampTypes.test(t), 'a timestamp');

  let flagKind: FlagKind | undefined;
  const flagType = typeOf('publishedColumn');
  if (flagType !== undefined) {
    if (flagType === 'boolean') flagKind = 'boolean';
    else if (integerTypes.has(flagType)) flagKind = 'number';
    else if (timestampTypes.test(flagType)) flagKind = 'timestamp';
    else
      fail(
        'publishedColumn',
        `column "${mapping.publishedColumn}" is ${shown.get(mapping.publishedColumn!)}; expected boolean, an integer (0/1) or a timestamp`,
      );
  }

  if (db.dialect === 'mysql') {
    if (mapping.published === 'none')
      fail(
        'published',
        'published=none (a cursor over ids) is not supported on MySQL/MariaDB: it has no transaction snapshot to tell a late commit from a gap; use flag or delete',
      );
    if (mapping.notifyChannel) fail('notifyChannel', 'MySQL/MariaDB has no LISTEN/NOTIFY; leave notifyChannel out (the drain polls)');
    if (mapping.read === 'logical')
      fail('read', 'read=logical (a Postgres replication slot) is not available on MySQL/MariaDB; use read=table');
  }
  if (db.dialect === 'postgres' && mapping.read === 'logical') {
    const names = await logicalNamesIn(db, mapping.name ?? mapping.table);
    const problem = logicalSetupProblem(await logicalFacts(db, names, mapping.table), names, mapping.table);
    if (problem) fail('read', problem);
  }
  if (db.dialect === 'postgres' && mapping.published === 'none') {
    // A cursor over ids is only sound when ids are handed out in order: a sequence cache > 1 gives
    // each session its own block, so a lower id can commit long after a higher one is settled.
    const seq = await db.query<{ cache: string | null }>(
      `select s.seqcache::text as cache from pg_sequence s where s.seqrelid = pg_get_serial_sequence($1, $2)::regclass`,
      [mapping.table, mapping.idColumn],
    );
    const cache = Number(seq.rows[0]?.cache ?? 1);
    if (cache > 1)
      fail('idColumn', `the sequence of "${mapping.idColumn}" has CACHE ${cache}; published=none needs CACHE 1 (ids handed out in order)`);
  }
  const columns = rows.map((r) => ({ name: r.name, binary: (r.as ?? r.type) === 'bytea' }));
  return { mapping, name: mapping.name ?? mapping.table, flagKind, integerId, dialect: db.dialect, columns };
}

interface Column {
  name: string;
  type: string;
  /** The Postgres type it is checked as, when not `type`. */
  as?: string;
}

async function postgresColumns(db: OutboxDb, table: string): Promise<Column[]> {
  const found = await db.query<{ oid: number | null }>('select to_regclass($1)::oid as oid', [table]);
  const oid = found.rows[0]?.oid;
  if (!oid) return [];
  const { rows } = await db.query<Column>(
    `select attname as name, format_type(atttypid, atttypmod) as type from pg_attribute
     where attrelid = $1 and attnum > 0 and not attisdropped order by attnum`,
    [oid],
  );
  return rows;
}

const mysqlAs: Record<string, string> = {
  tinyint: 'smallint',
  smallint: 'smallint',
  mediumint: 'integer',
  int: 'integer',
  bigint: 'bigint',
  char: 'text',
  varchar: 'text',
  tinytext: 'text',
  text: 'text',
  mediumtext: 'text',
  longtext: 'text',
  json: 'json',
  binary: 'bytea',
  varbinary: 'bytea',
  tinyblob: 'bytea',
  blob: 'bytea',
  mediumblob: 'bytea',
  longblob: 'bytea',
  datetime: 'timestamp',
  timestamp: 'timestamp',
};

async function mysqlColumns(db: OutboxDb, table: string): Promise<Column[]> {
  const [schema, name] = table.includes('.') ? table.split('.') : [null, table];
  const { rows } = await db.query<{ name: string; type: string; data_type: string }>(
    `select column_name as name, column_type as type, data_type as data_type from information_schema.columns
     where table_schema = coalesce($1, database()) and table_name = $2 order by ordinal_position`,
    [schema, name],
  );
  return rows.map((r) => ({ name: r.name, type: r.type, as: mysqlAs[r.data_type.toLowerCase()] ?? r.data_type }));
}
