/**
 * The flag/delete reader on a real table: a read never hands out more than its limit, whatever is
 * in flight, and a row that commits late is read before the later rows of its key.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { checkMapping, parseMapping } from '../relay/outbox/mapping-check.js';
import { outboxDb } from '../relay/outbox/outbox-db.js';
import { outboxSql } from '../relay/outbox/outbox-sql.js';
import { MarkingReader } from '../relay/outbox/readers.js';
import { freshDatabase } from './helpers/db.js';

let pool: pg.Pool;

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase() });
  await pool.query('create table reader_outbox (id bigserial primary key, k text not null, body text not null)');
});
afterAll(async () => {
  await pool?.end();
});

async function reader(): Promise<MarkingReader> {
  const mapping = parseMapping({
    table: 'reader_outbox',
    destination: 'http://127.0.0.1:1/x',
    keyColumn: 'k',
    payloadColumn: 'body',
    published: 'delete',
  });
  return new MarkingReader(outboxDb(pool), outboxSql(await checkMapping(pool, mapping)));
}

it('hands out at most its limit per read while earlier batches are in flight or just deleted', async () => {
  await pool.query('truncate reader_outbox');
  await pool.query(`insert into reader_outbox (k, body) select 'k' || (g % 7), 'b' || g from generate_series(1, 2000) g`);
  const r = await reader();
  const first = await r.read(100);
  const second = await r.read(100); // the first is still in flight
  expect(first.rows).toHaveLength(100);
  expect(second.rows).toHaveLength(100);
  await r.done({ ids: first.rows.map((row) => row.id) }); // deleted, but remembered until the next read
  const third = await r.read(100);
  expect(third.rows).toHaveLength(100);
  const seen = [...first.rows, ...second.rows, ...third.rows].map((row) => Number(row.id));
  expect(new Set(seen).size).toBe(300);
  expect(seen).toEqual([...seen].sort((a, b) => a - b));
});

it('reads a late-committed row before the rows its writer commits after it', async () => {
  await pool.query('truncate reader_outbox');
  const r = await reader();
  const late = await pool.connect();
  try {
    // The writer of key "w" holds a low id in an open transaction while others commit higher ids.
    await late.query('begin');
    await late.query(`insert into reader_outbox (k, body) values ('w', 'w1')`);
    await pool.query(`insert into reader_outbox (k, body) select 'o', 'o' || g from generate_series(1, 5) g`);
    const before = await r.read(3);
    expect(before.rows.map((row) => row.payload)).toEqual(['o1', 'o2', 'o3']);
    await late.query('commit');
  } finally {
    late.release();
  }
  await pool.query(`insert into reader_outbox (k, body) values ('w', 'w2')`);
  const after = await r.read(10);
  const order = after.rows.map((row) => row.payload);
  expect(order.indexOf('w1')).toBeGreaterThanOrEqual(0);
  expect(order.indexOf('w1')).toBeLessThan(order.indexOf('w2'));
});

it('marks a batch and reads the next in one statement, counting the rows another poller had deleted first', async () => {
  await pool.query('truncate reader_outbox');
  await pool.query(`insert into reader_outbox (k, body) select 'k' || (g % 7), 'b' || g from generate_series(1, 10) g`);
  const r = await reader();
  const first = await r.read(4);
  expect(first.rows.map((row) => row.payload)).toEqual(['b1', 'b2', 'b3', 'b4']);
  await pool.query('delete from reader_outbox where id = $1', [first.rows[0]!.id]); // the old poller was first
  const { marked, batch } = await r.doneThenRead!({ ids: first.rows.map((row) => row.id) }, 4);
  expect(marked).toBe(3);
  expect(batch.rows.map((row) => row.payload)).toEqual(['b5', 'b6', 'b7', 'b8']);
  expect((await pool.query('select count(*)::int as n from reader_outbox')).rows[0].n).toBe(6);
  const last = await r.doneThenRead!({ ids: batch.rows.map((row) => row.id) }, 4);
  expect(last.batch.rows.map((row) => row.payload)).toEqual(['b9', 'b10']);
  expect(last.batch.more).toBe(false);
  const empty = await r.doneThenRead!({ ids: last.batch.rows.map((row) => row.id) }, 4);
  expect(empty).toEqual({ marked: 2, batch: { rows: [], more: false } });
});
