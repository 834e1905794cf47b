/**
 * A new store's hot statements reach their rows through indexes while its tables grow. Postgres
 * plans a prepared statement against the table as it is then (empty, never analyzed) and keeps the
 * plan: before the store sessions turned sequential scans off, every settle read the whole branch
 * table, so each message cost more than the one before it.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Msg } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

let bank: BankService;
beforeAll(async () => {
  bank = await startBankService(await freshDatabase());
});
afterAll(async () => {
  await bank?.close();
});

it('settles the messages of a new store without scanning the rows of the ones before', async () => {
  const url = await freshStore();
  const node = await inProcessCoordinator({ store: url, env: fastCoordinator });
  const messages = 300;
  try {
    // A few at a time, so that there are many settle statements, each seeing a larger table.
    for (let round = 0; round < messages / 6; round++) {
      await Promise.all(
        Array.from({ length: 6 }, () =>
          new Msg(node.dtm, `plan-${randomUUID()}`, { waitResult: true }).add(`${bank.url}/TransIn`, { amount: 1 }).submit(),
        ),
      );
    }
  } finally {
    // A backend's table statistics reach the shared view when it ends.
    await node.stop();
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
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
  } finally {
    await client.end();
  }
});
