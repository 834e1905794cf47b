/**
 * The embedded store vacuums itself: PGlite has no autovacuum, so dead rows, stale statistics and
 * unfrozen transaction ids would otherwise pile up for as long as the coordinator runs.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import pino from 'pino';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { openDatabase, type Database } from '../coordinator/store/database.js';
import { insertNewGids, promoteToSubmitted, settle } from '../coordinator/store/transactions.js';
import { vacuumEmbedded } from '../coordinator/store/vacuum.js';
import { startCoordinator } from './helpers/coordinator.js';

let dir: string;
let database: Database;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'concord-vacuum-'));
  database = await openDatabase(dir, { poolSize: 1, logger: pino({ level: 'silent' }), lockTimeout: 5 });
});
afterAll(async () => {
  await database?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface TableStats {
  relname: string;
  n_dead_tup: number;
  vacuum_count: number;
  analyze_count: number;
}

async function stats(): Promise<Map<string, TableStats>> {
  // PGlite's one backend publishes its counters at the end of the statement after this one.
  await database.rows(sql`select pg_stat_force_next_flush()`);
  await database.rows(sql`select 1`);
  await database.rows(sql`select pg_stat_clear_snapshot()`);
  const rows = await database.rows<TableStats>(
    sql`select relname, n_dead_tup::int as n_dead_tup, vacuum_count::int as vacuum_count, analyze_count::int as analyze_count
        from pg_stat_user_tables where relname in ('trans_global', 'trans_branch_op')`,
  );
  return new Map(rows.map((r) => [r.relname, r]));
}

it('reclaims the dead rows of finished messages and analyzes the tables', async () => {
  const owner = 'node-a';
  const gids = Array.from({ length: 200 }, () => `vac-${randomUUID()}`);
  await insertNewGids(
    database,
    gids.map((gid) => ({
      gid,
      transType: 'msg',
      status: 'prepared',
      queryPrepared: '',
      protocol: 'http',
      options: {},
      customData: '',
      contentHash: '',
      interval: 10,
      dueIn: 10,
      owner: '',
      branches: [{ branchId: '01', op: 'action', url: 'http://127.0.0.1:1/x', data: '{}', meta: {}, orderKey: null }],
    })),
  );
  await promoteToSubmitted(
    database,
    gids.map((gid) => ({ gid, transType: 'msg', contentHash: '' })),
    owner,
    30,
  );
  await settle(
    database,
    owner,
    gids.map((gid) => ({ gid, succeeded: [{ branchId: '01', op: 'action' }], status: 'succeed', interval: 10, delay: 0, retried: false })),
  );
  const before = await stats();
  expect(before.get('trans_global')?.n_dead_tup).toBeGreaterThanOrEqual(gids.length);

  await vacuumEmbedded(database);

  const after = await stats();
  for (const table of ['trans_global', 'trans_branch_op']) {
    expect(after.get(table), table).toMatchObject({ n_dead_tup: 0 });
    expect(after.get(table)?.vacuum_count, table).toBeGreaterThan(before.get(table)?.vacuum_count ?? 0);
    expect(after.get(table)?.analyze_count, table).toBeGreaterThan(before.get(table)?.analyze_count ?? 0);
  }
});

it('runs every embeddedVacuumInterval seconds in a coordinator on the embedded store', async () => {
  const storeDir = await mkdtemp(join(tmpdir(), 'concord-vacuum-node-'));
  const node = await startCoordinator({ store: storeDir, env: { CONCORD_EMBEDDED_VACUUM_INTERVAL: '0.2', CONCORD_LOG_LEVEL: 'info' } });
  try {
    await vi.waitFor(() => expect(node.output().match(/embedded store vacuumed/g)?.length ?? 0).toBeGreaterThanOrEqual(2), {
      timeout: 30_000,
      interval: 100,
    });
    expect(await node.stop()).toBe(0);
  } finally {
    await node.stop();
    await rm(storeDir, { recursive: true, force: true });
  }
});
