/**
 * Store operations of the saga engine. Every write of a pass is conditioned on the node still
 * holding the saga's lease, so a node that lost it cannot overwrite newer work. Times are kept
 * relative to the store's clock (seconds from now()), so nodes with skewed clocks agree.
 */
import { sql } from 'drizzle-orm';

/** A value of a compiled statement (database.ts), filled in per call. */
const v = (name: string) => sql.placeholder(name);
import type { TransBranchSqlRow } from '../../schemas/db/tables.js';
import type { SagaReply } from '../../schemas/saga.js';
import { storedText } from '../../schemas/text.js';
import { statement, type Database, type Rows } from './database.js';
import { transColumns, type BranchRow, type TransRow } from './transactions.js';
import { statusIn } from './status-filter.js';

export type SagaBranchRow = Pick<TransBranchSqlRow, 'branch_id' | 'url' | 'data' | 'meta' | 'status' | 'attempts' | 'last_error'> & {
  op: 'action' | 'compensate';
  /** Seconds until the awaited reply is overdue (negative: overdue); null when no command is out. */
  reply_due_in: number | null;
  /** Seconds until the next run after a failure; null when none is scheduled. */
  retry_in: number | null;
};

/** The branches of a saga just inserted (insertTransactions' rows), as sagaBranches would read them: never tried, nothing due. */
export function newSagaBranches(rows: BranchRow[]): SagaBranchRow[] {
  return rows.map((b) => ({
    branch_id: b.branch_id,
    op: b.op as SagaBranchRow['op'],
    url: b.url,
    data: b.data,
    meta: b.meta,
    status: b.status,
    attempts: 0,
    last_error: null,
    reply_due_in: null,
    retry_in: null,
  }));
}

export async function sagaBranches(database: Database, gid: string): Promise<SagaBranchRow[]> {
  return database.rows<SagaBranchRow>(
    sql`select branch_id, op, url, data, meta, status, attempts, last_error,
          extract(epoch from reply_due - now())::float8 as reply_due_in,
          extract(epoch from retry_at - now())::float8 as retry_in
        from trans_branch_op where gid = ${gid} order by id`,
  );
}

/** A branch's state after a run (or the publication of its command). */
export interface BranchUpdate {
  status: SagaBranchRow['status'];
  attempts: number;
  lastError: string | null;
  result?: string | undefined;
  replyIn: number | null;
  retryIn: number | null;
}

/** A branch's new state, as a pass decided it. */
export interface BranchChange {
  branch_id: string;
  op: string;
  update: BranchUpdate;
}

/**
 * The branch writes of passes, for a CTE of a compiled statement (values: branchValues, and
 * `owner`): each applied only while `owner` holds its saga.
 */
const branchWrites = sql`update trans_branch_op b set status = u.status, attempts = u.attempts, last_error = u.last_error,
      result = coalesce(u.result, b.result),
      reply_due = now() + u.reply_in * interval '1 second',
      retry_at = now() + u.retry_in * interval '1 second',
      finish_time = case when u.status = 'prepared' then null else now() end, update_time = now()
    from unnest(${v('bGids')}::text[], ${v('bIds')}::text[], ${v('bOps')}::text[], ${v('bStatuses')}::text[],
      ${v('bAttempts')}::int[], ${v('bErrors')}::text[], ${v('bResults')}::text[], ${v('bReplyIn')}::float8[],
      ${v('bRetryIn')}::float8[])
      as u(gid, branch_id, op, status, attempts, last_error, result, reply_in, retry_in)
    where b.gid = u.gid and b.branch_id = u.branch_id and b.op = u.op
      -- A branch a reply finished meanwhile keeps that answer.
      and b.status = 'prepared'
      and exists (select 1 from trans_global g where g.gid = u.gid and g.owner = ${v('owner')}::text)
    returning b.id`;

