/** The admin UI's operator actions on one transaction (docs/admin-ui.md). */
import { sql } from 'drizzle-orm';
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
