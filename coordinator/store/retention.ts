/** Deletes finished transactions past the retention age, with their branches, one batch per statement. */
import { sql } from 'drizzle-orm';
import type { Database } from './database.js';

/** Held for one batch: a second coordinator finding it taken skips its turn instead of competing. */
const retentionLockKey = 0x636f6e72; // "conr"

export interface Deleted {
  /** False when another coordinator was deleting: nothing was looked at. */
  locked: boolean;
  transactions: number;
  branches: number;
}

/**
 * Up to `batch` transactions that finished (succeed or failed; never needs_attention or unfinished)
 * more than `retention` seconds ago by the store's clock, and all their branches. The age is
 * finish_time, or update_time for a row that has none; trans_global_finished_idx is on the same
 * expression. Rows another statement has locked are skipped, so the hot path never waits here.
 */
export async function deleteExpired(database: Database, retention: number, batch: number): Promise<Deleted> {
  const [row] = await database.rows<Deleted>(sql`
    with lock as (select pg_try_advisory_xact_lock(${retentionLockKey}) as ok),
    doomed as (
      select g.id, g.gid from trans_global g, lock
      where lock.ok and g.status in ('succeed', 'failed')
        and coalesce(g.finish_time, g.update_time) < now() - make_interval(secs => ${retention})
      limit ${batch}
      for update of g skip locked
    ),
    gone_branches as (delete from trans_branch_op b using doomed d where b.gid = d.gid returning 1),
    gone as (delete from trans_global g using doomed d where g.id = d.id returning 1)
    select (select ok from lock) as locked,
      (select count(*) from gone)::int as transactions,
      (select count(*) from gone_branches)::int as branches`);
  return row ?? { locked: false, transactions: 0, branches: 0 };
}