function branchValues(changes: (BranchChange & { gid: string })[]): Record<string, unknown> {
  const col = <T>(pick: (u: BranchUpdate) => T) => changes.map((c) => pick(c.update));
  return {
    bGids: changes.map((c) => c.gid),
    bIds: changes.map((c) => c.branch_id),
    bOps: changes.map((c) => c.op),
    bStatuses: col((u) => u.status),
    bAttempts: col((u) => u.attempts),
    bErrors: col((u) => storedText(u.lastError)),
    bResults: col((u) => storedText(u.result) ?? null),
    bReplyIn: col((u) => u.replyIn),
    bRetryIn: col((u) => u.retryIn),
  };
}

const ofSaga = (gid: string, changes: BranchChange[]) => changes.map((c) => ({ ...c, gid }));

/** Writes branch states while `owner` holds the saga; false when the lease was lost. */
export async function updateSagaBranches(database: Database, owner: string, gid: string, changes: BranchChange[]): Promise<boolean> {
  const [row] = await database.rows<{ held: boolean }>(updateBranchesStatement, { owner, gid, ...branchValues(ofSaga(gid, changes)) });
  return row?.held === true;
}

const updateBranchesStatement = statement(
  sql`with w as (${branchWrites})
      select exists (select 1 from trans_global where gid = ${v('gid')}::text and owner = ${v('owner')}::text) as held`,
);

/** Moves a saga this node holds to another unfinished status (submitted → aborting), with the branch states so far. */
export async function moveSaga(
  database: Database,
  owner: string,
  gid: string,
  status: string,
  reason: string,
  changes: BranchChange[],
): Promise<boolean> {
  const rows = await database.rows<{ gid: string }>(moveStatement, {
    owner,
    gid,
    status,
    reason: storedText(reason),
    ...branchValues(ofSaga(gid, changes)),
  });
  return rows.length > 0;
}

const moveStatement = statement(
  sql`with w as (${branchWrites})
      update trans_global set status = ${v('status')}::text, rollback_reason = ${v('reason')}::text, update_time = now()
      where gid = ${v('gid')}::text and owner = ${v('owner')}::text and ${statusIn('status', ['submitted', 'aborting'])}
      returning gid`,
);

export interface SagaSettlement {
  status: 'submitted' | 'aborting' | 'succeed' | 'failed' | 'needs_attention';
  /** Seconds until the saga is due again (unfinished statuses). */
  delay: number;
  attention?: string;
}

/** How a pass of saga `gid` ends: its branch states not yet written, and its status and when it is due again. */
export interface SagaSettle {
  gid: string;
  s: SagaSettlement;
  changes: BranchChange[];
}

/**
 * Ends passes, of one saga or of several (their sagas' replies were recorded together): per saga
 * the branch states not yet written, the new status and when the saga is due again, the lease
 * given back, all in one statement. Answers the sagas `owner` still held (the others are left as
 * they are), each with `poked`: a reply arrived during its pass, and the saga is due at once.
 */
export async function settleSagas(database: Rows, owner: string, settles: SagaSettle[]): Promise<Map<string, { poked: boolean }>> {
  if (settles.length === 0) return new Map();
  const rows = await database.rows<{ gid: string; poked: boolean }>(settleStatement, {
    owner,
    gids: settles.map((x) => x.gid),
    statuses: settles.map((x) => x.s.status),
    delays: settles.map((x) => x.s.delay),
    attentions: settles.map((x) => storedText(x.s.attention ?? '')),
    ...branchValues(settles.flatMap((x) => ofSaga(x.gid, x.changes))),
  });
  return new Map(rows.map((r) => [r.gid, { poked: r.poked }]));
}

