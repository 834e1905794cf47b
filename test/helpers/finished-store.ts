/**
 * Fills a migrated store with finished transactions straight through SQL (generate_series: about
 * a minute for 1,000,000 on a 2-core machine), for the tests and benches of a big store:
 * bench/retention.ts, bench/flat-cost.ts and test/flat-cost.test.ts.
 *
 * The shape of a store after a chaos run, with the columns the coordinator writes when it finishes
 * a transaction: msg is most of the traffic, and the newest 30% of the rows hold no saga (so
 * `transType=saga` must walk far back); 1% failed, 50 needs_attention; finish times spread evenly
 * over the last `spanDays` days (older ids finished earlier). A message has two succeeded action
 * branches; a saga two steps, each an action and its compensation (left prepared when the saga
 * succeeded, as the engine leaves them).
 */
import type pg from 'pg';

export interface FinishedStoreShape {
  /** Finished transactions to insert. */
  rows: number;
  /** Finish times spread over this many days back from now (14: half of them past the default retention of 7 days). */
  spanDays: number;
  /** Prefix of the gids ('seed-'): gid = prefix || i. */
  gidPrefix?: string;
}

/** The statements that insert the rows and analyze both tables, in order. */
export function finishedStoreStatements({ rows: n, spanDays, gidPrefix = 'seed-' }: FinishedStoreShape): string[] {
  const attention = Math.max(1, Math.floor(n / 50));
  const time = `lateral (select now() - interval '${spanDays} days' * (1 - i::float8 / ${n}) as t) x`;
  const gid = `'${gidPrefix}' || i`;
  return [
    `insert into trans_global (gid, trans_type, status, query_prepared, content_hash, next_cron_interval, submit_seq, rollback_reason,
  attention_reason, create_time, update_time, finish_time, rollback_time)
select ${gid}, k.trans_type, s.status,
  case when k.trans_type = 'msg' then 'http://service.internal/QueryPrepared' else '' end,
  md5(i::text), 10, case when k.trans_type = 'msg' then i end,
  case when s.status = 'failed' then 'http://service.internal/TransOut: FAILURE' else '' end,
  case when s.status = 'needs_attention' then 'compensation 02 keeps failing' else '' end,
  t - interval '50 milliseconds', t, case when s.status = 'needs_attention' then null else t end,
  case when s.status = 'failed' then t end
from generate_series(1, ${n}) i, ${time},
  lateral (select case when i % 10 = 0 and i <= ${n} * 0.7 then 'saga' else 'msg' end as trans_type) k,
  lateral (select case when i % ${attention} = 7 then 'needs_attention' when i % 100 = 1 then 'failed' else 'succeed' end as status) s`,
    `insert into trans_branch_op (gid, url, data, branch_id, op, status, attempts, create_time, update_time, finish_time)
select ${gid}, 'http://service.internal/TransIn', repeat('x', 120), b, 'action', 'succeed', 1, t, t, t
from generate_series(1, ${n}) i, unnest(array['01', '02']) b, ${time}`,
    `insert into trans_branch_op (gid, url, data, branch_id, op, status, attempts, create_time, update_time, finish_time)
select g.gid, 'http://service.internal/TransInCompensate', repeat('x', 120), b,  'compensate',
  case when g.status = 'succeed' then 'prepared' else 'succeed' end, case when g.status = 'succeed' then 0 else 1 end,
  g.create_time, g.update_time, case when g.status = 'succeed' then null else g.update_time end
from trans_global g, unnest(array['01', '02']) b
where g.trans_type = 'saga' and g.gid like '${gidPrefix}%'`,
    'analyze trans_global',
    'analyze trans_branch_op',
  ];
}

/** Inserts the rows (finishedStoreStatements) through `client`. */
export async function seedFinishedStore(client: pg.ClientBase | pg.Pool, shape: FinishedStoreShape): Promise<void> {
  for (const statement of finishedStoreStatements(shape)) await client.query(statement);
}
