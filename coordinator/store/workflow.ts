/**
 * Store operations of workflows. A workflow's branches are its progress records: one row per
 * (branch_id, op) the client ran, with the step's status and result, written while the workflow
 * is prepared and read back by prepareWorkflow so a resumed run replays them.
 */
import { sql } from 'drizzle-orm';
import type { TransBranchSqlRow, TransGlobalSqlRow } from '../../schemas/db/tables.js';
import type { BranchStatus } from '../../schemas/dtm.js';
import { storedText } from '../../schemas/text.js';
import type { Database } from './database.js';
import { afterLookup, statusIn } from './status-filter.js';

const p = (value: unknown) => sql.param(value);

export type ProgressRow = Pick<TransBranchSqlRow, 'branch_id' | 'op' | 'data'> & { status: Exclude<BranchStatus, 'prepared'> };

export type WorkflowRow = Pick<TransGlobalSqlRow, 'gid' | 'trans_type' | 'status' | 'rollback_reason' | 'result'>;

/** The workflow's global row and its progress records in order, or undefined. */
export async function findWorkflow(
  database: Database,
  gid: string,
): Promise<{ trans: WorkflowRow; progresses: ProgressRow[] } | undefined> {
  const [trans] = await database.rows<WorkflowRow>(
    sql`select gid, trans_type, status, rollback_reason, result from trans_global where gid = ${gid}`,
  );
  if (!trans) return undefined;
  const progresses = await database.rows<ProgressRow>(
    sql`select branch_id, op, status, data from trans_branch_op where gid = ${gid} order by id`,
  );
  return { trans, progresses };
}

export type Recorded =
  | { kind: 'recorded' }
  /** This (branch_id, op) is recorded already; `same` says with this status and data (a repeated request). */
  | { kind: 'repeated'; same: boolean }
  /** No workflow with this gid, or it is no longer prepared. */
  | { kind: 'refused'; status: string | null; transType: string | null };

export interface NewProgress extends ProgressRow {
  gid: string;
}

/**
 * Records steps' outcomes of prepared workflows, in one statement for the batch; the global rows
 * are locked (share, in gid order) so a submit cannot pass a record, and rows are inserted in key
 * order, so two batches racing on the same steps cannot deadlock. The batch must not hold
 * one (gid, branch_id, op) twice: both would read as recorded.
 */
export async function recordProgress(database: Database, items: NewProgress[]): Promise<Recorded[]> {
  if (items.length === 0) return [];
  const rows = await database.rows<{ n: number; status: string | null; trans_type: string | null; inserted: boolean; same: boolean }>(
    sql`with u as (
          select * from unnest(${p(items.map((i) => i.gid))}::text[], ${p(items.map((i) => i.branch_id))}::text[],
            ${p(items.map((i) => i.op))}::text[], ${p(items.map((i) => i.status))}::text[], ${p(items.map((i) => i.data))}::text[])
            with ordinality as u(gid, branch_id, op, status, data, n)
        ), g as (
          select gid, status, trans_type from trans_global where gid in (select gid from u) order by gid for share
        ), ins as (
          insert into trans_branch_op (gid, url, data, meta, order_key, branch_id, op, status, attempts, finish_time)
          select u.gid, '', u.data, '{}'::jsonb, null, u.branch_id, u.op, u.status, 1, now()
          from u join g on g.gid = u.gid where g.status = 'prepared' and g.trans_type = 'workflow'
          order by u.gid, u.branch_id, u.op
          on conflict (gid, branch_id, op) do nothing
          returning gid, branch_id, op
        )
        select u.n::int as n, g.status, g.trans_type,
          exists (select 1 from ins where ins.gid = u.gid and ins.branch_id = u.branch_id and ins.op = u.op) as inserted,
          exists (select 1 from trans_branch_op b where b.gid = u.gid and b.branch_id = u.branch_id and b.op = u.op
                    and b.status = u.status and b.data = u.data) as same
        from u left join g on g.gid = u.gid order by u.n`,
  );
  return rows.map((row): Recorded => {
    if (row.status !== 'prepared' || row.trans_type !== 'workflow') {
      return { kind: 'refused', status: row.status, transType: row.trans_type };
    }
    return row.inserted ? { kind: 'recorded' } : { kind: 'repeated', same: row.same };
  });
}

/**
 * Ends a prepared workflow as its client submitted it, whoever holds its lease (the client ran
 * it, possibly inside the coordinator's resume call); false when it was not prepared.
 */
export async function finishWorkflow(
  database: Database,
  gid: string,
  outcome: { status: 'succeed' | 'failed'; reason: string; result: string },
): Promise<boolean> {
  const rows = await database.rows<{ gid: string }>(
    sql`update trans_global set status = ${outcome.status}, owner = '', next_cron_time = null,
          rollback_reason = ${storedText(outcome.reason)}, result = ${storedText(outcome.result)},
          finish_time = now(), rollback_time = case when ${outcome.status} = 'failed' then now() end, update_time = now()
        where gid = ${gid} and ${afterLookup(sql`trans_type = 'workflow'`)} and ${statusIn('status', ['prepared'])}
        returning gid`,
  );
  return rows.length > 0;
}
