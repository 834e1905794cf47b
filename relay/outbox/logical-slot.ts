/**
 * What read=logical needs of Postgres: wal_level=logical, a role with REPLICATION, a publication of
 * the outbox table's inserts and a pgoutput replication slot. The drain creates the last two when
 * missing; `concord outbox sql --logical` prints them for a DBA, `concord outbox drop-slot` removes
 * them. A slot nobody reads keeps every WAL segment from its position on, so inspect and the
 * coordinator's metrics show how much it holds.
 */
import { createHash } from 'node:crypto';
import { outboxCursorTable } from '../../schemas/db/outbox.js';
import type { Queryable } from './outbox-db.js';
import { quoteIdent } from './outbox-sql.js';

export interface LogicalNames {
  slot: string;
  publication: string;
}

/**
 * Slots are cluster-wide and publications per database: both are named for the drain and carry a
 * hash of database and drain, so two databases with an `outbox` table do not share a slot.
 */
export function logicalNames(database: string, drain: string): LogicalNames {
  const readable = drain
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_')
    .slice(0, 40);
  const hash = createHash('sha1').update(`${database}\0${drain}`).digest('hex').slice(0, 8);
  const name = `concord_${readable}_${hash}`;
  return { slot: name, publication: name };
}

export async function logicalNamesIn(db: Queryable, drain: string): Promise<LogicalNames> {
  const { rows } = await db.query<{ db: string }>('select current_database() as db');
  return logicalNames(rows[0]!.db, drain);
}

/** What the server and the role allow, as read by `logicalFacts`. */
export interface LogicalFacts {
  walLevel: string;
  /** The role has REPLICATION (or is a superuser). */
  canReplicate: boolean;
  publicationExists: boolean;
  /** The role owns the table (CREATE PUBLICATION … FOR TABLE needs it), or is a superuser. */
  ownsTable: boolean;
}

/** Why read=logical cannot run here, or undefined. */
export function logicalSetupProblem(f: LogicalFacts, names: LogicalNames, table: string): string | undefined {
  if (f.walLevel !== 'logical')
    return `read=logical needs wal_level=logical, and this server has wal_level=${f.walLevel}: set wal_level = logical in postgresql.conf and restart Postgres, or use read=table`;
  if (!f.canReplicate)
    return `read=logical streams from a replication slot, which needs a role with REPLICATION: ALTER ROLE <drain's role> REPLICATION, or use read=table`;
  if (!f.publicationExists && !f.ownsTable)
    return `read=logical needs the publication ${names.publication} of ${table}; only the table's owner can create it: have the owner run the SQL of \`concord outbox sql --logical --table ${table}\``;
  return undefined;
}

export async function logicalFacts(db: Queryable, names: LogicalNames, table: string): Promise<LogicalFacts> {
  const { rows } = await db.query<{ wal_level: string; can_replicate: boolean; publication: boolean; owns: boolean }>(
    `select current_setting('wal_level') as wal_level,
       (select rolreplication or rolsuper from pg_roles where rolname = current_user) as can_replicate,
       exists (select 1 from pg_publication where pubname = $1) as publication,
       (select rolsuper from pg_roles where rolname = current_user)
         or pg_has_role(current_user, (select relowner from pg_class where oid = to_regclass($2)), 'USAGE') as owns`,
    [names.publication, table],
  );
  const r = rows[0]!;
  return { walLevel: r.wal_level, canReplicate: r.can_replicate, publicationExists: r.publication, ownsTable: r.owns };
}

/** The DDL read=logical runs when its publication and slot are missing. */
export function logicalDdl(names: LogicalNames, table: string): string {
  return `-- read=logical: the outbox table's inserts, streamed from a pgoutput slot (wal_level=logical; the drain's role needs REPLICATION)
CREATE PUBLICATION ${quoteIdent(names.publication)} FOR TABLE ${quoteIdent(table)} WITH (publish = 'insert');
SELECT pg_create_logical_replication_slot('${names.slot}', 'pgoutput');
-- Leaving read=logical: a slot nobody reads holds WAL for ever. Drop both (or run concord outbox drop-slot):
-- SELECT pg_drop_replication_slot('${names.slot}'); DROP PUBLICATION ${quoteIdent(names.publication)};
`;
}

/**
 * Creates the publication, then the slot (decoding looks the publication up as of each change, so it
 * must be older than the slot). Returns true when the slot was created now.
 */
