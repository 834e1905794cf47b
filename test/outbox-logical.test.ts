/**
 * read=logical: the drain streams the outbox table's inserts from a pgoutput replication slot.
 * Concurrent writers committing out of id order (every row once in effect, per-key order kept),
 * rows written before the slot existed, the drain killed with SIGKILL mid-stream and resumed from
 * the slot's confirmed position, `inspect` and `drop-slot`, and setups refused with a clear error.
 */
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { beforeLsn } from '../relay/outbox/logical-reader.js';
import { logicalNames, logicalSetupProblem } from '../relay/outbox/logical-slot.js';
import { checkMapping, parseMapping } from '../relay/outbox/mapping-check.js';
import { isConcordError } from '../schemas/errors.js';
import { consume } from '../sdk/index.js';
import { freshDatabase } from './helpers/db.js';
import { inProcessCoordinator } from './helpers/coordinator.js';
import { receiver, startDrain, testRelay } from './helpers/outbox.js';

const cli = new URL('../dist/coordinator/cli.js', import.meta.url).pathname;
const brokers = inject('kafkaBrokers');
let url: string;
let pool: pg.Pool;
let consumerDb: pg.Pool;
const relay = testRelay(brokers);

beforeAll(async () => {
  url = await freshDatabase();
  pool = new pg.Pool({ connectionString: url, max: 24 });
  consumerDb = new pg.Pool({ connectionString: await freshDatabase(), max: 8 });
  await consumerDb.query('create table effects (seq bigserial primary key, message_id text unique, k text, n int)');
});
afterAll(async () => {
  // Slots are cluster-wide, hold WAL and keep their database from being dropped: leave none behind.
  // A stopped drain's walsender lets go of its slot a moment later.
  await vi.waitFor(
    async () => {
      const { rows } = await pool.query(`select 1 from pg_replication_slots where database = current_database() and active`);
      if (rows.length > 0) throw new Error('a slot is still in use');
    },
    { timeout: 30_000, interval: 200 },
  );
  await pool.query(`select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = current_database()`);
  await relay.close();
  await pool?.end();
  await consumerDb?.end();
});

