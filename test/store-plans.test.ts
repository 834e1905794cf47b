/**
 * The store's hot statements reach their rows through the right indexes while its tables grow.
 * Postgres plans a prepared statement against the table as it is then (empty, never analyzed) and
 * keeps the plan: before the store sessions turned sequential scans off, every settle read the
 * whole branch table, so each message cost more than the one before it. And a batch statement
 * that finds its transactions by gid must not walk every unfinished one instead, however many
 * there are and whatever the statistics say.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openDatabase, poolSizes, statement } from '../coordinator/store/database.js';
import { Msg, Saga } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore, othersGone, withClient } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

let bank: BankService;
beforeAll(async () => {
  bank = await startBankService(await freshDatabase());
});
afterAll(async () => {
  await bank?.close();
});

/** `count` messages to the bank, six at a time (each waiting for its branch), so there are many small batches. */
async function sendMessages(dtm: string, count: number, prefix: string): Promise<void> {
  for (let round = 0; round < count / 6; round++) {
    await Promise.all(
      Array.from({ length: 6 }, () =>
        new Msg(dtm, `${prefix}-${randomUUID()}`, { waitResult: true }).add(`${bank.url}/TransIn`, { amount: 1 }).submit(),
      ),
    );
  }
}

it('settles the messages of a new store without scanning the rows of the ones before', async () => {
  const url = await freshStore();
  const node = await inProcessCoordinator({ store: url, env: fastCoordinator });
  const messages = 300;
  try {
    // A few at a time, so that there are many settle statements, each seeing a larger table.
    await sendMessages(node.dtm, messages, 'plan');
  } finally {
    // A backend's table statistics reach the shared view when it ends (othersGone below).
    await node.stop();
  }
  await withClient(url, async (client) => {
    await othersGone(client);
    const { rows } = await client.query<{ relname: string; seq_tup_read: string; n_live_tup: string }>(
      `select relname, seq_tup_read, n_tup_ins as n_live_tup from pg_stat_user_tables
       where relname in ('trans_global', 'trans_branch_op') order by relname`,
    );
    expect(rows.map((r) => [r.relname, Number(r.n_live_tup)])).toEqual([
      ['trans_branch_op', messages],
      ['trans_global', messages],
    ]);
    // With a scan per settle, the branch table alone had 18,749 rows read here; the fresh tables had none to read.
    for (const row of rows) expect(Number(row.seq_tup_read), row.relname).toBeLessThan(messages / 10);
  });
});

it('finds the rows of a batch by gid, not by walking a backlog the statistics do not know of', async () => {
  const url = await freshStore();
  const backlog = 20_000;
  const node = await inProcessCoordinator({ store: url, env: fastCoordinator });
  await node.stop();
  await withClient(url, async (client) => {
    // The statistics are taken in a steady state, nearly every transaction finished; then a backlog
    // builds up (a downstream service is down, or callers crashed between prepare and submit) before
    // the next analyze, which autovacuum is kept from running here.
    for (const sql of [
      `insert into trans_global (gid, trans_type, status, content_hash, next_cron_interval, next_cron_time, finish_time)
       select 'early-' || i, 'msg', case when i <= 5 then 'prepared' else 'succeed' end, '', 10,
         case when i <= 5 then now() + interval '1 hour' end, case when i > 5 then now() end
       from generate_series(1, ${backlog}) i`,
      'analyze trans_global',
      'analyze trans_branch_op',
      'alter table trans_global set (autovacuum_enabled = off)',
      'alter table trans_branch_op set (autovacuum_enabled = off)',
      // Half prepared (waiting for their check-back), half submitted (a branch to retry later).
      `insert into trans_global (gid, trans_type, status, content_hash, next_cron_interval, next_cron_time, submit_seq)
       select 'backlog-' || i, 'msg', case when i % 2 = 0 then 'prepared' else 'submitted' end, '', 10,
         now() + interval '1 hour', case when i % 2 = 1 then i end
       from generate_series(1, ${backlog}) i`,
      `insert into trans_branch_op (gid, url, branch_id, op, status)
       select 'backlog-' || i, 'http://service.internal/TransIn', '01', 'action', 'prepared' from generate_series(1, ${backlog}) i`,
      'select pg_stat_reset()',
    ])
      await client.query(sql);
  });
  const again = await inProcessCoordinator({ store: url, env: fastCoordinator });
  const messages = 60;
  try {
    await sendMessages(again.dtm, messages, 'backlog');
    // Sagas too: their passes settle with statements of their own.
    await Promise.all(
      Array.from({ length: 6 }, () =>
        new Saga(again.dtm, `backlog-saga-${randomUUID()}`, { waitResult: true })
          .add(`${bank.url}/TransOut`, `${bank.url}/TransOutCompensate`, { amount: 1 })
          .add(`${bank.url}/TransIn`, `${bank.url}/TransInCompensate`, { amount: 1 })
          .submit(),
      ),
    );
  } finally {
    await again.stop();
  }
  const read = await withClient(url, async (client) => {
    await othersGone(client);
    const { rows } = await client.query<{ indexrelname: string; idx_tup_read: string }>(
      `select indexrelname, idx_tup_read::text from pg_stat_user_indexes where relname = 'trans_global'`,
    );
    return new Map(rows.map((r) => [r.indexrelname, Number(r.idx_tup_read)]));
  });
  // Each message's rows are found through the gid's index...
  expect(read.get('trans_global_gid_uniq')).toBeGreaterThanOrEqual(messages);
  // ...and no batch walked an index over the backlog: the code before read the prepared backlog
  // through trans_global_status_idx for each submit batch, and all of it through the due index for
  // each settle (800,530 rows here for 60 messages). The due index is read through once, by the stopping
  // coordinator giving back its leases; the scheduler's and the health watch's reads stop at the
  // first row not due.
  expect(read.get('trans_global_status_idx')).toBeLessThan(backlog / 4);
  expect(read.get('trans_global_type_idx')).toBeLessThan(backlog / 4);
  expect(read.get('trans_global_due_idx')).toBeLessThan(backlog * 1.5);
});

it('plans a compiled hot statement once per connection, and SQL built per call for its values', async () => {
  // One connection for the compiled statements, one for the rest: each check reads its own session.
  expect(poolSizes(2)).toEqual({ statementsMax: 1, othersMax: 1 });
  const database = await openDatabase(await freshStore(), { poolSize: 2, logger: pino({ level: 'silent' }), lockTimeout: 5 });
  try {
    const find = statement(sql`select gid from trans_global where gid = any(${sql.placeholder('gids')}::text[])`);
    // Small batches: with Postgres's own choice, each of the first five calls was planned for its values.
    for (let i = 0; i < 8; i++) await database.rows(find, { gids: [`a-${i}`, `b-${i}`] });
    const plans = statement(
      sql`select generic_plans::int as generic, custom_plans::int as custom from pg_prepared_statements where name = ${sql.placeholder('name')}`,
    );
    expect(await database.rows(plans, { name: find.name })).toEqual([{ generic: 8, custom: 0 }]);
    const modes = await database.rows<{ mode: string }>(sql`select current_setting('plan_cache_mode') as mode`);
    expect(modes).toEqual([{ mode: 'auto' }]);
  } finally {
    await database.close();
  }
});
