/**
 * `npm run chaos`: the chaos test's scenario (test/helpers/chaos-scenario.ts) at scale, 100,000
 * transactions by default. It provisions its own Postgres servers: a throwaway cluster for the
 * coordinators' store (it is crashed in the middle) and, for the business service's database, the
 * server of test/services/postgres.ts (CONCORD_TEST_PG_URL, Docker, or another throwaway cluster).
 * Progress goes to stderr, the counts to stdout; the exit code is 1 when any count that must be 0
 * is not. docs/reliability.md describes the run and its figures.
 */
import { Command, Option } from 'commander';
import { runChaos, type ChaosResult } from '../test/helpers/chaos-scenario.js';
import { startLocalCluster } from '../test/services/postgres-cluster.js';
import { createDatabase, dropDatabases, randomDatabaseName, startPostgres } from '../test/services/postgres.js';
import { table } from './markdown.js';

const positive = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a positive number, got '${value}'`);
  return n;
};

const cli = new Command('chaos')
  .description('Two coordinators on one Postgres, SIGKILLs and a Postgres crash under a mix of messages and sagas; prints the counts.')
  .addOption(
    new Option('--transactions <n>', 'transactions to send').env('CHAOS_TRANSACTIONS').argParser(positive('transactions')).default(100_000),
  )
  .addOption(
    new Option('--concurrency <n>', 'clients sending at once').env('CHAOS_CONCURRENCY').argParser(positive('concurrency')).default(32),
  )
  .addOption(new Option('--rate <n>', 'transactions started per second at most (default: as fast as they go)').argParser(positive('rate')))
  .addOption(new Option('--kill-min <s>', 'least seconds between two SIGKILLs').argParser(positive('kill-min')).default(2))
  .addOption(new Option('--kill-max <s>', 'most seconds between two SIGKILLs').argParser(positive('kill-max')).default(6))
  .addOption(
    new Option('--settle <s>', 'seconds to wait for every transaction to be final after sending')
      .argParser(positive('settle'))
      .default(300),
  );
cli.parse();
const opts = cli.opts<{ transactions: number; concurrency: number; rate?: number; killMin: number; killMax: number; settle: number }>();

const progress = (line: string) => process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

const [services, store] = await Promise.all([
  startPostgres(),
  startLocalCluster({ max_connections: '200', shared_buffers: '256MB', fsync: 'off', full_page_writes: 'off' }),
]);
const prefix = randomDatabaseName('concord_chaos_') + '_';
let result: ChaosResult;
try {
  progress(
    `${opts.transactions.toLocaleString('en')} transactions, ${opts.concurrency} clients, a SIGKILL every ${opts.killMin}-${opts.killMax} s`,
  );
  result = await runChaos({
    transactions: Math.floor(opts.transactions),
    concurrency: Math.floor(opts.concurrency),
    ratePerSecond: opts.rate,
    storeCluster: store,
    serviceDatabaseUrl: await createDatabase(services.url, `${prefix}service`),
    killEverySeconds: [opts.killMin, Math.max(opts.killMin, opts.killMax)],
    settleSeconds: opts.settle,
    progress,
  });
} finally {
  await store.stop();
  if (process.env.CONCORD_TEST_PG_URL) await dropDatabases(services.url, prefix);
  await services.stop();
}

const mustBeZero = {
  lost: result.lost,
  'wrongly delivered': result.wronglyDelivered,
  'duplicate effects': result.duplicateEffects,
  'uncompensated actions': result.uncompensated,
  'not final': result.notFinal,
  'wrong end': result.wrongEnd,
  'refused calls': result.refused.length,
  'coordinator exits not caused by a kill': result.unexpectedExits,
};
const kinds = Object.entries(result.byKind).map(([kind, n]) => [
  kind,
  n.toLocaleString('en'),
  Object.entries(result.ends[kind] ?? {})
    .map(([status, count]) => `${status} ${count.toLocaleString('en')}`)
    .join(', '),
]);
const faults = {
  SIGKILLs: result.kills,
  'Postgres crashes': result.postgresRestarts,
  'client calls retried on the other node': result.clientRetries,
  'client calls given up': result.gaveUp,
  '409 to a retried call (an earlier attempt had landed)': result.conflictsAfterRetry,
  '5xx answers (retried)':
    Object.entries(result.serverErrors)
      .map(([status, n]) => `${status}: ${n}`)
      .join(', ') || '0',
  'branch calls received (barrier-absorbed duplicates included)': result.branchCalls,
  'sending (s)': result.sendSeconds.toFixed(1),
  'transactions started per second': (result.transactions / result.sendSeconds).toFixed(0),
  'settling after the last send (s)': result.settleSeconds.toFixed(1),
};
const rows = (o: Record<string, string | number>) =>
  Object.entries(o).map(([k, v]) => [k, typeof v === 'number' ? v.toLocaleString('en') : v]);
console.log(
  `## Chaos run: ${result.transactions.toLocaleString('en')} transactions, ${result.acknowledged.toLocaleString('en')} acknowledged\n`,
);
console.log(table(['must be 0', 'count'], rows(mustBeZero)) + '\n');
console.log(table(['kind', 'sent', 'final status'], kinds) + '\n');
console.log(table(['faults and rates', ''], rows(faults)) + '\n');
for (const line of [...result.examples, ...result.refused.slice(0, 10)]) console.log(`- ${line}`);
process.exitCode = Object.values(mustBeZero).some((n) => n > 0) ? 1 : 0;
