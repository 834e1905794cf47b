/**
 * The chaos test: two coordinators on one Postgres, SIGKILLed at random moments and restarted, a
 * crash of that Postgres in the middle, and a mix of messages (submitted, aborted, prepared-only
 * and checked back SUCCESS or FAILURE) and sagas (succeeding, failing, timing out) sent through
 * both nodes. The coordinators' Postgres is a cluster of this test's own (it is crashed); the
 * business service's database is on the suite's server. The scenario and its verdict are shared
 * with `npm run chaos` (test/helpers/chaos-scenario.ts).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runChaos } from './helpers/chaos-scenario.js';
import { freshDatabase } from './helpers/db.js';
import { startLocalCluster, type LocalCluster } from './services/postgres-cluster.js';

let store: LocalCluster;

beforeAll(async () => {
  // synchronous_commit stays on: a crashed server must keep every commit it acknowledged.
  store = await startLocalCluster({ max_connections: '100', shared_buffers: '64MB', fsync: 'off', full_page_writes: 'off' });
}, 120_000);
afterAll(async () => {
  await store?.stop();
});

it('loses nothing, delivers nothing wrongly, duplicates nothing and compensates every action through kills and a Postgres crash', async () => {
  const result = await runChaos({
    transactions: 600,
    concurrency: 8,
    ratePerSecond: 25,
    storeCluster: store,
    serviceDatabaseUrl: await freshDatabase(),
    killEverySeconds: [1.5, 3.5],
    settleSeconds: 45,
    progress: (line) => console.log(`[chaos] ${line}`),
  });
  const { examples, refused, ...counts } = result;
  console.log(`[chaos] ${JSON.stringify(counts)}`);
  for (const line of [...examples, ...refused.slice(0, 10)]) console.log(`[chaos] ${line}`);
  expect(result.kills).toBeGreaterThanOrEqual(2);
  expect(result.postgresRestarts).toBe(1);
  // Every kind took part, and most transactions were handed over despite the faults.
  for (const n of Object.values(result.byKind)) expect(n).toBeGreaterThan(0);
  expect(result.acknowledged).toBeGreaterThan(result.transactions * 0.9);
  expect({
    lost: result.lost,
    wronglyDelivered: result.wronglyDelivered,
    duplicateEffects: result.duplicateEffects,
    uncompensated: result.uncompensated,
    notFinal: result.notFinal,
    wrongEnd: result.wrongEnd,
    refused: refused.length,
    unexpectedExits: result.unexpectedExits,
  }).toEqual({
    lost: 0,
    wronglyDelivered: 0,
    duplicateEffects: 0,
    uncompensated: 0,
    notFinal: 0,
    wrongEnd: 0,
    refused: 0,
    unexpectedExits: 0,
  });
}, 180_000);
