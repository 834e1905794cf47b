/**
 * `concord outbox cutover`: the report that tells a team when the old poller can go. Concord and an
 * old poller overlap on rows; the report counts what Concord published, the rows the old poller had
 * published too (duplicates, applied once by the consumer's inbox), parked and pending rows, the lag.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { cutoverReport } from '../relay/outbox/cutover.js';
import { checkMapping, parseMapping } from '../relay/outbox/mapping-check.js';
import { applyOnce, ensureInboxTables } from '../sdk/inbox.js';
import { freshDatabase } from './helpers/db.js';
import { receiver, startDrain, testRelay } from './helpers/outbox.js';

const cli = new URL('../dist/coordinator/cli.js', import.meta.url).pathname;
let url: string;
let inboxUrl: string;
let pool: pg.Pool;
let inboxDb: pg.Pool;
const relay = testRelay();

beforeAll(async () => {
  url = await freshDatabase();
  inboxUrl = await freshDatabase();
  pool = new pg.Pool({ connectionString: url, max: 8 });
  inboxDb = new pg.Pool({ connectionString: inboxUrl, max: 4 });
  await ensureInboxTables(inboxDb);
});
afterAll(async () => {
  await relay.close();
  await pool?.end();
  await inboxDb?.end();
});

const run = async (args: string[]) =>
  promisify(execFile)('node', [cli, 'outbox', ...args], { env: { ...process.env, CONCORD_LOG_LEVEL: 'warn' } }).then(
    (r) => ({ code: 0, ...r }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );

it('reports published, duplicates the old poller caused, parked, pending and lag; ready once Concord keeps up', async () => {
  await pool.query(`create table legacy (id bigserial primary key, body text not null, created_at timestamptz not null default now(),
    published boolean not null default false)`);
  await pool.query(`insert into legacy (body) select 'm' || i from generate_series(1, 10) i`);
  await pool.query(`insert into legacy (body) values ('')`); // id 11: an empty body, refused by the receiver: parked
  const sink = await receiver((body) => body === '');
  const mapping = {
    table: 'legacy',
    destination: sink.url,
    payloadColumn: 'body',
    createdAtColumn: 'created_at',
    published: 'flag',
    publishedColumn: 'published',
  };
  const checked = await checkMapping(pool, parseMapping(mapping));
  const consumer = 'billing';
  const apply = (messageId: string) => applyOnce(inboxDb, consumer, messageId, async () => {});

  // The old poller has locked rows 1–5 and is publishing them when Concord starts.
  const old = await pool.connect();
  await old.query('begin');
  await old.query('select id from legacy where id <= 5 and not published for update');
  const drain = await startDrain(pool, mapping, relay);
  try {
    await expect.poll(() => sink.got.length).toBe(10); // Concord delivered all ten (plain reads do not wait on locks)
    for (let id = 1; id <= 5; id++) await apply(`outbox:legacy:${id}`); // the old poller's deliveries, applied first
    await old.query('update legacy set published = true where id <= 5');
    await old.query('commit');
    for (const got of sink.got) await apply(got.messageId); // Concord's: 1–5 again (dropped by the inbox), 6–10
    await expect.poll(async () => (await pool.query('select count(*)::int as n from legacy where not published')).rows[0].n).toBe(0);
  } finally {
    old.release();
    await drain.stop();
  }

  // Rows written while no drain runs: pending, and old.
  await pool.query(`insert into legacy (body, created_at) values ('late-1', now() - interval '1 hour'), ('late-2', now())`);
  const lagging = await cutoverReport(pool, checked, { inbox: { db: inboxDb, consumer } });
  expect(lagging).toMatchObject({ drain: 'legacy', published: 10, duplicates: 5, parked: 1, pending: 2, ready: false });
  expect(lagging.inbox).toEqual({ consumer, applied: 10 });
  expect(lagging.oldestPendingSeconds).toBeGreaterThan(3500);
  expect(lagging.verdict).toMatch(/^not yet: 2 row\(s\) pending, the oldest written 3\d{3}\.\d s ago/);

  const flags = ['--database', url, '--table', 'legacy', '--destination', sink.url, '--payload-column', 'body'];
  const more = ['--created-at-column', 'created_at', '--published', 'flag', '--published-column', 'published'];
  const printed = await run(['cutover', ...flags, ...more, '--inbox-database', inboxUrl, '--consumer', consumer]);
  expect(printed.stderr).toBe('');
  expect(printed.stdout).toMatch(/^published by Concord: 10 since /m);
  expect(printed.stdout).toMatch(/^duplicates: 5 \(published by the old poller too/m);
  expect(printed.stdout).toMatch(/^parked: 1$/m);
  expect(printed.stdout).toMatch(/^still pending: 2$/m);
  expect(printed.stdout).toMatch(/^lag: 3\d{3}\.\d s$/m);
  expect(printed.stdout).toMatch(/^inbox of billing: 10 message\(s\) of this outbox applied$/m);
  expect(printed.stdout).toMatch(/^not yet: /m);

  // Once the drain has caught up, the report says the old poller can go.
  const again = await startDrain(pool, mapping, relay, { stopWhenIdle: true });
  await again.running;
  const caughtUp = await cutoverReport(pool, checked);
  expect(caughtUp).toMatchObject({ published: 12, duplicates: 5, pending: 0, ready: true });
  expect(caughtUp.verdict).toMatch(/^ready: /);
  const json = await run(['cutover', ...flags, ...more, '--json']);
  expect(JSON.parse(json.stdout)).toMatchObject({ published: 12, duplicates: 5, parked: 1, pending: 0, ready: true });
  sink.server.close();
});

it('refuses --consumer without --inbox-database', async () => {
  const result = await run([
    'cutover',
    '--database',
    url,
    '--table',
    'legacy',
    '--destination',
    'http://x/',
    '--payload-column',
    'body',
    '--published',
    'delete',
    '--consumer',
    'billing',
  ]);
  expect(result.code).toBe(2);
  expect(result.stderr).toMatch(/--inbox-database and --consumer go together/);
});