const settleStatement = statement(
  sql`with w as (${branchWrites}), s as (
        select * from unnest(${v('gids')}::text[], ${v('statuses')}::text[], ${v('delays')}::float8[], ${v('attentions')}::text[])
          as s(gid, status, delay, attention)
      ), old as (
        select gid, poked from trans_global where gid in (select gid from s) for update
      )
      update trans_global g set status = s.status, owner = '', poked = false,
        next_cron_time = case when s.status in ('succeed', 'failed', 'needs_attention') then null
                              when old.poked then now() else now() + s.delay * interval '1 second' end,
        finish_time = case when s.status in ('succeed', 'failed') then now() else g.finish_time end,
        rollback_time = case when s.status = 'failed' then now() else g.rollback_time end,
        attention_reason = s.attention,
        update_time = now()
      from s join old on old.gid = s.gid
      where g.gid = s.gid and g.owner = ${v('owner')}::text and ${statusIn('g.status', ['submitted', 'aborting'])}
      returning g.gid, old.poked`,
);

/** Ends the pass of one saga (settleSagas); `applied` false when `owner` no longer held it. */
export async function settleSaga(
  database: Rows,
  owner: string,
  gid: string,
  s: SagaSettlement,
  changes: BranchChange[],
): Promise<{ applied: boolean; poked: boolean }> {
  const settled = (await settleSagas(database, owner, [{ gid, s, changes }])).get(gid);
  return { applied: settled !== undefined, poked: settled?.poked === true };
}

/** Claims one unfinished saga for `owner` when nobody holds a live lease on it. */
export async function claimSaga(database: Database, owner: string, gid: string, lease: number): Promise<TransRow | undefined> {
  const [row] = await database.rows<TransRow>(
    sql`update trans_global set owner = ${owner}, poked = false, next_cron_time = now() + ${lease} * interval '1 second', update_time = now()
        where gid = ${gid} and ${statusIn('status', ['submitted', 'aborting'])} and (owner = '' or next_cron_time < now())
        returning ${transColumns}`,
  );
  return row;
}

/**
 * Records participants' replies to the commands of their branches' current attempts (a duplicate
 * or a reply to an older attempt changes nothing), all in one statement, then claims each saga a
 * reply was recorded for, for `owner`, so it advances at once, or, when another pass holds it,
 * pokes that pass. Answers in the order of `replies`; a saga claimed goes with its first reply.
 */
export async function recordReplies(
  database: Rows,
  owner: string,
  lease: number,
  replies: SagaReply[],
): Promise<{ recorded: boolean; claimed?: TransRow; branches?: SagaBranchRow[] }[]> {
  if (replies.length === 0) return [];
  const statusOf = (r: SagaReply) =>
    r.outcome === 'SUCCESS' ? 'succeed' : r.outcome === 'FAILURE' && r.op === 'action' ? 'failed' : 'prepared';
  const rows = await database.rows<TransRow & { i: number; claimed: boolean | null; branches: SagaBranchRow[] | null }>(
    recordRepliesStatement,
    {
      owner,
      lease,
      gids: replies.map((r) => r.gid),
      branchIds: replies.map((r) => r.branch_id),
      ops: replies.map((r) => r.op),
      attempts: replies.map((r) => r.attempt),
      statuses: replies.map(statusOf),
      errors: replies.map((r) => (r.outcome === 'SUCCESS' ? null : storedText(`${r.outcome} reply: ${r.error ?? 'no reason given'}`))),
      results: replies.map((r) => storedText(r.result) ?? null),
    },
  );
  const answers = replies.map((): { recorded: boolean; claimed?: TransRow; branches?: SagaBranchRow[] } => ({ recorded: false }));
  const handedOut = new Set<string>();
  for (const { i, claimed, branches, ...trans } of rows.sort((x, y) => x.i - y.i)) {
    const answer = answers[i - 1];
    if (!answer) continue;
    answer.recorded = true;
    if (claimed && branches && !handedOut.has(trans.gid)) {
      handedOut.add(trans.gid);
      answer.claimed = trans;
      answer.branches = branches;
    }
  }
  return answers;
}

