/**
 * Store operations of TCC and XA (the types whose branches the client registers while the
 * transaction is prepared). The global row is locked for the registration, so a branch is either
 * registered before submit or abort changes the status, or refused.
 */
import { sql } from 'drizzle-orm';
import { storedText } from '../../schemas/text.js';
import type { Database } from './database.js';
import { afterLookup, statusIn } from './status-filter.js';
import {
  pendingBranchesOf,
  stored,
  transColumns,
  type BranchRow,
  type NewBranch,
  type StoredTransaction,
  type TransRow,
} from './transactions.js';

const p = (value: unknown) => sql.param(value);

export type Registration =
  | { kind: 'registered' }
  /** The (branch_id, op) rows exist already; `same` says they hold these URLs and data. */
  | { kind: 'repeated'; same: boolean }
  /** No transaction of this type with this gid, or it is no longer prepared. */
  | { kind: 'refused'; status: string | null; transType: string | null };

/** Registers the branches of a prepared transaction of `transType`, in one statement. */
export async function registerBranches(database: Database, gid: string, transType: string, branches: NewBranch[]): Promise<Registration> {
  const [row] = await database.rows<{ status: string | null; trans_type: string | null; inserted: number; same: number }>(
    sql`with g as (select status, trans_type from trans_global where gid = ${gid} for share),
        u as (
          select * from unnest(${p(branches.map((b) => b.branchId))}::text[], ${p(branches.map((b) => b.op))}::text[],
            ${p(branches.map((b) => b.url))}::text[], ${p(branches.map((b) => b.data))}::text[])
            as u(branch_id, op, url, data)
        ), ins as (
          insert into trans_branch_op (gid, url, data, meta, order_key, branch_id, op, status)
          select ${gid}, u.url, u.data, '{}'::jsonb, null, u.branch_id, u.op, 'prepared' from u
          where exists (select 1 from g where g.status = 'prepared' and g.trans_type = ${transType})
          on conflict (gid, branch_id, op) do nothing
          returning 1
        )
        select (select status from g) as status, (select trans_type from g) as trans_type,
          (select count(*) from ins)::int as inserted,
          (select count(*) from trans_branch_op b join u on b.branch_id = u.branch_id and b.op = u.op
             and b.url = u.url and b.data = u.data where b.gid = ${gid})::int as same`,
  );
  if (!row || row.status !== 'prepared' || row.trans_type !== transType) {
    return { kind: 'refused', status: row?.status ?? null, transType: row?.trans_type ?? null };
  }
  if (row.inserted === branches.length) return { kind: 'registered' };
  return { kind: 'repeated', same: row.same === branches.length };
}

/**
 * Turns a prepared transaction of `transType` to aborting, leased to `owner` for `lease` seconds,
 * unless another node holds a live lease on it; the row as it is now with its pending branches, or
 * undefined.
 */
export async function abortPrepared(
  database: Database,
  gid: string,
  transType: string,
  owner: string,
  lease: number,
  reason: string,
): Promise<StoredTransaction | undefined> {
  const [row] = await database.rows<TransRow & { branches: BranchRow[] }>(
    sql`update trans_global set status = 'aborting', rollback_reason = ${storedText(reason)}, owner = ${owner},
          next_cron_time = now() + ${lease} * interval '1 second', update_time = now()
        where gid = ${gid} and ${afterLookup(sql`trans_type = ${transType}`)} and ${statusIn('status', ['prepared'])} and (owner = '' or owner = ${owner} or next_cron_time < now())
        returning ${transColumns}, ${pendingBranchesOf('trans_global')}`,
  );
  return row && stored(row);
}

/** Moves a transaction `owner` holds from prepared or submitted to aborting (its time ran out). */
export async function moveToAborting(database: Database, gid: string, owner: string, reason: string): Promise<boolean> {
  const rows = await database.rows<{ gid: string }>(
    sql`update trans_global set status = 'aborting', rollback_reason = ${storedText(reason)}, update_time = now()
        where gid = ${gid} and owner = ${owner} and ${statusIn('status', ['prepared', 'submitted'])} returning gid`,
  );
  return rows.length > 0;
}
