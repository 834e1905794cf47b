/**
 * What `concord outbox cutover` reports, so a team knows when the old poller can go: what Concord
 * published, how many of those rows the old poller had published too (duplicates, which the
 * consumers' inbox drops by message id), what is parked, what is still pending and how old it is.
 */
import type pg from 'pg';
import { barrierTable } from '../../schemas/db/barrier.js';
import type { CheckedMapping } from './mapping-check.js';
import { inspectOutbox } from './inspect.js';
import { outboxDb, type OutboxPool } from './outbox-db.js';
import { outboxSql } from './outbox-sql.js';

export interface CutoverReport {
  drain: string;
  /** Rows Concord delivered (first or second), since firstAt. */
  published: number;
  /** Of those, rows the old poller had marked or deleted first: delivered twice, applied once by an inbox. flag/delete only. */
  duplicates: number | null;
  firstAt: Date | null;
  lastAt: Date | null;
  /** Rows parked now, waiting for a redrive. */
  parked: number;
  pending: number;
  /** Seconds since the oldest pending row was written: the lag (needs createdAtColumn). */
  oldestPendingSeconds: number | null;
  /** With an inbox database: message ids of this outbox that the consumer applied. */
  inbox?: { consumer: string; applied: number };
  ready: boolean;
  /** Why (not) ready, in one sentence. */
  verdict: string;
}

export interface CutoverOptions {
  /** The consumer's database (the SDK's inbox) and consumer name, to count what it applied. */
  inbox?: { db: pg.Pool | pg.ClientBase; consumer: string };
  /** Ready only while the oldest pending row is younger than this (seconds, default 5). */
  maxLagSeconds?: number;
}

export async function cutoverReport(pool: OutboxPool, checked: CheckedMapping, options: CutoverOptions = {}): Promise<CutoverReport> {
  const db = outboxDb(pool);
  await db.ensureState();
  const { rows } = await db.query<{
    published: string | null;
    duplicates: string | null;
    first_at: Date | null;
    last_at: Date | null;
    parked_now: string;
  }>(outboxSql(checked).stats, [checked.name]);
  const stats = rows[0]!;
  const { pending, oldestAgeSeconds, slot } = await inspectOutbox(pool, checked, { problem: () => undefined }, 0);
  const report: CutoverReport = {
    drain: checked.name,
    published: Number(stats.published ?? 0),
    duplicates: checked.mapping.published === 'none' ? null : Number(stats.duplicates ?? 0),
    firstAt: stats.first_at,
    lastAt: stats.last_at,
    parked: Number(stats.parked_now),
    pending,
    oldestPendingSeconds: oldestAgeSeconds,
    ready: false,
    verdict: '',
  };
  if (options.inbox) {
    // The inbox is the barrier table: one row per message id applied (gid), per consumer (branch_id).
    const pattern = checked.mapping.messageId
      .replaceAll('{table}', checked.mapping.table)
      .replace(/[\\%_]/g, (c) => `\\${c}`)
      .replaceAll('{id}', '%');
    const applied = await options.inbox.db.query<{ n: string }>(
      `select count(*)::text as n from ${barrierTable} where branch_id = $1 and op = 'consume' and gid like $2`,
      [options.inbox.consumer, pattern],
    );
    report.inbox = { consumer: options.inbox.consumer, applied: Number(applied.rows[0]!.n) };
  }
  const maxLag = options.maxLagSeconds ?? 5;
  const lag = report.oldestPendingSeconds ?? 0;
  if (report.published === 0) report.verdict = 'Concord has not published a row of this outbox yet: run `concord outbox drain` first';
  else if (checked.mapping.read === 'logical' && !slot?.active)
    report.verdict = 'not yet: no drain streams from the replication slot of this outbox (read=logical): is the drain running?';
  else if (report.oldestPendingSeconds === null && report.pending > 0)
    report.verdict = `not yet: ${report.pending} row(s) pending (map createdAtColumn to tell their age)`;
  else if (lag > maxLag)
    report.verdict = `not yet: ${report.pending} row(s) pending, the oldest written ${lag.toFixed(1)} s ago (over ${maxLag} s): is the drain running and keeping up?`;
  else {
    report.ready = true;
    report.verdict = `ready: Concord keeps up (${report.pending} pending${report.oldestPendingSeconds === null ? '' : `, oldest ${lag.toFixed(1)} s`}); the old poller can be switched off`;
  }
  return report;
}
