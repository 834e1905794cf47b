/**
 * Topic subscriptions, kept as DTM keeps them: kv rows of category "topics" whose value lists the
 * subscribers. A message step `topic://<name>` becomes one branch per subscriber.
 */
import { sql } from 'drizzle-orm';
import type { Subscriber } from '../../schemas/db/tables.js';
import type { Database } from './database.js';

/** Subscribers of each of these topics (absent topics are missing from the map). */
export async function subscribersOf(database: Database, topics: string[]): Promise<Map<string, Subscriber[]>> {
  if (topics.length === 0) return new Map();
  const rows = await database.rows<{ k: string; v: Subscriber[] }>(
    sql`select k, v from kv where cat = 'topics' and k = any(${sql.param(topics)}::text[])`,
  );
  return new Map(rows.map((r) => [r.k, r.v]));
}

/** Adds a subscriber; false when this URL already subscribes the topic. */
export async function subscribe(database: Database, topic: string, subscriber: Subscriber): Promise<boolean> {
  const entry = JSON.stringify([subscriber]);
  const rows = await database.rows<{ k: string }>(
    sql`insert into kv (cat, k, v) values ('topics', ${topic}, ${entry}::jsonb)
        on conflict (cat, k) do update set v = kv.v || excluded.v, version = kv.version + 1, update_time = now()
        where not kv.v @> jsonb_build_array(jsonb_build_object('url', ${subscriber.url}::text))
        returning k`,
  );
  return rows.length > 0;
}

/** Removes a subscriber; false when the topic or the URL is unknown. */
export async function unsubscribe(database: Database, topic: string, url: string): Promise<boolean> {
  const rows = await database.rows<{ k: string }>(
    sql`update kv set v = (select coalesce(jsonb_agg(e), '[]'::jsonb) from jsonb_array_elements(kv.v) e where e->>'url' <> ${url}),
          version = version + 1, update_time = now()
        where cat = 'topics' and k = ${topic} and v @> jsonb_build_array(jsonb_build_object('url', ${url}::text))
        returning k`,
  );
  return rows.length > 0;
}

/** Deletes a topic with all its subscribers; false when it does not exist. */
export async function deleteTopic(database: Database, topic: string): Promise<boolean> {
  const rows = await database.rows<{ k: string }>(sql`delete from kv where cat = 'topics' and k = ${topic} returning k`);
  return rows.length > 0;
}

/** The topics and their subscribers, by name (at most `limit`: a list for people to read). */
export async function listTopics(database: Database, limit: number): Promise<{ name: string; subscribers: Subscriber[] }[]> {
  const rows = await database.rows<{ k: string; v: Subscriber[] }>(
    sql`select k, v from kv where cat = 'topics' and jsonb_array_length(v) > 0 order by k limit ${limit}`,
  );
  return rows.map((r) => ({ name: r.k, subscribers: r.v }));
}
