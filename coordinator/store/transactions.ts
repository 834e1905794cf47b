/**
 * Store operations on transactions and their branches. Hot paths take whole batches (see
 * group-commit.ts) and use unnest() so that one statement serves any batch size.
 */
import { sql, type SQL } from 'drizzle-orm';
import { unfinishedStatuses, type GlobalStatus } from '../../schemas/dtm.js';
import type { BranchMeta, StoredOptions, TransBranchSqlRow, TransGlobalSqlRow } from '../../schemas/db/tables.js';
import { storedText } from '../../schemas/text.js';
import { statement, type Database } from './database.js';
import { afterLookup, statusIn } from './status-filter.js';

const p = (value: unknown) => sql.param(value);
/** A value of a compiled statement (database.ts), filled in per call. */
const v = (name: string) => sql.placeholder(name);
/** The statuses with work left, as an SQL list (a literal, so the partial due index applies). */
const unfinished = sql.raw(unfinishedStatuses.map((s) => `'${s}'`).join(', '));

export interface NewBranch {
  branchId: string;
  op: string;
  url: string;
  data: string;
  meta: BranchMeta;
  /** Destination and key of a keyed broker branch (delivered in submit order), else null. */
  orderKey: string | null;
}

export interface NewTransaction {
  gid: string;
  transType: string;
  status: Extract<GlobalStatus, 'prepared' | 'submitted'>;
  queryPrepared: string;
  /** 'grpc' for a transaction made through the gRPC API: its branches' data is the base64 of their bytes. */
  protocol: string;
  options: StoredOptions;
  customData: string;
  contentHash: string;
  /** Retry delay in seconds to start with. */
  interval: number;
  /** Seconds from now until the row is due (or, when owner is set, until its lease ends). */
  dueIn: number;
  owner: string;
  branches: NewBranch[];
}

/** What the engine needs of a stored transaction (selected with `transColumns`). */
export type TransRow = Pick<
  TransGlobalSqlRow,
  | 'id'
  | 'gid'
  | 'trans_type'
  | 'status'
  | 'query_prepared'
  | 'protocol'
  | 'options'
  | 'custom_data'
  | 'content_hash'
  | 'next_cron_interval'
  | 'retry_count'
  | 'owner'
  | 'submit_seq'
> & {
  /** Milliseconds since create_time, by the store's clock when the row was read. */
  age_ms: number;
};

/** What the engine needs of a stored branch (selected with `branchColumns`). */
export type BranchRow = Pick<TransBranchSqlRow, 'id' | 'gid' | 'url' | 'data' | 'meta' | 'order_key' | 'branch_id' | 'op' | 'status'>;

/** A transaction with its branches still to be called, in creation order, as the store holds them. */
export interface StoredTransaction {
  trans: TransRow;
  branches: BranchRow[];
}

/** The columns of a TransRow, read from `table` (a name or alias). Times are the store's: age_ms is now() - create_time. */
export function transColumnsOf(t: string): SQL {
  return sql.raw(`${t}.id::int as id, ${t}.gid, ${t}.trans_type, ${t}.status, ${t}.query_prepared, ${t}.protocol, ${t}.options, ${t}.custom_data,
    ${t}.content_hash, ${t}.next_cron_interval, ${t}.retry_count, ${t}.owner,
    (extract(epoch from now() - ${t}.create_time) * 1000)::float8 as age_ms, ${t}.submit_seq::float8 as submit_seq`);
}

export const transColumns = transColumnsOf('trans_global');

/** The columns of a BranchRow (of trans_branch_op, unqualified). */
export const branchColumns = sql.raw('id::int as id, gid, url, data, meta, order_key, branch_id, op, status');

/** The pending branches of `g.gid` as a JSON array of BranchRows, in creation order (one subquery per row). */
export const pendingBranchesOf = (g: string) =>
  sql`(select coalesce(json_agg(b order by b.id), '[]') from (select ${branchColumns} from trans_branch_op
    where gid = ${sql.raw(g)}.gid and status = 'prepared') b) as branches`;

/** Splits a row selected with transColumns and pendingBranchesOf. */
export function stored({ branches, ...trans }: TransRow & { branches: BranchRow[] }): StoredTransaction {
  return { trans, branches };
}

/**
 * Inserts the transactions whose gid is new, with their branches, in one statement (so one
 * commit, and nothing half-written); returns the rows it created, by gid.
 */
export async function insertTransactions(database: Database, items: NewTransaction[]): Promise<Map<string, StoredTransaction>> {
  const unique = firstPerGid(items);
  if (unique.length === 0) return new Map();
  const created = await database.rows<TransRow & { branches: BranchRow[] }>(insertStatement, insertValues(unique));
  return new Map(created.map((r) => [r.gid, stored(r)]));
}

