/**
 * Consumers' parked messages as they report them (docs/consumers.md#parked-messages-in-the-admin-ui).
 * A report is a consumer's whole parked store as of `listedAt` (its database's clock): each message
 * in it is upserted, each one missing from a complete report is resolved. Reports may arrive out
 * of order (two instances of one consumer, a retried call): `listedAt` orders them, so an older
 * report never brings back a message a newer one saw resolved, and a message parked after a
 * report's listing is not taken as resolved by it.
 */
import { sql } from 'drizzle-orm';
import type { ParkedMessageState, ParkedReport } from '../../schemas/consumer-parked.js';
import { storedText } from '../../schemas/text.js';
import type { Database } from './database.js';

export interface ParkedMessageRow {
  consumer: string;
  message_id: string;
  source: string;
  error: string;
  attempts: number;
  first_failure: Date | string;
  last_failure: Date | string;
  state: ParkedMessageState;
  redrive_by: string | null;
  redrive_at: Date | string | null;
  resolved_at: Date | string | null;
  reported_at: Date | string;
}

/**
 * Applies a report. A message reported again after a redrive was asked, with a later failure than
 * known, failed its redrive: it is parked again, with the new error. Messages of this consumer
 * resolved more than `retention` seconds ago are deleted (0 keeps them). Returns the ids an
 * operator asked to redrive, and those reported for the first time.
 */
export async function applyParkedReport(
  database: Database,
  report: ParkedReport,
  retention: number,
): Promise<{ redrive: string[]; fresh: string[] }> {
  const parked = JSON.stringify(report.parked.map((p) => ({ ...p, source: storedText(p.source), error: storedText(p.error) })));
  const rows = await database.rows<{ message_id: string; kind: 'redrive' | 'fresh' }>(
    sql`with r as (
          select * from jsonb_to_recordset(${parked}::jsonb)
            as x("messageId" text, source text, error text, attempts int, "firstFailure" timestamptz, "lastFailure" timestamptz)
        ), up as (
          insert into parked_messages as p (consumer, message_id, source, error, attempts, first_failure, last_failure, listed_at)
          select ${report.consumer}, "messageId", source, error, attempts, "firstFailure", "lastFailure", ${report.listedAt}::timestamptz from r
          on conflict (consumer, message_id) do update set
            source = excluded.source, error = excluded.error, attempts = excluded.attempts, first_failure = excluded.first_failure,
            last_failure = excluded.last_failure, listed_at = excluded.listed_at, reported_at = now(), resolved_at = null,
            state = case when p.state = 'redrive' and excluded.last_failure <= p.last_failure then 'redrive' else 'parked' end
          where p.state in ('parked', 'redrive') or excluded.listed_at > p.listed_at
          returning message_id, state, (xmax = 0) as inserted
        ), gone as (
          update parked_messages set state = case when state = 'redrive' then 'redriven' else 'cleared' end,
            resolved_at = now(), listed_at = ${report.listedAt}::timestamptz
          where ${report.complete}::boolean and consumer = ${report.consumer} and state in ('parked', 'redrive')
            and last_failure < ${report.listedAt}::timestamptz and message_id not in (select "messageId" from r)
          returning message_id
        ), expired as (
          delete from parked_messages
          where ${retention}::float8 > 0 and consumer = ${report.consumer} and state in ('redriven', 'cleared')
            and resolved_at < now() - make_interval(secs => ${retention}::float8) and message_id not in (select "messageId" from r)
          returning 1
        )
        select message_id, 'fresh' as kind from up where inserted
        union all
        select message_id, 'redrive' from up where state = 'redrive'
        union all
        select message_id, 'redrive' from parked_messages
          where consumer = ${report.consumer} and state = 'redrive'
            and message_id not in (select "messageId" from r) and message_id not in (select message_id from gone)`,
  );
  return {
    redrive: rows.filter((r) => r.kind === 'redrive').map((r) => r.message_id),
    fresh: rows.filter((r) => r.kind === 'fresh').map((r) => r.message_id),
  };
}

/** Parked messages, newest report first; of one consumer and in one state when given. */
export async function listParkedMessages(
  database: Database,
  filter: { consumer?: string | undefined; state?: ParkedMessageState | undefined; limit: number },
): Promise<ParkedMessageRow[]> {
  return database.rows<ParkedMessageRow>(
    sql`select consumer, message_id, source, error, attempts, first_failure, last_failure, state, redrive_by, redrive_at,
          resolved_at, reported_at
        from parked_messages
        where (${filter.consumer ?? null}::text is null or consumer = ${filter.consumer ?? null})
          and (${filter.state ?? null}::text is null or state = ${filter.state ?? null})
        order by id desc limit ${filter.limit}`,
  );
}

/** Asks for a redrive of a parked message; the current state when it is not parked (undefined: unknown). */
export async function requestParkedRedrive(
  database: Database,
  consumer: string,
  messageId: string,
  by: string,
): Promise<{ done: boolean; state?: ParkedMessageState }> {
  const [row] = await database.rows<{ done: boolean; state: ParkedMessageState }>(
    sql`with u as (
          update parked_messages set state = 'redrive', redrive_by = ${by}, redrive_at = now()
          where consumer = ${consumer} and message_id = ${messageId} and state = 'parked' returning 1
        )
        select exists (select 1 from u) as done, state from parked_messages where consumer = ${consumer} and message_id = ${messageId}`,
  );
  return row ?? { done: false };
}
