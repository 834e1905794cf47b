/**
 * The outbox drain through outages: Postgres crashed and restarted mid-drain (a cluster of this
 * test's own; `concord outbox drain` starts its drain again), and the Kafka broker halted and
 * restarted mid-drain (a broker of this test's own; the batch is retried until it is back). No row
 * is lost, and each is applied once by the consumer's inbox, in order per key.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { consume } from '../sdk/index.js';
import { freshDatabase } from './helpers/db.js';
import { startDrain, testRelay } from './helpers/outbox.js';
import { startRestartableLocalKafka, type RestartableKafka } from './services/kafka-local.js';
import { startLocalCluster, type LocalCluster } from './services/postgres-cluster.js';

const cli = new URL('../dist/coordinator/cli.js', import.meta.url).pathname;
let consumerDb: pg.Pool;
let cluster: LocalCluster | undefined;
let kafka: RestartableKafka | undefined;

beforeAll(async () => {
  consumerDb = new pg.Pool({ connectionString: await freshDatabase(), max: 8 });
  await consumerDb.query('create table effects (seq bigserial primary key, message_id text unique, k text, n int)');
});
afterAll(async () => {
  await consumerDb?.end();
  await cluster?.stop();
  await kafka?.stop();
});

async function freshTopic(brokers: string): Promise<string> {
  const topic = `outbox-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
  await admin.disconnect();
  return topic;
}

/** Applies each message once into effects, through the SDK's inbox. */
function consumeInto(brokers: string, topic: string, consumerName: string) {
  return consume<pg.PoolClient>(
    { kafka: { brokers: brokers.split(','), topic, groupId: `g-${randomUUID()}`, partitionsConsumedConcurrently: 4 } },
    async ({ id, key, value, tx }) => {
      await tx.query('insert into effects (message_id, k, n) values ($1, $2, $3)', [id, key, Number(value)]);
    },
    { db: consumerDb, consumerName },
  );
}

/** Every row applied once, and per key in id order (n grows with the id). */
async function expectAppliedOnce(prefix: string, total: number): Promise<void> {
  await expect
    .poll(
      async () => (await consumerDb.query('select count(*)::int as n from effects where message_id like $1', [`${prefix}%`])).rows[0].n,
      {
        timeout: 120_000,
        interval: 500,
      },
    )
    .toBe(total);
  const { rows } = await consumerDb.query<{ k: string; n: number }>('select k, n from effects where message_id like $1 order by seq', [
    `${prefix}%`,
  ]);
  const last = new Map<string, number>();
  for (const r of rows) {
    expect(r.n, `key ${r.k}`).toBeGreaterThan(last.get(r.k) ?? -1);
    last.set(r.k, r.n);
  }
}

it('Postgres crashed and restarted mid-drain: `concord outbox drain` starts again, no row lost, each applied once', async () => {
  const brokers = inject('kafkaBrokers');
  cluster = await startLocalCluster({ max_connections: '100', shared_buffers: '64MB', fsync: 'off', full_page_writes: 'off' });
  const db = new pg.Pool({ connectionString: cluster.url, max: 4 });
  db.on('error', () => {}); // idle connections die with the server
  const topic = await freshTopic(brokers);
  const consumer = await consumeInto(brokers, topic, 'pg-restart');
  await db.query(
    `create table pg_outbox (id bigserial primary key, k text not null, n text not null, published boolean not null default false)`,
  );
  const before = 30_000;
  await db.query(`insert into pg_outbox (k, n) select 'k' || (i % 10), i::text from generate_series(1, $1::int) i`, [before]);
  const drain = spawn(
    'node',
    [
      cli,
      'outbox',
      'drain',
      '--database',
      cluster.url,
      '--kafka-brokers',
      brokers,
      '--table',
      'pg_outbox',
      '--destination',
      `kafka://default/${topic}`,
      '--key-column',
      'k',
      '--payload-column',
      'n',
      '--published',
      'flag',
      '--published-column',
      'published',
      '--batch-size',
      '200',
      '--progress-ms',
      '500',
    ],
    { env: { ...process.env, CONCORD_LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  drain.stdout.on('data', (d: Buffer) => (out += d.toString()));
  drain.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const published = async () => {
    const client = new pg.Client({ connectionString: cluster!.url });
    client.on('error', () => {});
    try {
      await client.connect();
      return (await client.query<{ n: number }>('select count(*)::int as n from pg_outbox where published')).rows[0]!.n;
    } catch {
      return -1;
    } finally {
      await client.end().catch(() => {});
    }
  };
  try {
    await expect.poll(published, { timeout: 60_000, interval: 100 }).toBeGreaterThan(3_000);
    await cluster.restart({ crash: true, downMs: 2_000 });
    const atRestart = await published();
    // Rows written after the restart go out too.
    await db.query(`insert into pg_outbox (k, n) select 'k' || (i % 10), i::text from generate_series($1::int, $2::int) i`, [
      before + 1,
      before + 5_000,
    ]);
    await expect.poll(published, { timeout: 120_000, interval: 500 }).toBe(before + 5_000);
    await expectAppliedOnce('outbox:pg_outbox:', before + 5_000);
    console.log(`Postgres restarted with ${atRestart} of ${before} rows marked; all ${before + 5_000} applied once`);
    expect(atRestart).toBeLessThan(before); // the restart did come mid-drain
    expect(out).toMatch(/starting again/);
  } finally {
    drain.kill('SIGTERM');
    await new Promise((resolve) => drain.once('exit', resolve));
    await consumer.close();
    await db.end();
  }
}, 240_000);

it('the Kafka broker halted and restarted mid-drain: the drain retries until it is back, no row lost, each applied once', async () => {
  kafka = await startRestartableLocalKafka();
  const topic = await freshTopic(kafka.brokers);
  const pool = new pg.Pool({ connectionString: await freshDatabase(), max: 8 });
  const relay = testRelay(kafka.brokers);
  await pool.query(`create table kafka_outbox (id bigserial primary key, k text not null, n text not null)`);
  const total = 30_000;
  await pool.query(`insert into kafka_outbox (k, n) select 'k' || (i % 10), i::text from generate_series(1, $1::int) i`, [total]);
  const drain = await startDrain(
    pool,
    { table: 'kafka_outbox', destination: `kafka://default/${topic}`, keyColumn: 'k', payloadColumn: 'n', published: 'delete' },
    relay,
    { batchSize: 200, timeoutMs: 5_000, retry: { base: 0.2, cap: 1 } },
  );
  const left = async () => (await pool.query<{ n: number }>('select count(*)::int as n from kafka_outbox')).rows[0]!.n;
  try {
    await expect.poll(left, { timeout: 60_000, interval: 50 }).toBeLessThan(total - 3_000);
    await kafka.halt();
    const atHalt = await left();
    await sleep(3_000);
    const whileDown = await left();
    await kafka.restart();
    await expect.poll(left, { timeout: 120_000, interval: 500 }).toBe(0);
    console.log(`Kafka halted with ${atHalt} rows left (${whileDown} after 3 s down); retries ${drain.drain.stats.retries}`);
    expect(atHalt).toBeGreaterThan(0); // halted mid-drain
    expect(whileDown).toBeGreaterThan(0); // nothing marked while the broker was down
    expect(drain.drain.stats.parked).toBe(0); // an outage parks nothing
  } finally {
    await drain.stop();
    await relay.close();
    await pool.end();
  }
  const consumer = await consumeInto(kafka.brokers, topic, 'kafka-restart');
  try {
    await expectAppliedOnce('outbox:kafka_outbox:', total);
  } finally {
    await consumer.close();
  }
}, 300_000);