/**
 * insertTransactions for callers that only need to know which gids were new (a message's
 * prepare): the same writes, but Postgres returns one text column per row instead of the row and
 * its branches as JSON, which the coordinator would parse and drop.
 */
export async function insertNewGids(database: Database, items: NewTransaction[]): Promise<Set<string>> {
  const unique = firstPerGid(items);
  if (unique.length === 0) return new Set();
  const created = await database.rows<{ gid: string }>(insertGidsStatement, insertValues(unique));
  return new Set(created.map((r) => r.gid));
}

function insertValues(unique: NewTransaction[]): Record<string, unknown> {
  const branches = unique.flatMap((t) => t.branches.map((b) => ({ gid: t.gid, ...b })));
  return {
    gids: unique.map((t) => t.gid),
    types: unique.map((t) => t.transType),
    statuses: unique.map((t) => t.status),
    queryPrepared: unique.map((t) => t.queryPrepared),
    protocols: unique.map((t) => t.protocol),
    options: unique.map((t) => JSON.stringify(t.options)),
    customData: unique.map((t) => t.customData),
    hashes: unique.map((t) => t.contentHash),
    intervals: unique.map((t) => t.interval),
    dues: unique.map((t) => t.dueIn),
    owners: unique.map((t) => t.owner),
    branchGids: branches.map((b) => b.gid),
    urls: branches.map((b) => b.url),
    data: branches.map((b) => b.data),
    metas: branches.map((b) => JSON.stringify(b.meta)),
    orderKeys: branches.map((b) => b.orderKey),
    branchIds: branches.map((b) => b.branchId),
    ops: branches.map((b) => b.op),
  };
}

/** The inserts of insertTransactions, then `select` over `created` (the new trans_global rows) and `branches` (theirs). */
const insertSql = (select: SQL) =>
  sql`with created as (
        insert into trans_global (gid, trans_type, status, query_prepared, protocol, options, custom_data, content_hash,
          next_cron_interval, next_cron_time, owner, submit_seq)
        select u.gid, u.trans_type, u.status, u.query_prepared, u.protocol, u.options::jsonb, u.custom_data, u.content_hash,
          u.interval, now() + u.due * interval '1 second', u.owner,
          case when u.status = 'submitted' then nextval('trans_submit_seq') end
        from unnest(${v('gids')}::text[], ${v('types')}::text[], ${v('statuses')}::text[], ${v('queryPrepared')}::text[],
          ${v('protocols')}::text[], ${v('options')}::text[], ${v('customData')}::text[], ${v('hashes')}::text[],
          ${v('intervals')}::float8[], ${v('dues')}::float8[], ${v('owners')}::text[])
          as u(gid, trans_type, status, query_prepared, protocol, options, custom_data, content_hash, interval, due, owner)
        on conflict (gid) do nothing
        returning *
      ), branches as (
        insert into trans_branch_op (gid, url, data, meta, order_key, branch_id, op, status)
        select u.gid, u.url, u.data, u.meta::jsonb, u.order_key, u.branch_id, u.op, 'prepared'
        from unnest(${v('branchGids')}::text[], ${v('urls')}::text[], ${v('data')}::text[], ${v('metas')}::text[],
          ${v('orderKeys')}::text[], ${v('branchIds')}::text[], ${v('ops')}::text[])
          as u(gid, url, data, meta, order_key, branch_id, op)
        where u.gid in (select gid from created)
        returning ${branchColumns}
      )
      ${select}`;

const insertStatement = statement(
  insertSql(sql`select ${transColumnsOf('c')},
        (select coalesce(json_agg(b order by b.id), '[]') from branches b where b.gid = c.gid) as branches
      from created c`),
);

// A data-modifying CTE runs to completion even when the outer select does not read it.
const insertGidsStatement = statement(insertSql(sql`select gid from created`));

/** The stored rows of these gids. */
export async function findTransactions(database: Database, gids: string[]): Promise<Map<string, TransRow>> {
  if (gids.length === 0) return new Map();
  const rows = await database.rows<TransRow>(findStatement, { gids });
  return new Map(rows.map((r) => [r.gid, r]));
}

const findStatement = statement(sql`select ${transColumns} from trans_global where gid = any(${v('gids')}::text[])`);

/**
 * Moves prepared transactions to submitted, leased to `owner` for `lease` seconds, when their type
 * and content hash match (an empty hash matches any); returns them with their pending branches. A
 * row another node holds a live lease on (a check-back in flight) is left to that node.
 */
