/**
 * Outbox tables in MySQL/MariaDB (InnoDB), adopted with the same mapping as on Postgres: concurrent
 * writers committing out of id order (no row lost, once in effect, order per key), a poison row
 * parked while the rest flows, and the cursor mode refused.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { cutoverReport } from '../relay/outbox/cutover.js';
import { checkMapping, parseMapping } from '../relay/outbox/mapping-check.js';
import { redriveParked } from '../relay/outbox/redrive.js';
import { openOutboxPool } from '../relay/outbox/outbox-db.js';
import { isConcordError } from '../schemas/errors.js';
import { consume } from '../sdk/index.js';
import { freshDatabase, freshMysqlDatabase } from './helpers/db.js';
import { receiver, startDrain, testRelay } from './helpers/outbox.js';

const brokers = inject('kafkaBrokers');
let url: string;
let pool: mysql.Pool;
let consumerDb: pg.Pool;
const relay = testRelay(brokers);

beforeAll(async () => {
  url = await freshMysqlDatabase();
  pool = openOutboxPool(url, 24) as mysql.Pool;
  consumerDb = new pg.Pool({ connectionString: await freshDatabase(), max: 8 });
  await consumerDb.query('create table effects (seq bigserial primary key, message_id text unique, k text, n int)');
});
afterAll(async () => {
  await relay.close();
  await pool?.end();
  await consumerDb?.end();
});

async function count(sql: string): Promise<number> {
  const [rows] = await pool.query<mysql.RowDataPacket[]>(sql);
  return Number(rows[0]!.n);
}

describe('mapping on MySQL', () => {
  const good = {
    table: 'm_outbox',
    destination: 'http://127.0.0.1:1/x',
    payloadColumn: 'body',
    published: 'flag',
    publishedColumn: 'sent',
  };

  beforeAll(async () => {
    await pool.query(`create table m_outbox (id bigint auto_increment primary key, body json not null, raw longblob,
      sent tinyint(1) not null default 0, sent_at datetime(6), created_at timestamp(6) default current_timestamp(6))`);
  });

  async function refusal(mapping: Record<string, unknown>): Promise<{ field?: string; message: string }> {
    try {
      await checkMapping(pool, parseMapping(mapping));
    } catch (err) {
      if (!isConcordError(err)) throw err;
      return { field: err.field, message: err.message };
    }
    throw new Error('the mapping was accepted');
  }

  it('accepts a tinyint(1) or datetime flag, a json or longblob payload', async () => {
    expect(await checkMapping(pool, parseMapping(good))).toMatchObject({ dialect: 'mysql', flagKind: 'number', integerId: true });
    expect(await checkMapping(pool, parseMapping({ ...good, publishedColumn: 'sent_at' }))).toMatchObject({ flagKind: 'timestamp' });
    await checkMapping(pool, parseMapping({ ...good, payloadColumn: 'raw', payloadEncoding: 'bytea' }));
  });

  it.each([
    [{ ...good, published: 'none', publishedColumn: undefined }, 'published', /published=none .* not supported on MySQL\/MariaDB/],
    [{ ...good, notifyChannel: 'outbox' }, 'notifyChannel', /no LISTEN\/NOTIFY/],
    [{ ...good, table: 'nope' }, 'table', /no table "nope"/],
    [{ ...good, payloadColumn: 'raw', payloadEncoding: 'json' }, 'payloadColumn', /column "raw" is longblob; expected json/],
    [{ ...good, publishedColumn: 'body' }, 'publishedColumn', /column "body" is (json|longtext); expected boolean/],
  ])('refuses %j naming %s', async (mapping, field, message) => {
    const refused = await refusal(mapping);
    expect(refused.field).toBe(field);
    expect(refused.message).toMatch(message);
  });
});

it('publishes 10,000 rows from 16 writers committing out of id order: all of them, once in effect, per-key order kept', async () => {
  const rowsTotal = 10_000;
  const writers = 16;
  const topic = `outbox-my-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });
  await admin.disconnect();
  await pool.query(`create table orders_outbox (id bigint auto_increment primary key, topic varchar(200) not null, k varchar(64) not null,
    body json not null, published tinyint(1) not null default 0)`);
  const consumer = await consume<pg.PoolClient>(
    { kafka: { brokers: brokers.split(','), topic, groupId: `g-${randomUUID()}`, partitionsConsumedConcurrently: 6 } },
    async ({ id, key, value, tx }) => {
      await tx.query('insert into effects (message_id, k, n) values ($1, $2, $3)', [id, key, (JSON.parse(value) as { n: number }).n]);
    },
    { db: consumerDb, consumerName: 'outbox-mysql' },
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
      published: 'flag',
      publishedColumn: 'published',
    },
    relay,
  );
  // The naive "id > last seen" poller beside it shows that commits did interleave out of id order.
  let naiveSeen = 0;
  let writing = true;
  const naive = (async () => {
    let last = 0;
    for (let idle = 0; writing || idle < 5;) {
      const [rows] = await pool.query<mysql.RowDataPacket[]>('select id from orders_outbox where id > ? order by id limit 5000', [last]);
      naiveSeen += rows.length;
      if (rows.length > 0) last = Number(rows.at(-1)!.id);
      idle = rows.length === 0 ? idle + 1 : 0;
      await sleep(2);
    }
  })();
  try {
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        const connection = await pool.getConnection();
        try {
          for (let n = 0; n < rowsTotal / writers;) {
            await connection.query('begin');
            const rows = Math.min(1 + (n % 4), rowsTotal / writers - n);
            for (let i = 0; i < rows; i++, n++)
              await connection.query('insert into orders_outbox (topic, k, body) values (?, ?, ?)', [
                topic,
                `w${w}-${n % 3}`,
                JSON.stringify({ n }),
              ]);
            if (Math.random() < 0.2) await sleep(Math.random() * 4);
            await connection.query('commit');
          }
        } finally {
          connection.release();
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
    await expect.poll(() => count('select count(*) as n from orders_outbox where published = 0')).toBe(0);
    expect(drain.drain.stats.parked).toBe(0);
    console.log(`MariaDB: naive poller saw ${naiveSeen} of ${rowsTotal} rows; the drain published ${drain.drain.stats.published}`);
    expect(naiveSeen).toBeLessThan(rowsTotal);
  } finally {
    writing = false;
    await drain.stop();
    await consumer.close();
  }
}, 180_000);

it('parks a poison row with its error while the rest flows, and redrives it from its parked copy', async () => {
  await pool.query(`create table mixed (id bigint auto_increment primary key, dest varchar(200) not null, k varchar(20),
    body text not null, raw varbinary(100), done_at datetime(6))`);
  let refusing = true;
  const sink = await receiver((body) => refusing && body === '"refuse me"');
  await pool.query(
    `insert into mixed (dest, k, body, raw) values (?, 'a', '{"n":1}', null), (?, 'a', 'not json', x'00ff'), ('kafka://nowhere/t', 'b', '{"n":3}', null),
     (?, 'b', '"refuse me"', null), (?, 'a', '{"n":5}', null)`,
    [sink.url, sink.url, sink.url, sink.url],
  );
  const mapping = {
    table: 'mixed',
    destinationColumn: 'dest',
    keyColumn: 'k',
    payloadColumn: 'body',
    payloadEncoding: 'json',
    published: 'flag',
    publishedColumn: 'done_at',
  };
  const drain = await startDrain(pool, mapping, relay);
  try {
    await expect.poll(() => count('select count(*) as n from mixed where done_at is null')).toBe(0);
    expect(sink.got.map((g) => g.body)).toEqual(['{"n":1}', '{"n":5}']);
    expect(sink.got.map((g) => g.messageId)).toEqual(['outbox:mixed:1', 'outbox:mixed:5']);
    const [parked] = await pool.query<mysql.RowDataPacket[]>(
      'select row_id, error, message_id, row_data from concord_outbox_parked where drain = ? order by row_id',
      ['mixed'],
    );
    expect(parked.map((r) => r.row_id)).toEqual(['2', '3', '4']);
    expect(parked[0]!.error).toMatch(/^body: .*JSON/);
    const data = parked[0]!.row_data as unknown;
    expect(typeof data === 'string' ? JSON.parse(data) : data).toMatchObject({ id: 2, body: 'not json', raw: '\\x00ff' });
    expect(parked[1]!.error).toMatch(/no Kafka connection named "nowhere"/);
    expect(parked[2]!.error).toMatch(/^refused: HTTP 409/);
    expect(drain.drain.stats).toMatchObject({ published: 2, parked: 3 });

    refusing = false;
    const result = await redriveParked(pool, await checkMapping(pool, parseMapping(mapping)), relay, { ids: ['2', '4'] });
    expect(result.delivered).toEqual(['4']);
    expect(result.failed.map((f) => f.id)).toEqual(['2']);
    expect(sink.got.at(-1)).toEqual({ messageId: 'outbox:mixed:4', body: '"refuse me"' });
    expect(await count(`select count(*) as n from concord_outbox_parked where drain = 'mixed'`)).toBe(2);
    const report = await cutoverReport(pool, await checkMapping(pool, parseMapping(mapping)));
    expect(report).toMatchObject({ published: 2, duplicates: 0, parked: 2, pending: 0, ready: true });
  } finally {
    await drain.stop();
    sink.server.close();
  }
});

it('`concord outbox inspect`, `drain` and `cutover` take a mysql:// URL', async () => {
  await pool.query(
    `create table cli_outbox (id bigint auto_increment primary key, body text not null, created_at datetime(6) not null default now(6))`,
  );
  await pool.query(`insert into cli_outbox (body) values ('one'), ('two'), ('three')`);
  const sink = await receiver();
  const cli = new URL('../dist/coordinator/cli.js', import.meta.url).pathname;
  const run = (args: string[]) =>
    promisify(execFile)(
      'node',
      [
        cli,
        'outbox',
        ...args,
        '--database',
        url,
        '--table',
        'cli_outbox',
        '--destination',
        sink.url,
        '--payload-column',
        'body',
        '--created-at-column',
        'created_at',
        '--published',
        'delete',
      ],
      {
        env: { ...process.env, CONCORD_LOG_LEVEL: 'warn' },
      },
    );
  try {
    const inspected = await run(['inspect']);
    expect(inspected.stdout).toMatch(/^pending rows: 3$/m);
    expect(inspected.stdout).toMatch(
      /^ {2}1 {2}ok {4}http:\/\/127\.0\.0\.1:\d+\/events {2}key=- {2}3 bytes {2}message-id=outbox:cli_outbox:1$/m,
    );
    await run(['drain', '--exit-when-idle']);
    expect(sink.got).toEqual([
      { messageId: 'outbox:cli_outbox:1', body: 'one' },
      { messageId: 'outbox:cli_outbox:2', body: 'two' },
      { messageId: 'outbox:cli_outbox:3', body: 'three' },
    ]);
    expect(await count('select count(*) as n from cli_outbox')).toBe(0);
    const report = await run(['cutover']);
    expect(report.stdout).toMatch(/^published by Concord: 3 since /m);
    expect(report.stdout).toMatch(/^ready: /m);
  } finally {
    sink.server.close();
  }
});
