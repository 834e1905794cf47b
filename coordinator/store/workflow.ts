/**
 * Store operations of workflows. A workflow's branches are its progress records: one row per
 * (branch_id, op) the client ran, with the step's status and result, written while the workflow
 * is prepared and read back by prepareWorkflow so a resumed run replays them.
 */
import { sql } from 'drizzle-orm';
import { storedText } from '../../schemas/text.js';
import type { Database } from './database.js';

export interface ProgressRow {
  branch_id: string;
  op: string;
  status: 'succeed' | 'failed';
  data: string;
}

export interface WorkflowRow {
  gid: string;
  trans_type: string;
  status: string;
  rollback_reason: string;
  result: string;
}

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

/** Records one step's outcome while the workflow is prepared; the global row is locked so submit cannot pass it. */
export async function recordProgress(database: Database, gid: string, p: ProgressRow): Promise<Recorded> {
  const [row] = await database.rows<{ status: string | null; trans_type: string | null; inserted: number; same: number }>(
    sql`with g as (select status, trans_type from trans_global where gid = ${gid} for share),
        ins as (
          insert into trans_branch_op (gid, url, data, meta, order_key, branch_id, op, status, attempts, finish_time)
          select ${gid}, '', ${p.data}, '{}'::jsonb, null, ${p.branch_id}, ${p.op}, ${p.status}, 1, now()
          where exists (select 1 from g where g.status = 'prepared' and g.trans_type = 'workflow')
          on conflict (gid, branch_id, op) do nothing
          returning 1
        )
        select (select status from g) as status, (select trans_type from g) as trans_type,
          (select count(*) from ins)::int as inserted,
          (select count(*) from trans_branch_op where gid = ${gid} and branch_id = ${p.branch_id} and op = ${p.op}
             and status = ${p.status} and data = ${p.data})::int as same`,
  );
  if (!row || row.status !== 'prepared' || row.trans_type !== 'workflow') {
    return { kind: 'refused', status: row?.status ?? null, transType: row?.trans_type ?? null };
  }
  if (row.inserted === 1) return { kind: 'recorded' };
  return { kind: 'repeated', same: row.same === 1 };
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
        where gid = ${gid} and trans_type = 'workflow' and status = 'prepared'
        returning gid`,
  );
  return rows.length > 0;
}
