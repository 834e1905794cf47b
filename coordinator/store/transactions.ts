/**
 * Store operations on transactions and their branches. Hot paths take whole batches (see
 * group-commit.ts) and use unnest() so that one statement serves any batch size.
 */
import { sql, type SQL } from 'drizzle-orm';
import { unfinishedStatuses, type GlobalStatus } from '../../schemas/dtm.js';
import type { BranchMeta, StoredOptions, TransBranchSqlRow, TransGlobalSqlRow } from '../../schemas/db/tables.js';
import { storedText } from '../../schemas/text.js';
import type { Database } from './database.js';

const p = (value: unknown) => sql.param(value);
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
  const branches = unique.flatMap((t) => t.branches.map((b) => ({ gid: t.gid, ...b })));
  const created = await database.rows<TransRow & { branches: BranchRow[] }>(
    sql`with created as (
          insert into trans_global (gid, trans_type, status, query_prepared, protocol, options, custom_data, content_hash,
            next_cron_interval, next_cron_time, owner, submit_seq)
          select u.gid, u.trans_type, u.status, u.query_prepared, u.protocol, u.options::jsonb, u.custom_data, u.content_hash,
            u.interval, now() + u.due * interval '1 second', u.owner,
            case when u.status = 'submitted' then nextval('trans_submit_seq') end
          from unnest(${p(unique.map((t) => t.gid))}::text[], ${p(unique.map((t) => t.transType))}::text[],
            ${p(unique.map((t) => t.status))}::text[], ${p(unique.map((t) => t.queryPrepared))}::text[],
            ${p(unique.map((t) => t.protocol))}::text[],
            ${p(unique.map((t) => JSON.stringify(t.options)))}::text[], ${p(unique.map((t) => t.customData))}::text[],
            ${p(unique.map((t) => t.contentHash))}::text[], ${p(unique.map((t) => t.interval))}::float8[],
            ${p(unique.map((t) => t.dueIn))}::float8[], ${p(unique.map((t) => t.owner))}::text[])
            as u(gid, trans_type, status, query_prepared, protocol, options, custom_data, content_hash, interval, due, owner)
          on conflict (gid) do nothing
          returning *
        ), branches as (
          insert into trans_branch_op (gid, url, data, meta, order_key, branch_id, op, status)
          select u.gid, u.url, u.data, u.meta::jsonb, u.order_key, u.branch_id, u.op, 'prepared'
          from unnest(${p(branches.map((b) => b.gid))}::text[], ${p(branches.map((b) => b.url))}::text[],
            ${p(branches.map((b) => b.data))}::text[], ${p(branches.map((b) => JSON.stringify(b.meta)))}::text[],
            ${p(branches.map((b) => b.orderKey))}::text[], ${p(branches.map((b) => b.branchId))}::text[],
            ${p(branches.map((b) => b.op))}::text[])
            as u(gid, url, data, meta, order_key, branch_id, op)
          where u.gid in (select gid from created)
          returning ${branchColumns}
        )
        select ${transColumnsOf('c')},
          (select coalesce(json_agg(b order by b.id), '[]') from branches b where b.gid = c.gid) as branches
        from created c`,
  );
  return new Map(created.map((r) => [r.gid, stored(r)]));
}

/** The stored rows of these gids. */
export async function findTransactions(database: Database, gids: string[]): Promise<Map<string, TransRow>> {
  if (gids.length === 0) return new Map();
  const rows = await database.rows<TransRow>(sql`select ${transColumns} from trans_global where gid = any(${p(gids)}::text[])`);
  return new Map(rows.map((r) => [r.gid, r]));
}

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
  const rows = await database.rows<TransRow & { branches: BranchRow[] }>(
    sql`update trans_global g set status = 'submitted', owner = ${owner}, submit_seq = nextval('trans_submit_seq'),
          next_cron_time = now() + ${lease} * interval '1 second', update_time = now()
        from unnest(${p(items.map((i) => i.gid))}::text[], ${p(items.map((i) => i.transType))}::text[],
          ${p(items.map((i) => i.contentHash))}::text[]) as u(gid, trans_type, content_hash)
        where g.gid = u.gid and g.status = 'prepared' and g.trans_type = u.trans_type
          and (u.content_hash = '' or g.content_hash = u.content_hash)
          and (g.owner = '' or g.owner = ${owner} or g.next_cron_time < now())
        returning ${transColumnsOf('g')}, ${pendingBranchesOf('g')}`,
  );
  return rows.map(stored);
}

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
  const rows = await database.rows<{ gid: string }>(
    sql`with ok as (
          update trans_branch_op b set status = 'succeed', attempts = b.attempts + 1, last_error = null,
            finish_time = now(), update_time = now()
          from unnest(${p(ok.map((b) => b.gid))}::text[], ${p(ok.map((b) => b.branchId))}::text[], ${p(ok.map((b) => b.op))}::text[])
            as u(gid, branch_id, op)
          where b.gid = u.gid and b.branch_id = u.branch_id and b.op = u.op and b.status = 'prepared'
          returning 1
        ), bad as (
          update trans_branch_op b set attempts = b.attempts + 1, last_error = u.error, update_time = now()
          from unnest(${p(bad.map((b) => b.gid))}::text[], ${p(bad.map((b) => b.branchId))}::text[], ${p(bad.map((b) => b.op))}::text[],
            ${p(bad.map((b) => storedText(b.error)))}::text[]) as u(gid, branch_id, op, error)
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
        from unnest(${p(items.map((s) => s.gid))}::text[], ${p(items.map((s) => s.status))}::text[],
          ${p(items.map((s) => s.interval))}::float8[], ${p(items.map((s) => s.delay))}::float8[],
          ${p(items.map((s) => s.retried))}::bool[], ${p(items.map((s) => storedText(s.reason ?? '')))}::text[])
          as u(gid, status, interval, delay, retried, reason)
        where g.gid = u.gid and g.owner = ${owner} and g.status in (${unfinished})
        returning g.gid`,
  );
  return new Set(rows.map((r) => r.gid));
}

/** Fails a prepared transaction (abort); returns false when it was not prepared. */
export async function failPrepared(database: Database, gid: string, reason: string): Promise<boolean> {
  const rows = await database.rows<{ gid: string }>(
    sql`update trans_global set status = 'failed', owner = '', next_cron_time = null, rollback_reason = ${storedText(reason)},
          finish_time = now(), rollback_time = now(), update_time = now()
        where gid = ${gid} and status = 'prepared'
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
 * Order keys (destination and key) among these that must wait: a transaction submitted earlier
 * still has a pending branch with the same key. Keyed broker messages thus leave in submit order.
 */
export async function waitingOrderKeys(database: Database, seq: number, orderKeys: string[]): Promise<Set<string>> {
  if (orderKeys.length === 0) return new Set();
  const rows = await database.rows<{ order_key: string }>(
    sql`select distinct b.order_key from trans_branch_op b join trans_global g on g.gid = b.gid
        where b.order_key = any(${p(orderKeys)}::text[]) and b.status = 'prepared'
          and g.status = 'submitted' and g.submit_seq < ${seq}`,
  );
  return new Set(rows.map((r) => r.order_key));
}