export async function promoteToSubmitted(
  database: Database,
  items: { gid: string; transType: string; contentHash: string }[],
  owner: string,
  lease: number,
): Promise<StoredTransaction[]> {
  if (items.length === 0) return [];
  const rows = await database.rows<TransRow & { branches: BranchRow[] }>(promoteStatement, {
    owner,
    lease,
    gids: items.map((i) => i.gid),
    types: items.map((i) => i.transType),
    hashes: items.map((i) => i.contentHash),
  });
  return rows.map(stored);
}

const promoteStatement = statement(
  sql`update trans_global g set status = 'submitted', owner = ${v('owner')}::text, submit_seq = nextval('trans_submit_seq'),
        next_cron_time = now() + ${v('lease')}::float8 * interval '1 second', update_time = now()
      from unnest(${v('gids')}::text[], ${v('types')}::text[], ${v('hashes')}::text[]) as u(gid, trans_type, content_hash)
      where g.gid = u.gid and ${statusIn('g.status', ['prepared'])} and ${afterLookup(sql`g.trans_type = u.trans_type`)}
        and (u.content_hash = '' or g.content_hash = u.content_hash)
        and (g.owner = '' or g.owner = ${v('owner')}::text or g.next_cron_time < now())
      returning ${transColumnsOf('g')}, ${pendingBranchesOf('g')}`,
);

/** The first item of each gid, in order: a batch may carry the same gid twice. */
export function firstPerGid<T extends { gid: string }>(items: T[]): T[] {
  const seen = new Map<string, T>();
  for (const item of items) if (!seen.has(item.gid)) seen.set(item.gid, item);
  return [...seen.values()];
}

/** Branches of these transactions still to be called, in creation order. */
export async function pendingBranches(database: Database, gids: string[]): Promise<Map<string, BranchRow[]>> {
  const byGid = new Map<string, BranchRow[]>(gids.map((g) => [g, []]));
  if (gids.length === 0) return byGid;
  const rows = await database.rows<BranchRow>(
    sql`select ${branchColumns} from trans_branch_op
        where gid = any(${p(gids)}::text[]) and status = 'prepared' order by id`,
  );
  for (const row of rows) byGid.get(row.gid)?.push(row);
  return byGid;
}

/**
 * Claims up to `limit` due, unfinished transactions for `owner` with a lease of `lease` seconds.
 * SKIP LOCKED lets several coordinators scan at once without waiting on or sharing a row.
 */
export async function claimDue(database: Database, owner: string, limit: number, lease: number): Promise<TransRow[]> {
  return database.rows<TransRow>(
    sql`update trans_global g set owner = ${owner}, next_cron_time = now() + ${lease} * interval '1 second', update_time = now()
        from (select id from trans_global
              where status in (${unfinished}) and next_cron_time <= now()
              order by next_cron_time limit ${limit} for update skip locked) d
        where g.id = d.id
        returning ${transColumnsOf('g')}`,
  );
}

/** The end of one pass over a transaction: branch results and what becomes of the transaction. */
export interface Settlement {
  gid: string;
  /** (branch_id, op) pairs delivered in this pass. */
  succeeded: { branchId: string; op: string }[];
  /** The branch call that did not succeed, and why. */
  failed?: { branchId: string; op: string; error: string };
  /** New status; unfinished statuses keep the row due after `delay` seconds. */
  status: Exclude<GlobalStatus, 'needs_attention'>;
  interval: number;
  delay: number;
  retried: boolean;
  reason?: string;
}

/**
 * Writes many settlements in one statement. The transaction row changes only while `owner` still
 * holds it and it is unfinished, so a node that lost its lease cannot overwrite newer work.
 */
export async function settle(database: Database, owner: string, items: Settlement[]): Promise<Set<string>> {
  if (items.length === 0) return new Set();
  const ok = items.flatMap((s) => s.succeeded.map((b) => ({ gid: s.gid, ...b })));
  const bad = items.flatMap((s) => (s.failed ? [{ gid: s.gid, ...s.failed }] : []));
  const rows = await database.rows<{ gid: string }>(settleStatement, {
    owner,
    okGids: ok.map((b) => b.gid),
    okBranches: ok.map((b) => b.branchId),
    okOps: ok.map((b) => b.op),
    badGids: bad.map((b) => b.gid),
    badBranches: bad.map((b) => b.branchId),
    badOps: bad.map((b) => b.op),
    badErrors: bad.map((b) => storedText(b.error)),
    gids: items.map((s) => s.gid),
    statuses: items.map((s) => s.status),
    intervals: items.map((s) => s.interval),
    delays: items.map((s) => s.delay),
    retried: items.map((s) => s.retried),
    reasons: items.map((s) => storedText(s.reason ?? '')),
  });
  return new Set(rows.map((r) => r.gid));
}