export async function ensureLogical(db: Queryable, names: LogicalNames, table: string): Promise<boolean> {
  const pub = await db.query<{ tables: string[] | null }>(
    `select array(select format('%I.%I', schemaname, tablename) from pg_publication_tables where pubname = $1) as tables
     from pg_publication where pubname = $1`,
    [names.publication],
  );
  const qualified = await db.query<{ name: string }>(
    `select format('%I.%I', n.nspname, c.relname) as name from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = to_regclass($1)`,
    [table],
  );
  if (pub.rows.length === 0) {
    await db.query(`create publication ${quoteIdent(names.publication)} for table ${quoteIdent(table)} with (publish = 'insert')`);
  } else if (!pub.rows[0]!.tables?.includes(qualified.rows[0]!.name)) {
    throw new Error(`the publication ${names.publication} exists but does not publish ${table}; drop it (concord outbox drop-slot)`);
  }
  const slot = await db.query<{ plugin: string; db: string; current: string }>(
    `select plugin, database as db, current_database() as current from pg_replication_slots where slot_name = $1`,
    [names.slot],
  );
  if (slot.rows.length === 0) {
    await db.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [names.slot]);
    // The catch-up (rows written before the slot) starts over: see catchUpDone.
    await db.query(`delete from ${outboxCursorTable} where drain = $1`, [catchUpKey(names)]);
    return true;
  }
  const found = slot.rows[0]!;
  if (found.plugin !== 'pgoutput' || found.db !== found.current)
    throw new Error(
      `a replication slot ${names.slot} exists for ${found.plugin} in database ${found.db}; drop it (concord outbox drop-slot)`,
    );
  return false;
}

/**
 * published=none: rows written before the slot existed are drained from the table first (the
 * cursor), once; a row in concord_outbox_cursor records that this was done for the current slot.
 */
function catchUpKey(names: LogicalNames): string {
  return `logical:${names.slot}`;
}

export async function catchUpDone(db: Queryable, names: LogicalNames): Promise<boolean> {
  const { rows } = await db.query(`select 1 from ${outboxCursorTable} where drain = $1`, [catchUpKey(names)]);
  return rows.length > 0;
}

export async function recordCatchUp(db: Queryable, names: LogicalNames): Promise<void> {
  await db.query(`insert into ${outboxCursorTable} (drain, last_id) values ($1, 0) on conflict (drain) do nothing`, [catchUpKey(names)]);
}

export interface SlotStatus {
  slot: string;
  active: boolean;
  /** Bytes of WAL written since the position the drain confirmed (what it has yet to publish, and other tables' writes). */
  lagBytes: number;
  /** Bytes of WAL the slot keeps on disk. */
  retainedBytes: number;
  confirmedLsn: string | null;
}

/** The drain's slot, if it exists (whatever read says: a slot left behind holds WAL). */
export async function slotStatus(db: Queryable, names: LogicalNames): Promise<SlotStatus | undefined> {
  const { rows } = await db.query<{
    active: boolean;
    lag: number | null;
    retained: number | null;
    confirmed: string | null;
  }>(
    `select active, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 as lag,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 as retained, confirmed_flush_lsn::text as confirmed
     from pg_replication_slots where slot_name = $1`,
    [names.slot],
  );
  const r = rows[0];
  if (!r) return undefined;
  return { slot: names.slot, active: r.active, lagBytes: r.lag ?? 0, retainedBytes: r.retained ?? 0, confirmedLsn: r.confirmed };
}

/** Drops the slot (refused while a drain streams from it) and the publication. */
export async function dropLogical(db: Queryable, names: LogicalNames): Promise<{ slot: boolean; publication: boolean }> {
  const slot = await db.query<{ active: boolean; pid: number | null }>(
    'select active, active_pid as pid from pg_replication_slots where slot_name = $1',
    [names.slot],
  );
  if (slot.rows[0]?.active)
    throw new Error(`the slot ${names.slot} is in use by a drain (backend pid ${slot.rows[0].pid}); stop that drain first`);
  if (slot.rows.length > 0) await db.query('select pg_drop_replication_slot($1)', [names.slot]);
  const pub = await db.query(`select 1 from pg_publication where pubname = $1`, [names.publication]);
  if (pub.rows.length > 0) await db.query(`drop publication ${quoteIdent(names.publication)}`);
  const cursor = await db.query<{ t: string | null }>('select to_regclass($1)::text as t', [outboxCursorTable]);
  if (cursor.rows[0]?.t) await db.query(`delete from ${outboxCursorTable} where drain = $1`, [catchUpKey(names)]);
  return { slot: slot.rows.length > 0, publication: pub.rows.length > 0 };
}
