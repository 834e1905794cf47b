/**
 * Outbox drains run by `concord start` (config outboxes): two coordinators share one busy table
 * split into parts, both publish and no row goes out twice, and one takes over all parts when the
 * other stops; metrics per table; readiness fails when a drain lags; the operator routes list and
 * redrive parked rows.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it, vi } from 'vitest';
import { loadConfig } from '../schemas/config.js';
import { freshDatabase } from './helpers/db.js';
import { cliPath, freePort, type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { receiver } from './helpers/outbox.js';

const brokers = inject('kafkaBrokers');

/** Polls `ok` every 100 ms until it holds, failing after `timeoutMs`. */
async function waitFor(ok: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  await vi.waitFor(
    async () => {
      if (!(await ok())) throw new Error(`not true after ${timeoutMs} ms`);
    },
    { timeout: timeoutMs, interval: 100 },
  );
}
let outboxUrl: string;
let store: string;
let pool: pg.Pool;
const running: TestCoordinator[] = [];

beforeAll(async () => {
  outboxUrl = await freshDatabase();
  store = await freshDatabase();
  pool = new pg.Pool({ connectionString: outboxUrl, max: 16 });
});
afterAll(async () => {
  await Promise.all(running.map((c) => c.stop()));
  await pool?.end();
});

async function start(env: Record<string, string>): Promise<TestCoordinator> {
  const c = await inProcessCoordinator({ store, env: { CONCORD_KAFKA_BROKERS: brokers, ...env } });
  running.push(c);
  return c;
}

async function metric(c: TestCoordinator, name: string, outbox: string, headers: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${c.url}/api/metrics`, { headers })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{outbox="${outbox}"}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

it('two coordinators drain one table split in 4 parts: both publish, every row once', async () => {
  const topic = `outbox-nodes-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
  await pool.query(
    'create table busy_outbox (id bigserial primary key, k text not null, body text not null, created_at timestamptz not null default now())',
  );
  const outboxes = JSON.stringify([
    {
      database: outboxUrl,
      table: 'busy_outbox',
      destination: `kafka://default/${topic}`,
      keyColumn: 'k',
      payloadColumn: 'body',
      createdAtColumn: 'created_at',
      published: 'delete',
      partitions: 4,
    },
  ]);
  const a = await start({ CONCORD_OUTBOXES: outboxes });
  await waitFor(async () => (await metric(a, 'concord_outbox_partitions_held', 'busy_outbox')) === 4, 15_000);
  const b = await start({ CONCORD_OUTBOXES: outboxes });
  // b joins: a hands over its share.
  await waitFor(async () => {
    const held = await Promise.all([a, b].map((c) => metric(c, 'concord_outbox_partitions_held', 'busy_outbox')));
    return held[0] === 2 && held[1] === 2;
  }, 20_000);

  const total = 30_000;
  // Each writer owns 12 keys: the rows of one key commit in id order, so id order is the order to keep
  // (two transactions writing one key at once have none between them).
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < total / 8; i += 250)
        await pool.query(
          `insert into busy_outbox (k, body) select 'k' || ($1 * 12 + g % 12), 'w' || $1 || '-' || g from generate_series($2::int, $3::int) g`,
          [w, i, i + 249],
        );
    }),
  );
  await waitFor(async () => (await pool.query('select count(*)::int as n from busy_outbox')).rows[0].n === 0, 60_000);
  // Counters are summed once a second.
  let published: number[] = [];
  await waitFor(async () => {
    published = await Promise.all([a, b].map((c) => metric(c, 'concord_outbox_published_total', 'busy_outbox')));
    return published[0]! + published[1]! === total;
  }, 10_000);
  console.log(`rows published by coordinator a: ${published[0]}, b: ${published[1]}`);
  expect(published[0]).toBeGreaterThan(0);
  expect(published[1]).toBeGreaterThan(0);
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  expect(offsets.reduce((sum, p) => sum + Number(p.high), 0)).toBe(total); // nothing produced twice
  // Per-key order: each key's rows reach its Kafka partition in id order, whichever node sent them.
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
  expect(await metric(a, 'concord_outbox_lag_seconds', 'busy_outbox')).toBeLessThan(5);
  const status = (await (await fetch(`${a.url}/api/outboxes`)).json()) as { outboxes: { members: number; held: number[] }[] };
  expect(status.outboxes[0]).toMatchObject({ members: 2, held: [expect.any(Number), expect.any(Number)] });
  // a stops: b takes over all the parts and drains what comes next alone.
  await a.stop();
  await waitFor(async () => (await metric(b, 'concord_outbox_partitions_held', 'busy_outbox')) === 4, 15_000);
  await pool.query(`insert into busy_outbox (k, body) select 'k' || (g % 97), 'after-' || g from generate_series(1, 1000) g`);
  await waitFor(async () => (await metric(b, 'concord_outbox_published_total', 'busy_outbox')) === published[1]! + 1000, 20_000);
  await b.stop();
});

