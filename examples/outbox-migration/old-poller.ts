/**
 * The team's hand-rolled poller, as it was before Concord: lock a batch of unpublished rows, send
 * them, flag them, commit. Step 1 of the migration added one thing: the `message-id` header
 * Concord also sets (`outbox:<table>:<id>`), so that a row both publish is applied once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Producer } from 'kafkajs';
import type pg from 'pg';

export async function runOldPoller(pool: pg.Pool, producer: Producer, signal: AbortSignal): Promise<number> {
  let published = 0;
  while (!signal.aborted) {
    const sent = await pollOnce(pool, producer);
    published += sent;
    if (sent === 0) await sleep(1_000, undefined, { signal }).catch(() => undefined); // a typical poller: once a second when idle
  }
  return published;
}

/** One batch in one transaction; the number of rows sent. */
async function pollOnce(pool: pg.Pool, producer: Producer): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    const { rows } = await client.query<{ id: string; topic: string; aggregate_id: string; payload: unknown }>(
      'select id, topic, aggregate_id, payload from outbox where not published order by id limit 100 for update skip locked',
    );
    for (const row of rows)
      await producer.send({
        topic: row.topic,
        acks: -1,
        messages: [{ key: row.aggregate_id, value: JSON.stringify(row.payload), headers: { 'message-id': `outbox:outbox:${row.id}` } }],
      });
    await client.query('update outbox set published = true where id = any($1::bigint[])', [rows.map((r) => r.id)]);
    await client.query('commit');
    return rows.length;
  } catch (err) {
    await client.query('rollback').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}
