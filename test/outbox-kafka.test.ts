/**
 * The outbox drain to Kafka under concurrent writers whose commits interleave out of id order:
 * every row reaches the consumer exactly once in effect, in order per key, while a naive id poller
 * watching the same table loses rows.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { consume } from '../sdk/index.js';
import { freshDatabase } from './helpers/db.js';
import { startDrain, testRelay } from './helpers/outbox.js';

const brokers = inject('kafkaBrokers');
let pool: pg.Pool;
let consumerDb: pg.Pool;
const relay = testRelay(brokers);

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase(), max: 24 });
  consumerDb = new pg.Pool({ connectionString: await freshDatabase(), max: 8 });
  await consumerDb.query('create table effects (seq bigserial primary key, message_id text unique, k text, n int)');
});
afterAll(async () => {
  await relay.close();
  await pool?.end();
  await consumerDb?.end();
});

async function freshTopic(): Promise<string> {
  const topic = `outbox-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });
  await admin.disconnect();
  return topic;
}

it('publishes 20,000 rows from 16 writers committing out of id order: all of them, once in effect, per-key order kept', async () => {
  const rowsTotal = 20_000;
  const writers = 16;
  const topic = await freshTopic();
  await pool.query('create table orders_outbox (id bigserial primary key, topic text not null, k text not null, body jsonb not null)');
  const consumer = await consume<pg.PoolClient>(
    { kafka: { brokers: brokers.split(','), topic, groupId: `g-${randomUUID()}`, partitionsConsumedConcurrently: 6 } },
    async ({ id, key, value, tx }) => {
      await tx.query('insert into effects (message_id, k, n) values ($1, $2, $3)', [id, key, (JSON.parse(value) as { n: number }).n]);
    },
    { db: consumerDb, consumerName: 'outbox-test' },
  );
  const drain = await startDrain(
    pool,
    {
      table: 'orders_outbox',
      destinationColumn: 'topic',
      destinationTemplate: 'kafka://default/{destination}',
      keyColumn: 'k',
      payloadColumn: 'body',
      payloadEncoding: 'json',
      published: 'none',
    },
    relay,
    { settleMs: 50 },
  );
  // A naive poller beside it: "id > last seen", the classic hand-rolled reader.
  let naiveSeen = 0;
  let writing = true;
  const naive = (async () => {
    let last = 0n;
    for (let idle = 0; writing || idle < 5;) {
      const { rows } = await pool.query<{ id: string }>('select id from orders_outbox where id > $1 order by id limit 5000', [
        last.toString(),
      ]);
      naiveSeen += rows.length;
      if (rows.length > 0) last = BigInt(rows.at(-1)!.id);
      idle = rows.length === 0 ? idle + 1 : 0;
      await sleep(2);
    }
  })();
  try {
    // Each writer owns its keys and commits its transactions one after another, so per key id
    // order is commit order; across writers, commits interleave and some wait before committing.
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        const client = await pool.connect();
        try {
          for (let n = 0; n < rowsTotal / writers;) {
            await client.query('begin');
            const count = Math.min(1 + (n % 4), rowsTotal / writers - n);
            for (let i = 0; i < count; i++, n++)
              await client.query('insert into orders_outbox (topic, k, body) values ($1, $2, $3)', [
                topic,
                `w${w}-${n % 3}`,
                JSON.stringify({ n }),
              ]);
            if (Math.random() < 0.2) await sleep(Math.random() * 4);
            await client.query('commit');
          }
        } finally {
          client.release();
        }
      }),
    );
    writing = false;
    await naive;
    await expect
      .poll(async () => (await consumerDb.query('select count(*)::int as n from effects')).rows[0].n, { timeout: 120_000, interval: 500 })
      .toBe(rowsTotal);
    const { rows } = await consumerDb.query<{ message_id: string; k: string; n: number }>(
      'select message_id, k, n from effects order by seq',
    );
    expect(new Set(rows.map((r) => r.message_id)).size).toBe(rowsTotal);
    const lastByKey = new Map<string, number>();
    for (const r of rows) {
      expect(r.n, `key ${r.k}`).toBeGreaterThan(lastByKey.get(r.k) ?? -1);
      lastByKey.set(r.k, r.n);
    }
    expect(drain.drain.stats.parked).toBe(0);
    console.log(`naive poller saw ${naiveSeen} of ${rowsTotal} rows; the drain published ${drain.drain.stats.published}`);
    expect(naiveSeen).toBeLessThan(rowsTotal);
  } finally {
    writing = false;
    await drain.stop();
    await consumer.close();
  }
}, 180_000);

it('runs beside the old poller on the same table: each row applied once by the consumer, whoever published it', async () => {
  const rowsTotal = 6_000;
  const topic = await freshTopic();
  await pool.query(
    'create table legacy_outbox (id bigserial primary key, k text not null, body text not null, published boolean not null default false)',
  );
  const consumer = await consume<pg.PoolClient>(
    { kafka: { brokers: brokers.split(','), topic, groupId: `g-${randomUUID()}`, partitionsConsumedConcurrently: 6 } },
    async ({ id, key, value, tx }) => {
      await tx.query('insert into effects (message_id, k, n) values ($1, $2, $3)', [id, key, Number(value)]);
    },
    { db: consumerDb, consumerName: 'legacy-overlap' },
  );
  // The team's poller, told to set the same message-id header as Concord.
  const producer = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).producer({
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  let oldPublished = 0;
  let stop = false;
  const oldPoller = (async () => {
    const client = await pool.connect();
    try {
      while (!stop) {
        await client.query('begin');
        const { rows } = await client.query<{ id: string; k: string; body: string }>(
          'select id, k, body from legacy_outbox where not published order by id limit 200 for update skip locked',
        );
        if (rows.length > 0) {
          await producer.send({
            topic,
            acks: -1,
            messages: rows.map((r) => ({ key: r.k, value: r.body, headers: { 'message-id': `outbox:legacy_outbox:${r.id}` } })),
          });
          await client.query('update legacy_outbox set published = true where id = any($1::bigint[])', [rows.map((r) => r.id)]);
          oldPublished += rows.length;
        }
        await client.query('commit');
        if (rows.length === 0) await sleep(5);
      }
    } finally {
      client.release();
    }
  })();
  const drain = await startDrain(
    pool,
    {
      table: 'legacy_outbox',
      destination: `kafka://default/${topic}`,
      keyColumn: 'k',
      payloadColumn: 'body',
      published: 'flag',
      publishedColumn: 'published',
    },
    relay,
    { batchSize: 200 },
  );
  try {
    for (let n = 0; n < rowsTotal; n += 500)
      await pool.query(`insert into legacy_outbox (k, body) select 'k' || (i % 5), i::text from generate_series($1::int, $2::int) i`, [
        n,
        n + 499,
      ]);
    await expect
      .poll(
        async () =>
          (await consumerDb.query(`select count(*)::int as n from effects where message_id like 'outbox:legacy_outbox:%'`)).rows[0].n,
        {
          timeout: 60_000,
          interval: 500,
        },
      )
      .toBe(rowsTotal);
    expect((await pool.query('select count(*)::int as n from legacy_outbox where not published')).rows[0].n).toBe(0);
    console.log(`old poller published ${oldPublished}, Concord ${drain.drain.stats.published}, of ${rowsTotal} rows`);
    expect(oldPublished).toBeGreaterThan(0);
    expect(drain.drain.stats.published).toBeGreaterThan(0);
  } finally {
    stop = true;
    await oldPoller;
    await drain.stop();
    await producer.disconnect();
    await consumer.close();
  }
}, 120_000);