const run = async (args: string[]) =>
  promisify(execFile)('node', [cli, 'outbox', ...args], { env: { ...process.env, CONCORD_LOG_LEVEL: 'warn' } }).then(
    (r) => ({ code: 0, ...r }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );

async function freshTopic(): Promise<string> {
  const topic = `outbox-logical-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });
  await admin.disconnect();
  return topic;
}

function consumeInto(topic: string, consumerName: string) {
  return consume<pg.PoolClient>(
    { kafka: { brokers: brokers.split(','), topic, groupId: `g-${randomUUID()}`, partitionsConsumedConcurrently: 6 } },
    async ({ id, key, value, tx }) => {
      await tx.query('insert into effects (message_id, k, n) values ($1, $2, $3)', [id, key, (JSON.parse(value) as { n: number }).n]);
    },
    { db: consumerDb, consumerName },
  );
}

/** Every row of `table` applied once, per key in writing order (n grows per key). */
async function expectAppliedOnce(table: string, total: number): Promise<void> {
  const prefix = `outbox:${table}:`;
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

/** Writers that each own their keys and commit in turn, so commits interleave out of id order across writers. */
async function write(table: string, writers: number, perWriter: number, base = 0): Promise<void> {
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      const client = await pool.connect();
      try {
        for (let n = 0; n < perWriter;) {
          await client.query('begin');
          const count = Math.min(1 + (n % 4), perWriter - n);
          for (let i = 0; i < count; i++, n++)
            await client.query(`insert into ${table} (k, body) values ($1, $2)`, [`w${w}-${n % 3}`, JSON.stringify({ n: base + n })]);
          if (Math.random() < 0.2) await sleep(Math.random() * 4);
          await client.query('commit');
        }
      } finally {
        client.release();
      }
    }),
  );
}

it.each(['none', 'flag'] as const)(
  'published=%s: 16 writers committing out of id order, rows written before the slot too: each applied once, per-key order kept',
  async (published) => {
    const table = `logical_${published}`;
    const topic = await freshTopic();
    await pool.query(
      `create table ${table} (id bigserial primary key, k text not null, body jsonb not null, sent boolean not null default false)`,
    );
    // Written before the drain (and its slot) exist: the catch-up publishes them from the table.
    await pool.query(`insert into ${table} (k, body) select 'early-' || (g % 5), json_build_object('n', g) from generate_series(1, 500) g`);
    const consumer = await consumeInto(topic, table);
    const drain = await startDrain(
      pool,
      {
        table,
        destination: `kafka://default/${topic}`,
        keyColumn: 'k',
        payloadColumn: 'body',
        payloadEncoding: 'json',
        published,
        ...(published === 'flag' ? { publishedColumn: 'sent' } : {}),
        read: 'logical',
      },
      relay,
    );
    try {
      await write(table, 16, 1_000, 1_000);
      await expectAppliedOnce(table, 16_500);
      if (published === 'flag')
        await expect.poll(async () => (await pool.query(`select count(*)::int as n from ${table} where not sent`)).rows[0].n).toBe(0);
      expect(drain.drain.stats.parked).toBe(0);
      // The slot is confirmed as rows are published: it holds back little.
      const mappingArgs = [
        '--database',
        url,
        '--table',
        table,
        '--destination',
        `kafka://default/${topic}`,
        '--payload-column',
        'body',
        '--published',
        published,
        ...(published === 'flag' ? ['--published-column', 'sent'] : []),
        '--read',
        'logical',
      ];
      const inspect = await run(['inspect', ...mappingArgs, '--kafka-brokers', brokers]);
      expect(inspect.code, inspect.stderr).toBe(0);
      expect(inspect.stdout).toMatch(/replication slot concord_logical_\w+: streaming, lag \d+\.\d MiB, holds \d+\.\d MiB of WAL/);
      // The drain streams and nothing is left: the old poller can go.
      const cutover = await run(['cutover', ...mappingArgs]);
      expect(cutover.stdout).toMatch(/ready: Concord keeps up \(0 pending\)/);
      console.log(`${published}: published ${drain.drain.stats.published} for 16,500 rows`);
    } finally {
      await drain.stop();
      await consumer.close();
    }
  },
  180_000,
);

