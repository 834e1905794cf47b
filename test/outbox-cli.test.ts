/** `concord outbox inspect|drain` as a separate process: a dry run with clear errors, and a drain killed with SIGKILL then resumed. */
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { consume, ensureOutboxTable, outbox } from '../sdk/index.js';
import { freshDatabase } from './helpers/db.js';

const cli = new URL('../dist/coordinator/cli.js', import.meta.url).pathname;
const brokers = inject('kafkaBrokers');
let url: string;
let pool: pg.Pool;
let consumerDb: pg.Pool;

beforeAll(async () => {
  url = await freshDatabase();
  pool = new pg.Pool({ connectionString: url, max: 4 });
  consumerDb = new pg.Pool({ connectionString: await freshDatabase(), max: 8 });
  await consumerDb.query('create table effects (message_id text primary key)');
});
afterAll(async () => {
  await pool?.end();
  await consumerDb?.end();
});

const run = async (args: string[]) =>
  promisify(execFile)('node', [cli, 'outbox', ...args], { env: { ...process.env, CONCORD_LOG_LEVEL: 'warn' } }).then(
    (r) => ({ code: 0, ...r }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );

describe('inspect', () => {
  it('counts pending rows and dry-runs the mapping on them; a bad mapping exits 2 naming the field', async () => {
    await pool.query(
      `create table shop_outbox (id bigserial primary key, topic text, body bytea, at timestamptz default now() - interval '90 seconds', done smallint default 0)`,
    );
    await pool.query(
      `insert into shop_outbox (topic, body) values ('orders', convert_to('{"a":1}', 'UTF8')), ('orders', '\\xff'::bytea), ('orders', convert_to('x', 'UTF8'))`,
    );
    await pool.query(`update shop_outbox set done = 1 where id = 3`);
    const mapping = [
      '--database',
      url,
      '--table',
      'shop_outbox',
      '--destination-column',
      'topic',
      '--destination-template',
      'kafka://default/{destination}',
    ];
    const flags = [
      ...mapping,
      '--payload-column',
      'body',
      '--payload-encoding',
      'bytea',
      '--published',
      'flag',
      '--published-column',
      'done',
      '--created-at-column',
      'at',
      '--kafka-brokers',
      brokers,
    ];
    const ok = await run(['inspect', ...flags]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/pending rows: 2\n/);
    expect(ok.stdout).toMatch(/oldest pending: 9\d\.\d s/);
    expect(ok.stdout).toMatch(/ 1 {2}ok {4}kafka:\/\/default\/orders {2}key=- {2}7 bytes {2}message-id=outbox:shop_outbox:1/);
    expect(ok.stdout).toMatch(/ 2 {2}PARK {2}body: The encoded data was not valid for encoding utf-8/);
    expect(ok.stdout).toMatch(/1 ok, 1 would be parked/);

    const bad = await run([
      'inspect',
      ...mapping,
      '--payload-column',
      'body',
      '--payload-encoding',
      'json',
      '--published',
      'flag',
      '--published-column',
      'done',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/outbox mapping payloadColumn: column "body" is bytea; expected json, jsonb or text/);
    const shape = await run(['inspect', ...mapping, '--payload-column', 'body', '--published', 'sometimes']);
    expect(shape.code).toBe(2);
    expect(shape.stderr).toMatch(/published: /);
  });
});

describe('drain', () => {
  it.each(['delete', 'none'] as const)(
    'killed with SIGKILL mid-drain and resumed (published=%s): no row lost, duplicates absorbed by the inbox',
    async (published) => {
      const rows = 10_000;
      const table = `killed_${published}`;
      const topic = `outbox-kill-${randomUUID()}`;
      const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
      await admin.disconnect();
      await pool.query(`create table ${table} (id bigserial primary key, k text not null, body text not null)`);
      await pool.query(`insert into ${table} (k, body) select 'k' || (i % 7), '{"i":' || i || '}' from generate_series(1, ${rows}) i`);
      const args = [
        'drain',
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
        published,
        '--kafka-brokers',
        brokers,
        '--batch-size',
        '200',
        '--progress-ms',
        '50',
      ];

      const first = spawn('node', [cli, 'outbox', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        first.stdout.on('data', (chunk: Buffer) => {
          const published = Number(/published (\d+)/.exec(chunk.toString())?.[1] ?? 0);
          if (published >= 2_000) resolve();
        });
        first.on('exit', () => reject(new Error('the drain ended before it was killed')));
      });
      first.kill('SIGKILL');
      await new Promise((resolve) => first.once('exit', resolve));
      if (published === 'delete') expect(Number((await pool.query(`select count(*) from ${table}`)).rows[0].count)).toBeGreaterThan(0);

      const second = await run([...args, '--exit-when-idle']);
      expect(second.code, second.stderr).toBe(0);
      expect(second.stdout).toMatch(/done, published \d+, parked 0/);
      if (published === 'delete') expect(Number((await pool.query(`select count(*) from ${table}`)).rows[0].count)).toBe(0);

      const seen: string[] = [];
      const consumer = await consume<pg.PoolClient>(
        { kafka: { brokers: brokers.split(','), topic, groupId: `g-${randomUUID()}`, partitionsConsumedConcurrently: 3 } },
        async ({ id, tx }) => {
          seen.push(id);
          await tx.query('insert into effects (message_id) values ($1)', [id]);
        },
        { db: consumerDb, consumerName: table },
      );
      try {
        await expect
          .poll(
            async () =>
              Number(
                (await consumerDb.query(`select count(*) from effects where message_id like $1`, [`outbox:${table}:%`])).rows[0].count,
              ),
            {
              timeout: 60_000,
              interval: 500,
            },
          )
          .toBe(rows);
      } finally {
        await consumer.close();
      }
      const offsets = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
      await offsets.connect();
      const onTopic = (await offsets.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.high), 0);
      await offsets.disconnect();
      expect(onTopic).toBeGreaterThanOrEqual(rows);
      expect(seen.length).toBe(rows); // the handler ran once per row: the inbox dropped the re-published ones
      console.log(
        `${published}: ${onTopic} messages on the topic for ${rows} rows after SIGKILL and resume; handler ran ${seen.length} times`,
      );
    },
    120_000,
  );
});

describe('native outbox', () => {
  it('prints its SQL, and `drain --native` publishes the rows outbox.publish wrote, then deletes them', async () => {
    const sql = await run(['sql', '--notify']);
    expect(sql.stdout).toMatch(/CREATE TABLE IF NOT EXISTS concord_outbox \(/);
    expect(sql.stdout).toMatch(/CREATE TABLE IF NOT EXISTS concord_outbox_parked/);
    expect(sql.stdout).toMatch(/CREATE TRIGGER concord_outbox_notify AFTER INSERT ON concord_outbox/);
    await ensureOutboxTable(pool);
    const topic = `outbox-native-${randomUUID()}`;
    const client = await pool.connect();
    try {
      await client.query('begin');
      for (let i = 0; i < 50; i++) await outbox.publish(client, `kafka://default/${topic}`, { i }, { key: `k${i % 3}` });
      await client.query('commit');
    } finally {
      client.release();
    }
    const drained = await run(['drain', '--native', '--database', url, '--kafka-brokers', brokers, '--exit-when-idle']);
    expect(drained.code, drained.stderr).toBe(0);
    expect(drained.stdout).toMatch(/outbox concord_outbox: done, published 50, parked 0/);
    expect(Number((await pool.query('select count(*) from concord_outbox')).rows[0].count)).toBe(0);
  });
});