const recordRepliesStatement = statement(
  // A reply given twice in one batch is recorded once, as the first of them.
  sql`with u as (
        select distinct on (gid, branch_id, op, attempt) *
        from unnest(${v('gids')}::text[], ${v('branchIds')}::text[], ${v('ops')}::text[], ${v('attempts')}::int[],
          ${v('statuses')}::text[], ${v('errors')}::text[], ${v('results')}::text[])
          with ordinality as u(gid, branch_id, op, attempt, status, error, result, i)
        order by gid, branch_id, op, attempt, i
      ), b as (
        update trans_branch_op t set status = u.status, last_error = u.error, result = u.result,
          reply_due = null, retry_at = null,
          finish_time = case when u.status = 'prepared' then null else now() end, update_time = now()
        from u
        where t.gid = u.gid and t.branch_id = u.branch_id and t.op = u.op and t.status = 'prepared' and t.attempts = u.attempt
        returning u.i, t.gid, t.branch_id, t.op, t.status, t.last_error
      ), g as (
        update trans_global set
          poked = not (owner = '' or next_cron_time < now()),
          owner = case when owner = '' or next_cron_time < now() then ${v('owner')}::text else owner end,
          next_cron_time = case when owner = '' or next_cron_time < now() then now() + ${v('lease')}::float8 * interval '1 second'
                                else next_cron_time end,
          update_time = now()
        where gid in (select gid from b) and ${statusIn('status', ['submitted', 'aborting'])}
        returning ${transColumns}, not poked as claimed
      )
      select b.i::int as i, g.*,
        -- A claimed saga's branches as sagaBranches reads them, so its pass need not read them again. This
        -- statement sees the branches as they were before it, so the replies it recorded are laid over them.
        case when g.claimed then (
          select json_agg(json_build_object('branch_id', t.branch_id, 'op', t.op, 'url', t.url, 'data', t.data, 'meta', t.meta,
              'status', coalesce(r.status, t.status), 'attempts', t.attempts,
              'last_error', case when r.gid is null then t.last_error else r.last_error end,
              'reply_due_in', case when r.gid is null then extract(epoch from t.reply_due - now())::float8 end,
              'retry_in', case when r.gid is null then extract(epoch from t.retry_at - now())::float8 end) order by t.id)
          from trans_branch_op t left join b r on r.gid = t.gid and r.branch_id = t.branch_id and r.op = t.op
          where t.gid = g.gid) end as branches
      from b left join g on g.gid = b.gid`,
);

/**
 * Puts a saga that needs attention back to compensating; each unfinished compensation gets its
 * attempts afresh (counted from `redriveBase`; the attempt numbers go on, so a late reply to an
 * old attempt is still told apart).
 */
export async function redriveSaga(database: Database, gid: string): Promise<boolean> {
  const rows = await database.rows<{ gid: string }>(
    sql`with g as (
          update trans_global set status = 'aborting', attention_reason = '', owner = '', poked = false,
            next_cron_time = now(), update_time = now()
          where gid = ${gid} and status = 'needs_attention' returning gid
        ), b as (
          update trans_branch_op set meta = meta || jsonb_build_object('redriveBase', attempts), retry_at = null,
            reply_due = null, update_time = now()
          where gid in (select gid from g) and op = 'compensate' and status = 'prepared' returning 1
        )
        select gid from g`,
  );
  return rows.length > 0;
}

/** Broker destinations of unfinished sagas: their replies may be waiting in the brokers. */
export async function pendingSagaBrokerUrls(database: Database): Promise<string[]> {
  const rows = await database.rows<{ url: string }>(
    sql`select distinct b.url from trans_branch_op b join trans_global g on g.gid = b.gid
        where g.trans_type = 'saga' and g.status in ('submitted', 'aborting')
          and (b.url like 'kafka:%' or b.url like 'rabbitmq:%')`,
  );
  return rows.map((r) => r.url);
}
