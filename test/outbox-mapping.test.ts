/** Adopting an outbox table by mapping: bad mappings refused naming the field; a late commit is not lost. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkMapping, parseMapping } from '../relay/outbox/mapping-check.js';
import { redriveParked } from '../relay/outbox/redrive.js';
import { isConcordError } from '../schemas/errors.js';
import { freshDatabase } from './helpers/db.js';
import { receiver, startDrain, testRelay } from './helpers/outbox.js';

let pool: pg.Pool;
const relay = testRelay();

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase(), max: 8 });
  await pool.query(`create table outbox (
    id bigserial primary key, topic text not null, aggregate_id text, body jsonb not null, raw bytea,
    headers jsonb, created_at timestamptz default now(), published boolean not null default false)`);
});
afterAll(async () => {
  await relay.close();
  await pool?.end();
});

const good = {
  table: 'outbox',
  destinationColumn: 'topic',
  keyColumn: 'aggregate_id',
  payloadColumn: 'body',
  payloadEncoding: 'json',
  published: 'flag',
  publishedColumn: 'published',
};

async function refusal(mapping: Record<string, unknown>): Promise<{ field?: string; message: string }> {
  try {
    await checkMapping(pool, parseMapping(mapping));
  } catch (err) {
    if (!isConcordError(err)) throw err;
    expect(err.code).toBe('INVALID_REQUEST');
    return { field: err.field, message: err.message };
  }
  throw new Error('the mapping was accepted');
}

describe('mapping', () => {
  it('accepts a mapping that fits the table', async () => {
    const checked = await checkMapping(pool, parseMapping(good));
    expect(checked).toMatchObject({ name: 'outbox', flagKind: 'boolean', integerId: true });
  });

  it.each([
    [{ ...good, table: 'nope' }, 'table', /no table "nope"/],
    [{ ...good, payloadColumn: 'payload' }, 'payloadColumn', /no column "payload" in outbox \(it has: id bigint, topic text/],
    [{ ...good, payloadColumn: 'raw' }, 'payloadColumn', /is bytea; expected json, jsonb or text/],
    [{ ...good, payloadColumn: 'body', payloadEncoding: 'bytea' }, 'payloadColumn', /is jsonb; expected bytea/],
    [{ ...good, publishedColumn: 'topic' }, 'publishedColumn', /is text; expected boolean/],
    [{ ...good, publishedColumn: undefined }, 'publishedColumn', /needs publishedColumn/],
    [{ ...good, destination: 'kafka://default/x' }, 'destinationColumn', /exactly one of destinationColumn and destination/],
    [{ ...good, createdAtColumn: 'topic' }, 'createdAtColumn', /expected a timestamp/],
    [{ ...good, payloadEncoding: 'xml' }, 'payloadEncoding', /payloadEncoding/],
    [{ ...good, keyColumn: 'aggregate id; drop table outbox' }, 'keyColumn', /plain SQL identifier/],
    [{ ...good, extra: 1 }, '', /extra/],
  ])('refuses %j naming %s', async (mapping, field, message) => {
    const refused = await refusal(mapping);
    expect(refused.field).toBe(field);
    expect(refused.message).toMatch(message);
  });

  it('refuses a cursor (published=none) over ids from a sequence with CACHE > 1', async () => {
    await pool.query('create table cached (id bigserial primary key, body text)');
    await pool.query('alter sequence cached_id_seq cache 10');
    const refused = await refusal({ table: 'cached', destination: 'http://127.0.0.1:1/x', payloadColumn: 'body', published: 'none' });
    expect(refused.field).toBe('idColumn');
    expect(refused.message).toMatch(/CACHE 10/);
  });
});

describe('late commits', () => {
  it('naive id polling loses a row whose lower id commits late; the drain does not', async () => {
    await pool.query('create table events (id bigserial primary key, body text not null)');
    const sink = await receiver();
    const drain = await startDrain(pool, { table: 'events', destination: sink.url, payloadColumn: 'body', published: 'none' }, relay, {
      settleMs: 20,
    });
    const slow = await pool.connect();
    try {
      // The slow writer takes id 1 and stays open; id 2 commits and is read.
      await slow.query('begin');
      await slow.query(`insert into events (body) values ('slow')`);
      await pool.query(`insert into events (body) values ('fast')`);
      let naiveLast = 0;
      const naive: string[] = [];
      const poll = async () => {
        const { rows } = await pool.query<{ id: string; body: string }>('select id, body from events where id > $1 order by id', [
          naiveLast,
        ]);
        for (const r of rows) naive.push(r.body);
        if (rows.length > 0) naiveLast = Number(rows.at(-1)!.id);
      };
      await poll();
      // The drain has read past the open writer's id: 'fast' is out.
      await expect.poll(() => sink.got.map((g) => g.body)).toEqual(['fast']);
      await slow.query('commit');
      await poll();
      await expect.poll(() => sink.got.map((g) => g.body).sort()).toEqual(['fast', 'slow']);
      expect(naive).toEqual(['fast']); // the naive poller never sees 'slow'
      expect(sink.got.map((g) => g.messageId).sort()).toEqual(['outbox:events:1', 'outbox:events:2']);
      // The cursor passes both once the slow transaction has ended.
      await expect
        .poll(async () => (await pool.query(`select last_id::int from concord_outbox_cursor where drain = 'events'`)).rows[0]?.last_id)
        .toBe(2);
    } finally {
      slow.release();
      await drain.stop();
      sink.server.close();
    }
  });
});

describe('poison rows', () => {
  it('parks an undecodable row, an unknown destination and a refused row, with their errors, while the rest flows; redrive', async () => {
    await pool.query(`create table mixed (id bigserial primary key, dest text not null, k text, body text not null, sent_at timestamptz)`);
    let refusing = true;
    const sink = await receiver((body) => refusing && body === '"refuse me"');
    await pool.query(
      `insert into mixed (dest, k, body) values ($1, 'a', '{"n":1}'), ($1, 'a', 'not json'), ('kafka://nowhere/t', 'b', '{"n":3}'),
       ($1, 'b', '"refuse me"'), ($1, 'a', '{"n":5}'), ('orders', 'c', '{"n":6}')`,
      [sink.url],
    );
    const mixedMapping = {
      table: 'mixed',
      destinationColumn: 'dest',
      keyColumn: 'k',
      payloadColumn: 'body',
      payloadEncoding: 'json',
      published: 'flag',
      publishedColumn: 'sent_at',
    };
    const drain = await startDrain(pool, mixedMapping, relay);
    try {
      await expect.poll(async () => (await pool.query('select count(*)::int as n from mixed where sent_at is null')).rows[0].n).toBe(0);
      expect(sink.got.map((g) => g.body)).toEqual(['{"n":1}', '{"n":5}']);
      const { rows } = await pool.query<{ row_id: string; error: string; message_id: string; row_data: { body: string } }>(
        'select row_id, error, message_id, row_data from concord_outbox_parked where drain = $1 order by row_id::int',
        ['mixed'],
      );
      expect(rows.map((r) => r.row_id)).toEqual(['2', '3', '4', '6']);
      expect(rows[0]!.error).toMatch(/^body: .*JSON/);
      expect(rows[0]!.row_data.body).toBe('not json');
      expect(rows[1]!.error).toMatch(/no Kafka connection named "nowhere"/);
      expect(rows[2]!.error).toMatch(/^refused: HTTP 409/);
      expect(rows[3]!.error).toMatch(/"orders" is not a URL/);
      expect(rows[3]!.message_id).toBe('outbox:mixed:6');
      expect(drain.drain.stats).toMatchObject({ published: 2, parked: 4 });

      // Once the receiver accepts it, a redrive delivers the refused row from its parked copy;
      // the undecodable one stays parked with one more attempt.
      refusing = false;
      const checked = await checkMapping(pool, parseMapping(mixedMapping));
      const result = await redriveParked(pool, checked, relay, { ids: ['2', '4'] });
      expect(result.delivered).toEqual(['4']);
      expect(result.failed.map((f) => f.id)).toEqual(['2']);
      expect(sink.got.at(-1)).toEqual({ messageId: 'outbox:mixed:4', body: '"refuse me"' });
      const left = await pool.query<{ row_id: string; attempts: number }>(
        'select row_id, attempts from concord_outbox_parked where drain = $1 order by row_id::int',
        ['mixed'],
      );
      expect(left.rows).toEqual([
        { row_id: '2', attempts: 2 },
        { row_id: '3', attempts: 1 },
        { row_id: '6', attempts: 1 },
      ]);
    } finally {
      await drain.stop();
      sink.server.close();
    }
  });
});

describe('outage', () => {
  it('keeps retrying while every delivery fails, parks nothing, and leaves the rows unpublished when stopped', async () => {
    await pool.query(`create table down (id bigserial primary key, body text not null, done boolean not null default false)`);
    await pool.query(`insert into down (body) select 'm' || i from generate_series(1, 5) i`);
    let calls = 0;
    const server = createServer((_req, res) => {
      calls++;
      res.writeHead(503).end('down');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const drain = await startDrain(
      pool,
      { table: 'down', destination: url, payloadColumn: 'body', published: 'flag', publishedColumn: 'done' },
      relay,
      {
        retry: { base: 0.01, cap: 0.05 },
        maxAttempts: 2,
      },
    );
    try {
      await expect.poll(() => calls, { timeout: 10_000 }).toBeGreaterThan(20); // well past maxAttempts: an outage parks nothing
    } finally {
      await drain.stop();
      server.close();
    }
    expect(drain.drain.stats).toMatchObject({ published: 0, parked: 0 });
    expect((await pool.query('select count(*)::int as n from down where not done')).rows[0].n).toBe(5);
  });
});
