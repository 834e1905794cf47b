/** The admin UI's operator actions on one transaction, and the record of who did each (docs/admin-ui.md). */
import { sql } from 'drizzle-orm';
import type { OperatorSubject } from '../../schemas/db/tables.js';
import { storedText } from '../../schemas/text.js';
import type { Database } from './database.js';

/** Unfinished statuses: the scheduler picks these up when next_cron_time is due. */
const unfinished = sql`('prepared', 'submitted', 'aborting')`;

/**
 * Makes an unfinished transaction due now, and its branches' backoffs end now (not null: a saga
 * reads a failed branch without retry_at as a call that died with its coordinator), unless a pass
 * holds its lease (it then runs anyway). Returns the row's status and lease holder when nothing was changed.
 */
export async function retryNow(
  database: Database,
  gid: string,
): Promise<{ done: boolean; status?: string; owner?: string; transType?: string }> {
  const [row] = await database.rows<{ done: boolean; status: string; owner: string; transType: string }>(
    sql`with g as (
          update trans_global set next_cron_time = now(), update_time = now()
          where gid = ${gid} and status in ${unfinished} and (owner = '' or next_cron_time < now())
          returning gid
        ), b as (
          update trans_branch_op set retry_at = now(), update_time = now()
          where gid in (select gid from g) and status = 'prepared' and retry_at > now() returning 1
        )
        select exists (select 1 from g) as done, status, owner, trans_type as "transType" from trans_global where gid = ${gid}`,
  );
  return row ?? { done: false };
}

/**
 * Ends an unfinished or needs_attention transaction as failed, with `reason` as its rollback_reason,
 * and takes its lease away: a pass still running then finds its settlement refused (every settle
 * checks owner and status). Nothing more is called: no compensation, no check-back.
 */
export async function forceStop(
  database: Database,
  gid: string,
  reason: string,
): Promise<{ done: boolean; status?: string; transType?: string }> {
  const [row] = await database.rows<{ done: boolean; status: string; transType: string }>(
    sql`with g as (
          update trans_global set status = 'failed', owner = '', poked = false, next_cron_time = null,
            finish_time = now(), rollback_time = now(), rollback_reason = ${storedText(reason)}, update_time = now()
          where gid = ${gid} and (status in ${unfinished} or status = 'needs_attention')
          returning gid
        )
        select exists (select 1 from g) as done, status, trans_type as "transType" from trans_global where gid = ${gid}`,
  );
  return row ?? { done: false };
}

/** One operator action as recorded: who did what to which subject, when, and the reason or outcome. */
export interface RecordedAction {
  subjectKind: OperatorSubject;
  subject: string;
  action: string;
  operator: string;
  detail: string;
  at: Date;
}

/** Records an operator action (written once the action succeeded; its log line says the same). */
export async function recordAction(database: Database, action: Omit<RecordedAction, 'at'>): Promise<void> {
  await database.rows(
    sql`insert into operator_actions (subject_kind, subject, action, operator, detail)
        values (${action.subjectKind}, ${action.subject}, ${action.action}, ${action.operator}, ${storedText(action.detail)})`,
  );
}

/** The actions on one subject, newest first, at most `limit`. */
export async function listActions(
  database: Database,
  subjectKind: OperatorSubject,
  subject: string,
  limit: number,
): Promise<RecordedAction[]> {
  const rows = await database.rows<{
    subject_kind: OperatorSubject;
    subject: string;
    action: string;
    operator: string;
    detail: string;
    at: Date | string;
  }>(
    sql`select subject_kind, subject, action, operator, detail, at from operator_actions
        where subject_kind = ${subjectKind} and subject = ${subject} order by id desc limit ${limit}`,
  );
  return rows.map((r) => ({
    subjectKind: r.subject_kind,
    subject: r.subject,
    action: r.action,
    operator: r.operator,
    detail: r.detail,
    at: new Date(r.at),
  }));
}