const settleStatement = statement(
  sql`with ok as (
        update trans_branch_op b set status = 'succeed', attempts = b.attempts + 1, last_error = null,
          finish_time = now(), update_time = now()
        from unnest(${v('okGids')}::text[], ${v('okBranches')}::text[], ${v('okOps')}::text[]) as u(gid, branch_id, op)
        where b.gid = u.gid and b.branch_id = u.branch_id and b.op = u.op and b.status = 'prepared'
        returning 1
      ), bad as (
        update trans_branch_op b set attempts = b.attempts + 1, last_error = u.error, update_time = now()
        from unnest(${v('badGids')}::text[], ${v('badBranches')}::text[], ${v('badOps')}::text[], ${v('badErrors')}::text[])
          as u(gid, branch_id, op, error)
        where b.gid = u.gid and b.branch_id = u.branch_id and b.op = u.op
        returning 1
      )
      update trans_global g set
        status = u.status,
        owner = '',
        next_cron_interval = u.interval,
        next_cron_time = case when u.status in ('succeed', 'failed') then null else now() + u.delay * interval '1 second' end,
        retry_count = g.retry_count + u.retried::int,
        finish_time = case when u.status in ('succeed', 'failed') then now() else g.finish_time end,
        rollback_time = case when u.status = 'failed' then now() else g.rollback_time end,
        rollback_reason = case when u.reason <> '' then u.reason else g.rollback_reason end,
        update_time = now()
      from unnest(${v('gids')}::text[], ${v('statuses')}::text[], ${v('intervals')}::float8[], ${v('delays')}::float8[],
        ${v('retried')}::bool[], ${v('reasons')}::text[]) as u(gid, status, interval, delay, retried, reason)
      where g.gid = u.gid and g.owner = ${v('owner')}::text and ${statusIn('g.status', unfinishedStatuses)}
      returning g.gid`,
);

/** Fails a prepared transaction (abort); returns false when it was not prepared. */
export async function failPrepared(database: Database, gid: string, reason: string): Promise<boolean> {
  const rows = await database.rows<{ gid: string }>(
    sql`update trans_global set status = 'failed', owner = '', next_cron_time = null, rollback_reason = ${storedText(reason)},
          finish_time = now(), rollback_time = now(), update_time = now()
        where gid = ${gid} and ${statusIn('status', ['prepared'])}
        returning gid`,
  );
  return rows.length > 0;
}

/** Gives back the leases of a stopping node, due at once, so other nodes take the work. */
export async function releaseLeases(database: Database, owner: string): Promise<number> {
  const rows = await database.rows<{ gid: string }>(
    sql`update trans_global set owner = '', next_cron_time = now(), update_time = now()
        where owner = ${owner} and status in (${unfinished})
        returning gid`,
  );
  return rows.length;
}

/** Lengthens `owner`'s lease on one transaction; false when the node no longer holds it. */
export async function extendLease(database: Database, gid: string, owner: string, lease: number): Promise<boolean> {
  const rows = await database.rows<{ gid: string }>(
    sql`update trans_global set next_cron_time = now() + ${lease} * interval '1 second'
        where gid = ${gid} and owner = ${owner} returning gid`,
  );
  return rows.length > 0;
}

/**
 * For each delivery (its submit_seq and the order keys of the branches it is about to send), the
 * keys that must wait: a transaction submitted earlier still has a pending branch with the same
 * key. Keyed broker messages thus leave in submit order. One statement answers a whole batch.
 */
export async function waitingOrderKeys(database: Database, items: { seq: number; orderKeys: string[] }[]): Promise<Set<string>[]> {
  const waiting = items.map(() => new Set<string>());
  const asked = items.flatMap((item, i) => item.orderKeys.map((key) => ({ i, seq: item.seq, key })));
  if (asked.length === 0) return waiting;
  const rows = await database.rows<{ i: number; order_key: string }>(waitingStatement, {
    items: asked.map((a) => a.i),
    seqs: asked.map((a) => a.seq),
    keys: asked.map((a) => a.key),
  });
  for (const row of rows) waiting[row.i]?.add(row.order_key);
  return waiting;
}

const waitingStatement = statement(
  sql`select u.i, u.key as order_key
      from unnest(${v('items')}::int[], ${v('seqs')}::float8[], ${v('keys')}::text[]) as u(i, seq, key)
      where exists (select 1 from trans_branch_op b join trans_global g on g.gid = b.gid
        where b.order_key = u.key and b.status = 'prepared' and ${statusIn('g.status', ['submitted'])} and g.submit_seq < u.seq)`,
);
