/**
 * Flat cost on the embedded store (issue 12): test/flat-cost.test.ts's check for PGlite. Its
 * counters live in the one process that opens the store, so this test opens it itself and calls
 * the store's operations directly: a message's life (prepare, submit, settle), the scheduler's
 * claim, the query API's read, the health watch's stalled-work query and a retention pass, on a
 * store holding 50,000 finished transactions (test/helpers/finished-store.ts). No statement may
 * read them, by a sequential scan or through an index.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import pino from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openDatabase, type Database } from '../coordinator/store/database.js';
import { getTransaction } from '../coordinator/store/queries.js';
import { deleteExpired } from '../coordinator/store/retention.js';
import { pendingSagaBrokerUrls } from '../coordinator/store/sagas.js';
import { stalledWork } from '../coordinator/store/stalled-work.js';
import {
  claimDue,
  findTransactions,
  insertNewGids,
  insertTransactions,
  pendingBranches,
  promoteToSubmitted,
  releaseLeases,
  settle,
  type NewTransaction,
} from '../coordinator/store/transactions.js';
import { finishedStoreStatements } from './helpers/finished-store.js';

const finished = 50_000;
const tables = ['trans_global', 'trans_branch_op'];
let dir: string;
let database: Database;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'concord-flat-pglite-'));
  database = await openDatabase(dir, { poolSize: 1, logger: pino({ level: 'silent' }), lockTimeout: 5 });
  for (const statement of finishedStoreStatements({ rows: finished, spanDays: 6 })) await database.rows(sql.raw(statement));
  // From here on, every row read is the operations'.
  await publishCounters();
  await database.rows(sql`select pg_stat_reset()`);
}, 180_000);

afterAll(async () => {
  await database?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** PGlite's one backend publishes the counters it holds when told to, at the end of its next statement. */
async function publishCounters(): Promise<void> {
  await database.rows(sql`select pg_stat_force_next_flush()`);
  await database.rows(sql`select 1`);
}

function message(status: NewTransaction['status']): NewTransaction {
  const gid = `flat-${randomUUID()}`;
  return {
    gid,
    transType: 'msg',
    status,
    queryPrepared: 'http://svc/QueryPrepared',
    protocol: 'http',
    options: {},
    customData: '',
    contentHash: 'h',
    interval: 10,
    dueIn: status === 'prepared' ? 60 : 0,
    owner: status === 'submitted' ? 'node-a' : '',
    branches: [{ branchId: '01', op: 'action', url: 'http://svc/TransIn', data: '{}', meta: {}, orderKey: null }],
  };
}

it('reads none of 50,000 finished transactions on the embedded store', async () => {
  for (let round = 0; round < 10; round++) {
    const prepared = Array.from({ length: 5 }, () => message('prepared'));
    expect((await insertNewGids(database, prepared)).size).toBe(5);
    const submitted = await promoteToSubmitted(
      database,
      prepared.map((m) => ({ gid: m.gid, transType: 'msg', contentHash: 'h' })),
      'node-a',
      30,
    );
    expect(submitted).toHaveLength(5);
    const direct = message('submitted');
    await insertTransactions(database, [direct]);
    const gids = [...prepared.map((m) => m.gid), direct.gid];
    expect((await findTransactions(database, gids)).size).toBe(6);
    expect([...(await pendingBranches(database, gids)).values()].flat()).toHaveLength(6);
    const settled = await settle(
      database,
      'node-a',
      gids.map((gid) => ({
        gid,
        succeeded: [{ branchId: '01', op: 'action' }],
        status: 'succeed',
        interval: 10,
        delay: 0,
        retried: false,
      })),
    );
    expect(settled.size).toBe(6);
    expect((await getTransaction(database, direct.gid)).trans?.status).toBe('succeed');
    await claimDue(database, 'node-b', 100, 30);
    await stalledWork(database);
    expect((await deleteExpired(database, 7 * 86_400, 500)).transactions).toBe(0);
  }
  await pendingSagaBrokerUrls(database);
  await releaseLeases(database, 'node-b');
  await publishCounters();
  const rows = await database.rows<{ relname: string; seq: number; idx: number }>(
    sql`select relname, seq_tup_read::float8 as seq, coalesce(idx_tup_fetch, 0)::float8 as idx
        from pg_stat_user_tables where relname in ('trans_global', 'trans_branch_op')`,
  );
  expect(rows.map((r) => r.relname).sort()).toEqual([...tables].sort());
  for (const { relname, seq, idx } of rows) {
    // A scan of the finished rows reads at least 50,000 (the branches: 100,000 and more); the live work a few hundred.
    expect(seq, `${relname}: rows read by sequential scans`).toBeLessThan(finished / 20);
    expect(idx, `${relname}: rows fetched through indexes`).toBeLessThan(finished / 20);
  }
}, 120_000);