it('readiness fails with the reason while a drain lags; operators list and redrive parked rows', async () => {
  const apiToken = 'api-token-0123456789abcdef';
  const operatorToken = 'operator-token-0123456789abcdef';
  let refusing = true;
  const http = await receiver(() => refusing);
  const down = await freePort();
  await pool.query(`create table stuck_outbox (id bigserial primary key, body text not null, created_at timestamptz not null default now(), done boolean not null default false);
    create table refused_outbox (id bigserial primary key, body text not null, published_at timestamptz);
    insert into refused_outbox (body) values ('first'), ('second');`);
  const node = await start({
    CONCORD_API_TOKENS: apiToken,
    CONCORD_OPERATOR_TOKENS: operatorToken,
    CONCORD_OUTBOXES: JSON.stringify([
      {
        database: outboxUrl,
        table: 'stuck_outbox',
        destination: `http://127.0.0.1:${down}/nobody`,
        payloadColumn: 'body',
        createdAtColumn: 'created_at',
        published: 'flag',
        publishedColumn: 'done',
        lagThreshold: 60,
      },
      { database: outboxUrl, table: 'refused_outbox', name: 'misfit', destination: http.url, payloadColumn: 'nope', published: 'delete' },
      {
        database: outboxUrl,
        table: 'refused_outbox',
        name: 'refused',
        destination: http.url,
        payloadColumn: 'body',
        published: 'flag',
        publishedColumn: 'published_at',
      },
    ]),
  });
  // A row an hour old that cannot be delivered: not ready, and the reason says which outbox.
  await pool.query(`insert into stuck_outbox (body, created_at) values ('late', now() - interval '1 hour')`);
  let health: Response | undefined;
  await waitFor(async () => (health = await fetch(`${node.url}/api/health`)).status === 503, 10_000);
  const notReady = (await health!.json()) as { message: string };
  expect(notReady.message).not.toContain('misfit'); // no lagThreshold: not a readiness matter
  expect(notReady).toMatchObject({
    code: 'NOT_READY',
    message: expect.stringMatching(/stuck_outbox: the oldest pending row is 3\d{3}\.\d s old, over lagThreshold 60 s/),
  });

  const operator = { authorization: `Bearer ${operatorToken}` };
  // A mapping that does not fit its table, without a lagThreshold: in the status, not in readiness.
  const statuses = (await (await fetch(`${node.url}/api/outboxes`, { headers: operator })).json()) as {
    outboxes: { name: string; problem: string | null }[];
  };
  expect(statuses.outboxes.find((o) => o.name === 'misfit')?.problem).toMatch(/payloadColumn: no column "nope"/);

  const api = { authorization: `Bearer ${apiToken}` };
  expect(await metric(node, 'concord_outbox_lag_seconds', 'stuck_outbox', api)).toBeGreaterThan(3_000);
  await waitFor(async () => (await metric(node, 'concord_outbox_parked_total', 'refused', api)) === 2, 10_000);
  expect((await fetch(`${node.url}/api/outboxes/refused/parked`, { headers: api })).status).toBe(403);
  const parked = (await (await fetch(`${node.url}/api/outboxes/refused/parked`, { headers: operator })).json()) as {
    parked: { rowId: string; error: string; row: { body: string } }[];
  };
  expect(parked.parked.map((p) => [p.rowId, p.row.body])).toEqual([
    ['1', 'first'],
    ['2', 'second'],
  ]);
  expect(parked.parked[0]!.error).toMatch(/^refused/);
  const post = (body: unknown, name = 'refused') =>
    fetch(`${node.url}/api/outboxes/${name}/redrive`, {
      method: 'POST',
      headers: { ...operator, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const bad = await post({ rowIds: 'x' });
  expect(bad.status).toBe(400);
  expect(await bad.json()).toMatchObject({ field: 'rowIds' });
  expect((await post({}, 'nope')).status).toBe(404);
  refusing = false;
  const redriven = await post({ rowIds: ['2'] });
  expect(await redriven.json()).toEqual({ delivered: ['2'], failed: [] });
  expect(http.got.map((g) => g.body)).toEqual(['second']);
  const left = (await (await fetch(`${node.url}/api/outboxes/refused/parked`, { headers: operator })).json()) as {
    parked: { rowId: string }[];
  };
  expect(left.parked.map((p) => p.rowId)).toEqual(['1']);
  http.server.close();
});

it('refuses an outboxes entry that cannot work, naming the field', () => {
  const entry = { database: 'postgres://h/db', table: 't', payloadColumn: 'b', destination: 'kafka://default/x' };
  expect(() => loadConfig({ overrides: { outboxes: [{ ...entry, published: 'none', partitions: 2 }] } })).toThrow(
    /outboxes.*partitions need published=flag or delete/,
  );
  expect(() => loadConfig({ overrides: { outboxes: [{ ...entry, published: 'delete', lagThreshold: 5 }] } })).toThrow(
    /lagThreshold needs createdAtColumn/,
  );
  expect(() =>
    loadConfig({
      overrides: {
        outboxes: [
          { ...entry, published: 'delete' },
          { ...entry, published: 'delete' },
        ],
      },
    }),
  ).toThrow(/each outbox needs its own name/);
});

it('concord outbox drain with partitions drains each part behind the same lock as the coordinators', async () => {
  const http = await receiver();
  await pool.query(`create table parts_outbox (id bigserial primary key, k text not null, body text not null);
    insert into parts_outbox (k, body) select 'k' || (g % 31), 'b' || g from generate_series(1, 600) g`);
  const mappingFile = join(tmpdir(), `parts-${randomUUID()}.json`);
  writeFileSync(
    mappingFile,
    JSON.stringify({
      table: 'parts_outbox',
      destination: http.url,
      keyColumn: 'k',
      payloadColumn: 'body',
      published: 'delete',
      partitions: 2,
    }),
  );
  // Another node holds both parts: the CLI stands by.
  const holder = await pool.connect();
  await holder.query(
    `select pg_advisory_lock(hashtextextended('concord_outbox:parts_outbox:0/2', 0)), pg_advisory_lock(hashtextextended('concord_outbox:parts_outbox:1/2', 0))`,
  );
  const cli = spawn(
    process.execPath,
    [cliPath(), 'outbox', 'drain', '--database', outboxUrl, '--mapping', mappingFile, '--exit-when-idle'],
    {
      stdio: 'ignore',
    },
  );
  const exited = new Promise<number | null>((resolve) => cli.once('exit', resolve));
  await new Promise((r) => setTimeout(r, 3_000));
  expect(http.got).toHaveLength(0);
  // Part 0 is let go: its rows, and only those, go out.
  await holder.query(`select pg_advisory_unlock(hashtextextended('concord_outbox:parts_outbox:0/2', 0))`);
  // The part of a row, as the drain hashes its key.
  const partOf = `(hashtextextended(k, 0) & 9223372036854775807) % 2`;
  const partZero = (await pool.query<{ n: number }>(`select count(*)::int as n from parts_outbox where ${partOf} = 0`)).rows[0]!.n;
  await waitFor(async () => (await pool.query(`select 1 from parts_outbox where ${partOf} = 0`)).rows.length === 0, 15_000);
  // Part 0 is gone and part 1 is still held: what arrived is part 0, all of it, and nothing else.
  expect((await pool.query(`select count(*)::int as n from parts_outbox`)).rows[0].n).toBe(600 - partZero);
  await waitFor(async () => http.got.length >= partZero, 5_000);
  const firstPart = http.got.length;
  expect(firstPart).toBe(partZero);
  expect(firstPart).toBeGreaterThan(100);
  expect(firstPart).toBeLessThan(500);
  await holder.query(`select pg_advisory_unlock(hashtextextended('concord_outbox:parts_outbox:1/2', 0))`);
  holder.release();
  expect(await exited).toBe(0);
  expect(new Set(http.got.map((g) => g.messageId)).size).toBe(600);
  expect(http.got).toHaveLength(600);
  http.server.close();
});
