/**
 * Coordinator-run drains (config outboxes) of a MariaDB outbox table: two coordinators share the
 * table split in parts (GET_LOCK per part, a member slot each), both publish, no row goes out twice,
 * per-key order holds, and one takes over all parts when the other stops.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, expect, inject, it, vi } from 'vitest';
import { openOutboxPool } from '../relay/outbox/outbox-db.js';
import { freshDatabase, freshMysqlDatabase } from './helpers/db.js';
import { freePort, startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { receiver } from './helpers/outbox.js';

const brokers = inject('kafkaBrokers');
let outboxUrl: string;
let store: string;
let pool: mysql.Pool;
const running: RunningCoordinator[] = [];

beforeAll(async () => {
  outboxUrl = await freshMysqlDatabase();
  store = await freshDatabase();
  pool = openOutboxPool(outboxUrl, 12) as mysql.Pool;
});
afterAll(async () => {
  await Promise.all(running.map((c) => c.stop()));
  await pool?.end();
});

async function waitFor(ok: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  await vi.waitFor(
    async () => {
      if (!(await ok())) throw new Error(`not true after ${timeoutMs} ms`);
    },
    { timeout: timeoutMs, interval: 100 },
  );
}

async function start(env: Record<string, string>, until: 'ready' | 'alive' = 'ready'): Promise<RunningCoordinator> {
  const c = await startCoordinator({ store, env: { CONCORD_KAFKA_BROKERS: brokers, ...env }, until });
  running.push(c);
  return c;
}

async function metric(c: RunningCoordinator, name: string, outbox: string): Promise<number> {
  const text = await (await fetch(`${c.url}/api/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{outbox="${outbox}"}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

async function pending(): Promise<number> {
  const [rows] = await pool.query<mysql.RowDataPacket[]>('select count(*) as n from m_busy where sent = 0');
  return Number(rows[0]!.n);
}

it('two coordinators drain one MariaDB table split in 4 parts: both publish, every row once, in order per key', async () => {
  const topic = `outbox-mysql-nodes-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
  await pool.query(`create table m_busy (id bigint auto_increment primary key, k varchar(40) not null, body text not null,
    sent tinyint(1) not null default 0, created_at timestamp(6) not null default current_timestamp(6))`);
  const outboxes = JSON.stringify([
    {
      database: outboxUrl,
      table: 'm_busy',
      destination: `kafka://default/${topic}`,
      keyColumn: 'k',
      payloadColumn: 'body',
      createdAtColumn: 'created_at',
      published: 'flag',
      publishedColumn: 'sent',
      partitions: 4,
      lagThreshold: 60,
    },
  ]);
  const a = await start({ CONCORD_OUTBOXES: outboxes });
  await waitFor(async () => (await metric(a, 'concord_outbox_partitions_held', 'm_busy')) === 4, 15_000);
  const b = await start({ CONCORD_OUTBOXES: outboxes });
  await waitFor(async () => {
    const held = await Promise.all([a, b].map((c) => metric(c, 'concord_outbox_partitions_held', 'm_busy')));
    return held[0] === 2 && held[1] === 2;
  }, 20_000);

  const total = 12_000;
  // Each writer owns 12 keys and commits them in id order: id order is the order to keep per key.
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < total / 8; i += 100) {
        const values = Array.from({ length: 100 }, (_, g) => [`k${w * 12 + ((i + g) % 12)}`, `w${w}-${i + g}`]);
        await pool.query('insert into m_busy (k, body) values ?', [values]);
      }
    }),
  );
  await waitFor(async () => (await pending()) === 0, 60_000);
  let published: number[] = [];
  await waitFor(async () => {
    published = await Promise.all([a, b].map((c) => metric(c, 'concord_outbox_published_total', 'm_busy')));
    return published[0]! + published[1]! === total;
  }, 10_000);
  console.log(`MariaDB rows published by coordinator a: ${published[0]}, b: ${published[1]}`);
  expect(published[0]).toBeGreaterThan(0);
  expect(published[1]).toBeGreaterThan(0);
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  expect(offsets.reduce((sum, p) => sum + Number(p.high), 0)).toBe(total); // nothing produced twice

  const consumer = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).consumer({ groupId: `check-${randomUUID()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const lastId = new Map<string, number>();
  let seen = 0;
  let outOfOrder = 0;
  await consumer.run({
    eachMessage: async ({ message }) => {
      const key = message.key!.toString();
      const id = Number(String(message.headers!['message-id']).split(':').at(-1));
      if (id <= (lastId.get(key) ?? 0)) outOfOrder++;
      lastId.set(key, id);
      seen++;
    },
  });
  await waitFor(async () => seen === total, 30_000);
  await consumer.disconnect();
  expect(outOfOrder).toBe(0);

  // Lag and readiness as on Postgres.
  expect(await metric(a, 'concord_outbox_lag_seconds', 'm_busy')).toBeLessThan(5);
  const status = (await (await fetch(`${a.url}/api/outboxes`)).json()) as {
    outboxes: { members: number; held: number[]; problem: string | null }[];
  };
  expect(status.outboxes[0]).toMatchObject({ members: 2, held: [expect.any(Number), expect.any(Number)], problem: null });
  expect((await fetch(`${a.url}/api/health`)).status).toBe(200);

  // a stops: b takes over all the parts and drains what comes next alone.
  await a.stop();
  await waitFor(async () => (await metric(b, 'concord_outbox_partitions_held', 'm_busy')) === 4, 15_000);
  const after = Array.from({ length: 500 }, (_, g) => [`k${g % 97}`, `after-${g}`]);
  await pool.query('insert into m_busy (k, body) values ?', [after]);
  await waitFor(async () => (await metric(b, 'concord_outbox_published_total', 'm_busy')) === published[1]! + 500, 20_000);
  await b.stop();
});

it('readiness fails while a MariaDB outbox lags past lagThreshold; parked rows are listed', async () => {
  const down = await freePort();
  const refusing = await receiver(() => true);
  await pool.query(`create table m_stuck (id bigint auto_increment primary key, body text not null,
    sent tinyint(1) not null default 0, created_at timestamp(6) not null default current_timestamp(6))`);
  await pool.query(`create table m_refused (id bigint auto_increment primary key, body text not null)`);
  await pool.query(`insert into m_refused (body) values ('first')`);
  // A row an hour old that cannot go anywhere yet: a destination nobody listens on is retried, not parked.
  await pool.query(`insert into m_stuck (body, created_at) values ('x', now(6) - interval 1 hour)`);
  const c = await start(
    {
      CONCORD_OUTBOXES: JSON.stringify([
        {
          database: outboxUrl,
          table: 'm_stuck',
          destination: `http://127.0.0.1:${down}/nobody`,
          payloadColumn: 'body',
          createdAtColumn: 'created_at',
          published: 'flag',
          publishedColumn: 'sent',
          lagThreshold: 60,
        },
        { database: outboxUrl, table: 'm_refused', destination: refusing.url, payloadColumn: 'body', published: 'delete' },
      ]),
    },
    'alive',
  ); // unready from the start: its oldest row is already an hour old
  let health: Response | undefined;
  await waitFor(async () => (health = await fetch(`${c.url}/api/health`)).status === 503, 30_000);
  expect(await health!.json()).toMatchObject({
    code: 'NOT_READY',
    message: expect.stringMatching(/m_stuck: the oldest pending row is 3\d{3}\.\d s old, over lagThreshold 60 s/),
  });
  expect(await metric(c, 'concord_outbox_lag_seconds', 'm_stuck')).toBeGreaterThan(3000);
  await waitFor(async () => (await metric(c, 'concord_outbox_parked_total', 'm_refused')) === 1, 30_000);
  const parked = (await (await fetch(`${c.url}/api/outboxes/m_refused/parked`)).json()) as {
    parked: { rowId: string; error: string; row: { body: string } }[];
  };
  expect(parked.parked).toMatchObject([{ rowId: '1', error: expect.stringContaining('refused'), row: { body: 'first' } }]);
  await c.stop();
  refusing.server.close();
});