it('killed with SIGKILL mid-stream and resumed: no row lost, duplicates absorbed by the inbox; drop-slot removes the slot', async () => {
  const table = 'logical_killed';
  const topic = await freshTopic();
  const total = 10_000;
  await pool.query(`create table ${table} (id bigserial primary key, k text not null, body jsonb not null)`);
  const args = [
    '--database',
    url,
    '--table',
    table,
    '--destination',
    `kafka://default/${topic}`,
    '--key-column',
    'k',
    '--payload-column',
    'body',
    '--published',
    'none',
    '--read',
    'logical',
    '--kafka-brokers',
    brokers,
  ];
  const startDrainProcess = () =>
    spawn('node', [cli, 'outbox', 'drain', ...args, '--batch-size', '200', '--progress-ms', '50'], {
      env: { ...process.env, CONCORD_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
  const first = startDrainProcess();
  // The slot exists once the drain streams: rows written from now on are in it.
  await expect
    .poll(
      async () =>
        (await pool.query(`select count(*)::int as n from pg_replication_slots where active and database = current_database()`)).rows[0].n,
      {
        timeout: 30_000,
      },
    )
    .toBe(1);
  const writing = write(table, 8, total / 8);
  await new Promise<void>((resolve, reject) => {
    first.stdout.on('data', (chunk: Buffer) => {
      if (Number(/published (\d+)/.exec(chunk.toString())?.[1] ?? 0) >= 2_000) resolve();
    });
    first.on('exit', () => reject(new Error('the drain ended before it was killed')));
  });
  first.kill('SIGKILL');
  await new Promise((resolve) => first.once('exit', resolve));
  await writing;

  const second = await run(['drain', ...args, '--exit-when-idle']);
  expect(second.code, second.stderr).toBe(0);
  expect(second.stdout).toMatch(/done, published \d+, parked 0/);
  const consumer = await consumeInto(topic, table);
  try {
    await expectAppliedOnce(table, total);
  } finally {
    await consumer.close();
  }
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  const onTopic = (await admin.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.high), 0);
  await admin.disconnect();
  console.log(`SIGKILL mid-stream: ${onTopic} messages on the topic for ${total} rows`);
  expect(onTopic).toBeGreaterThanOrEqual(total);

  // Leaving the mode: inspect shows the slot as left behind, drop-slot removes it and its publication.
  const inspect = await run(['inspect', ...args.filter((a) => a !== 'logical' && a !== '--read')]);
  expect(inspect.stdout).toMatch(/not read by any drain, .* \(left from read=logical: drop it with `concord outbox drop-slot`\)/);
  const dropped = await run(['drop-slot', ...args]);
  expect(dropped.code, dropped.stderr).toBe(0);
  expect(dropped.stdout).toMatch(/slot concord_logical_killed_\w+ dropped, publication concord_logical_killed_\w+ dropped/);
  expect(
    (
      await pool.query(
        `select count(*)::int as n from pg_replication_slots where database = current_database() and slot_name like 'concord_logical_killed%'`,
      )
    ).rows[0].n,
  ).toBe(0);
}, 180_000);

it('a coordinator runs a read=logical drain (config outboxes) and shows its slot in /api/outboxes and the metrics', async () => {
  const http = await receiver();
  await pool.query('create table logical_coord (id bigserial primary key, body text not null)');
  const c = await inProcessCoordinator({
    store: await freshDatabase(),
    env: {
      CONCORD_OUTBOXES: JSON.stringify([
        { database: url, table: 'logical_coord', destination: http.url, payloadColumn: 'body', published: 'none', read: 'logical' },
      ]),
    },
  });
  try {
    const status = async () =>
      ((await (await fetch(`${c.url}/api/outboxes`)).json()) as { outboxes: { slot: { active: boolean } | null }[] }).outboxes[0]!;
    await expect.poll(async () => (await status()).slot?.active, { timeout: 30_000 }).toBe(true);
    await pool.query(`insert into logical_coord (body) select 'b' || g from generate_series(1, 300) g`);
    await expect.poll(() => http.got.length, { timeout: 30_000 }).toBe(300);
    // Every row once (keyless rows go to an HTTP destination in parallel: no order to keep).
    expect(http.got.map((g) => g.body).sort()).toEqual(Array.from({ length: 300 }, (_, i) => `b${i + 1}`).sort());
    const metrics = await (await fetch(`${c.url}/api/metrics`)).text();
    expect(metrics).toMatch(/concord_outbox_slot_retained_bytes\{outbox="logical_coord"\} \d+/);
  } finally {
    await c.stop();
    http.server.close();
  }
}, 120_000);

it('two coordinators on one read=logical outbox: one streams, the other stands by and takes over; nothing published twice', async () => {
  const http = await receiver();
  await pool.query('create table logical_pair (id bigserial primary key, body text not null)');
  const store = await freshDatabase();
  const outboxes = JSON.stringify([
    { database: url, table: 'logical_pair', destination: http.url, payloadColumn: 'body', published: 'none', read: 'logical' },
  ]);
  const a = await inProcessCoordinator({ store, env: { CONCORD_OUTBOXES: outboxes } });
  const b = await inProcessCoordinator({ store, env: { CONCORD_OUTBOXES: outboxes } });
  const published = async (c: { url: string }) => {
    const text = await (await fetch(`${c.url}/api/metrics`)).text();
    return Number(/concord_outbox_published_total\{outbox="logical_pair"\} (\d+)/.exec(text)?.[1] ?? 0);
  };
  try {
    await expect
      .poll(async () => (await pool.query(`select 1 from pg_replication_slots where active and database = current_database()`)).rowCount, {
        timeout: 30_000,
      })
      .toBe(1);
    await pool.query(`insert into logical_pair (body) select 'b' || g from generate_series(1, 1000) g`);
    await expect.poll(() => http.got.length, { timeout: 30_000 }).toBe(1000);
    await expect.poll(async () => (await published(a)) + (await published(b)), { timeout: 10_000 }).toBe(1000);
    const [first, second] = (await published(a)) === 1000 ? [a, b] : [b, a];
    expect(await published(second)).toBe(0);
    // The streaming one stops: the other takes the lock and the slot, from the confirmed position.
    await first.stop();
    await pool.query(`insert into logical_pair (body) select 'c' || g from generate_series(1, 500) g`);
    await expect.poll(() => http.got.length, { timeout: 30_000 }).toBe(1500);
    expect(new Set(http.got.map((g) => g.messageId)).size).toBe(1500);
    await expect.poll(() => published(second), { timeout: 10_000 }).toBe(500);
  } finally {
    await a.stop();
    await b.stop();
    http.server.close();
  }
}, 120_000);

it('a destination down while 12,000 rows stream in: the stream pauses, nothing is parked or lost, each row once', async () => {
  let down = true;
  const got = new Set<string>();
  let calls = 0;
  const server = createServer((req, res) => {
    calls++;
    req.resume();
    req.on('end', () => {
      if (down) return void res.writeHead(503).end('down');
      got.add(String(req.headers['message-id']));
      res.writeHead(200).end('{"dtm_result":"SUCCESS"}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const destination = `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`;
  await pool.query('create table logical_down (id bigserial primary key, body text not null)');
  const drain = await startDrain(
    pool,
    { table: 'logical_down', destination, payloadColumn: 'body', published: 'none', read: 'logical' },
    relay,
    { retry: { base: 0.05, cap: 0.2 } },
  );
  try {
    await expect
      .poll(async () => (await pool.query(`select 1 from pg_replication_slots where active and database = current_database()`)).rowCount, {
        timeout: 30_000,
      })
      .toBe(1);
    await pool.query(`insert into logical_down (body) select 'b' || g from generate_series(1, 12000) g`);
    // Failing calls and retries, more rows streamed than the reader holds: then the destination comes back.
    await expect.poll(() => drain.drain.stats.retries, { timeout: 20_000 }).toBeGreaterThan(1000);
    down = false;
    await expect.poll(() => got.size, { timeout: 60_000 }).toBe(12_000);
    // The drain counts a batch once all of its answers are in, a moment after the last one arrived.
    await expect.poll(() => drain.drain.stats.published, { timeout: 10_000 }).toBe(12_000);
    expect(drain.drain.stats.parked).toBe(0);
    console.log(`destination down, then up: ${calls} calls for 12,000 rows`);
  } finally {
    await drain.stop();
    server.close();
  }
}, 120_000);

it('streamed rows decode as the table reader reads them: bytea payload, json headers, integer key', async () => {
  const http = await receiver();
  await pool.query('create table logical_types (id bigserial primary key, k int not null, raw bytea not null, hdr jsonb)');
  const drain = await startDrain(
    pool,
    {
      table: 'logical_types',
      destination: http.url,
      keyColumn: 'k',
      payloadColumn: 'raw',
      payloadEncoding: 'bytea',
      headersColumn: 'hdr',
      published: 'delete',
      read: 'logical',
    },
    relay,
  );
  try {
    await expect
      .poll(async () => (await pool.query(`select 1 from pg_replication_slots where active and database = current_database()`)).rowCount)
      .toBe(1);
    await pool.query(
      `insert into logical_types (k, raw, hdr) values (7, convert_to('{"ü":"ok"}', 'UTF8'), '{"traceparent": "00-abc-01"}')`,
    );
    await expect.poll(() => http.got.length, { timeout: 20_000 }).toBe(1);
    expect(http.got[0]).toMatchObject({ body: '{"ü":"ok"}', messageId: 'outbox:logical_types:1' });
    await expect.poll(async () => (await pool.query('select count(*)::int as n from logical_types')).rows[0].n).toBe(0);
    expect(drain.drain.stats.parked).toBe(0); // the headers decoded as a JSON object
  } finally {
    await drain.stop();
    http.server.close();
  }
});

describe('setup refused clearly', () => {
  const mapping = {
    table: 'logical_refused',
    destination: 'http://127.0.0.1:1/x',
    payloadColumn: 'body',
    published: 'delete',
    read: 'logical',
  };

  async function refusal(db: pg.Pool, m: Record<string, unknown>): Promise<{ field?: string; message: string }> {
    try {
      await checkMapping(db, parseMapping(m));
    } catch (err) {
      if (!isConcordError(err)) throw err;
      return { field: err.field, message: err.message };
    }
    throw new Error('the mapping was accepted');
  }

  it('a missing table, and a role without REPLICATION, name what is wrong', async () => {
    expect(await refusal(pool, mapping)).toMatchObject({ field: 'table', message: expect.stringMatching(/no table "logical_refused"/) });
    const role = `outbox_${randomUUID().slice(0, 8)}`;
    await pool.query(`create role ${role} login password 'pw'; create table logical_refused (id bigserial primary key, body text not null);
      grant select, delete on logical_refused to ${role}`);
    const asRole = new URL(url);
    asRole.username = role;
    asRole.password = 'pw';
    const weak = new pg.Pool({ connectionString: asRole.toString(), max: 1 });
    try {
      expect(await refusal(weak, mapping)).toMatchObject({
        field: 'read',
        message: expect.stringMatching(/read=logical streams from a replication slot, which needs a role with REPLICATION/),
      });
      // With REPLICATION but not owning the table: the publication is the owner's to create.
      await pool.query(`alter role ${role} replication`);
      expect(await refusal(weak, mapping)).toMatchObject({
        field: 'read',
        message: expect.stringMatching(
          /only the table's owner can create it: have the owner run the SQL of `concord outbox sql --logical --table logical_refused`/,
        ),
      });
    } finally {
      await weak.end();
      await pool.query(`drop owned by ${role}; drop role ${role}`);
    }
  });

  it('confirms a commit end or keepalive position as itself: the library adds one, so it is given one less', () => {
    expect(beforeLsn('0/1000')).toBe('0/FFF');
    expect(beforeLsn('1/0')).toBe('0/FFFFFFFF');
    expect(beforeLsn('A/16B3E28')).toBe('A/16B3E27');
  });

  it('wal_level other than logical is refused (the check, on facts the shared server cannot show)', () => {
    const names = logicalNames('shop', 'outbox');
    expect(
      logicalSetupProblem({ walLevel: 'replica', canReplicate: true, publicationExists: true, ownsTable: true }, names, 'outbox'),
    ).toMatch(/read=logical needs wal_level=logical, and this server has wal_level=replica/);
    expect(
      logicalSetupProblem({ walLevel: 'logical', canReplicate: true, publicationExists: false, ownsTable: true }, names, 'outbox'),
    ).toBeUndefined();
  });

  it('the mapping keys that do not go with read=logical, and `sql --logical` prints the DDL', async () => {
    expect(() => parseMapping({ ...mapping, partitions: 2 })).toThrow(
      /partitions: read=logical streams the table from one replication slot/,
    );
    expect(() => parseMapping({ ...mapping, notifyChannel: 'x' })).toThrow(/notifyChannel: read=logical needs no notifyChannel/);
    const sql = await run(['sql', '--logical', '--table', 'outbox', '--database', 'postgres://u@h/shop']);
    const names = logicalNames('shop', 'outbox');
    expect(sql.stdout).toContain(`CREATE PUBLICATION "${names.publication}" FOR TABLE "outbox" WITH (publish = 'insert');`);
    expect(sql.stdout).toContain(`SELECT pg_create_logical_replication_slot('${names.slot}', 'pgoutput');`);
    expect(sql.stdout).toContain(`SELECT pg_drop_replication_slot('${names.slot}')`);
  });
});
