/**
 * Flat cost (part of `npm run bench`; issue 12): does a store full of finished transactions slow the
 * live ones? Two store databases on one durable Postgres: an empty one, and one holding
 * BENCH_FLAT_ROWS (default 1,000,000) finished transactions with their branches
 * (test/helpers/finished-store.ts, all younger than the retention period so the retention job keeps
 * them), vacuumed and analyzed. A coordinator on each; bench/run.ts's message workload (prepare,
 * local transaction, submit, one HTTP branch) at each concurrency against one, then the other, the
 * order swapped every round. Prints msgs/s, full/empty, p50/p99, coordinator CPU and store commits
 * per message, and the rows each store table gave out during the row (pg_stat_user_tables): a
 * statement scanning the finished rows shows as hundreds of thousands of rows read.
 *
 * BENCH_FLAT_ROWS, BENCH_FLAT_ROUNDS (default 2), BENCH_CONCURRENCY (default 16,64), BENCH_SECONDS
 * (default 5), BENCH_WARMUP_SECONDS, BENCH_IDLE_WAIT_SECONDS (default 10).
 */
import pg from 'pg';
import { ensureBarrierTable } from '../sdk/index.js';
import type { RunningCoordinator } from '../test/helpers/coordinator.js';
import { seedFinishedStore } from '../test/helpers/finished-store.js';
import { createDatabase } from '../test/services/postgres.js';
import { businessTableDdl } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { fixed, table } from './markdown.js';
import { measureConfiguration } from './measure.js';
import { loadFlatCostBenchOptions } from './options.js';
import { scalar, startBenchPostgres } from './postgres-server.js';
import { codeVersion, machineLine, progress, type Row } from './report.js';

const options = loadFlatCostBenchOptions(process.env);
const tables = ['trans_global', 'trans_branch_op'] as const;
type Reads = Record<(typeof tables)[number], { seqRows: number; indexRows: number; autovacuums: number }>;

interface Store {
  name: 'empty' | 'full';
  db: string;
  url: string;
  coordinator: RunningCoordinator;
}

interface FlatRow {
  round: number;
  store: Store['name'];
  row: Omit<Row, 'pgbenchTps'>;
  reads: Reads;
}

async function main(bench: Bench): Promise<void> {
  progress(`settings: ${JSON.stringify(options)}`);
  const server = await startBenchPostgres(bench, 'concord_flat_');
  const serviceDbUrl = await createDatabase(server.url, `${server.prefix}service`);
  const setup = new pg.Pool({ connectionString: serviceDbUrl, max: 1 });
  await ensureBarrierTable(setup);
  await setup.query(businessTableDdl);
  await setup.end();

  const stores: Store[] = [];
  for (const name of ['empty', 'full'] as const) {
    const db = `${server.prefix}${name}`;
    const url = await createDatabase(server.url, db);
    // Its start runs the migrations; the seed goes in behind it.
    const coordinator = await bench.startCoordinator({ store: url, env: { CONCORD_LOG_LEVEL: 'warn' } });
    stores.push({ name, db, url, coordinator });
  }
  const full = stores[1]!;
  const seeding = new pg.Client({ connectionString: full.url });
  await seeding.connect();
  try {
    progress(`seeding ${options.rows} finished transactions and their branches`);
    const started = performance.now();
    // Younger than the retention period (7 days): the retention job keeps them all.
    await seedFinishedStore(seeding, { rows: options.rows, spanDays: 6 });
    // A settled store, as autovacuum leaves it (visibility map set), and no checkpoint of the seed inside a row.
    await seeding.query('vacuum (analyze) trans_global, trans_branch_op');
    await seeding.query('checkpoint');
    const { rows } = await seeding.query<{ g: string; b: string }>(
      `select pg_size_pretty(pg_total_relation_size('trans_global')) as g, pg_size_pretty(pg_total_relation_size('trans_branch_op')) as b`,
    );
    progress(`seeded in ${((performance.now() - started) / 1000).toFixed(0)} s: trans_global ${rows[0]?.g}, trans_branch_op ${rows[0]?.b}`);
  } finally {
    await seeding.end();
  }

  const measure = (store: Store, concurrency: number, seconds: number, onWindow?: (edge: 'start' | 'end') => Promise<void>) =>
    measureConfiguration({
      onWindow,
      store: 'postgres',
      concurrency,
      coordinator: store.coordinator,
      serviceDbUrl,
      adminUrl: server.url,
      storeDbName: store.db,
      postmasterPid: server.postmasterPid,
      warmupSeconds: options.warmupSeconds,
      seconds,
      idleWaitSeconds: options.idleWaitSeconds,
      signal: bench.signal,
    });
  // A new store's statistics say it is empty until autovacuum analyzes it, and lag 10% of growth
  // after that (once a minute at most), and the prepared statements keep plans made for a table of
  // a few pages (which scanned it as it grew, before the store's sessions turned sequential scans
  // off). So the empty store is measured as autovacuum would leave it: after a first, unmeasured
  // run, and analyzed before each row (which replans the statements). The full store gets the same.
  const analyze = async (store: Store) => {
    await scalar(store.url, 'analyze trans_global');
    await scalar(store.url, 'analyze trans_branch_op');
  };
  for (const store of stores) {
    progress(`${store.name}: a first, unmeasured run`);
    await measure(store, Math.max(...options.concurrency), options.seconds);
  }

  const results: FlatRow[] = [];
  for (let round = 1; round <= options.rounds; round++) {
    for (const concurrency of options.concurrency) {
      // Empty first in odd rounds, full first in even ones: a drift of the machine's load hits both.
      for (const store of round % 2 === 1 ? stores : [...stores].reverse()) {
        bench.checkAborted();
        await analyze(store);
        let before: Reads | undefined;
        let after: Reads | undefined;
        const row = await measure(store, concurrency, options.seconds, async (edge) => {
          if (edge === 'start') before = await tableReads(store.url);
          else after = await tableReads(store.url);
        });
        if (!before || !after) throw new Error('the measurement window never closed');
        const reads = Object.fromEntries(
          tables.map((t) => [
            t,
            {
              seqRows: after![t].seqRows - before![t].seqRows,
              indexRows: after![t].indexRows - before![t].indexRows,
              autovacuums: after![t].autovacuums - before![t].autovacuums,
            },
          ]),
        ) as Reads;
        progress(
          `round ${round}, ${store.name} × ${concurrency}: rows read by sequential scans ` +
            tables.map((t) => `${t} ${reads[t].seqRows}`).join(', '),
        );
        results.push({ round, store: store.name, row, reads });
      }
    }
  }
  for (const store of stores) await bench.stopCoordinator(store.coordinator);
  process.stdout.write(report(results, server.version));
}

/** Each table's rows given out so far (read by sequential scans, fetched through indexes), and its autovacuum and autoanalyze runs. */
async function tableReads(url: string): Promise<Reads> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ relname: keyof Reads; seq: string; idx: string; auto: string }>(
      `select relname, seq_tup_read::text as seq, coalesce(idx_tup_fetch, 0)::text as idx, (autovacuum_count + autoanalyze_count)::text as auto
       from pg_stat_user_tables where relname = any($1)`,
      [tables],
    );
    const reads = Object.fromEntries(tables.map((t) => [t, { seqRows: 0, indexRows: 0, autovacuums: 0 }])) as Reads;
    for (const r of rows) reads[r.relname] = { seqRows: Number(r.seq), indexRows: Number(r.idx), autovacuums: Number(r.auto) };
    return reads;
  } finally {
    await client.end();
  }
}

function report(results: FlatRow[], postgresVersion: string): string {
  const usPerMsg = ({ row }: FlatRow) => ((row.cpu.coordinator / 100) * 1e6) / row.msgsPerSecond;
  // Only one store is loaded at a time, so the server's CPU is this store's.
  const postgresUsPerMsg = ({ row }: FlatRow) => ((row.cpu.postgres / 100) * 1e6) / row.msgsPerSecond;
  const rowsPerMsg = ({ row, reads }: FlatRow) =>
    tables.reduce((n, t) => n + reads[t].seqRows + reads[t].indexRows, 0) / Math.max(1, row.completed);
  const commitsPerMsg = ({ row }: FlatRow) => (row.postgres.store?.commits ?? NaN) / Math.max(1, row.completed);
  const partner = (r: FlatRow) =>
    results.find((o) => o.round === r.round && o.row.concurrency === r.row.concurrency && o.store !== r.store);
  const lines = results.map((r) => {
    const empty = r.store === 'full' ? partner(r) : undefined;
    return [
      String(r.round),
      String(r.row.concurrency),
      r.store,
      fixed(r.row.msgsPerSecond, 0),
      empty ? fixed(r.row.msgsPerSecond / empty.row.msgsPerSecond, 2) : '',
      fixed(r.row.p50Ms, 1),
      fixed(r.row.p99Ms, 1),
      fixed(usPerMsg(r), 0),
      fixed(postgresUsPerMsg(r), 0),
      fixed(commitsPerMsg(r), 2),
      fixed(rowsPerMsg(r), 1),
      String(r.row.errors),
      ...tables.map((t) => `${r.reads[t].seqRows} / ${r.reads[t].indexRows}`),
      String(tables.reduce((n, t) => n + r.reads[t].autovacuums, 0)),
    ];
  });
  // Per concurrency: the median of the rounds' full/empty ratios (a pair shares the machine's load
  // of its moment), and the medians of the figures that depend little on that load.
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  const summary = [...new Set(results.map((r) => r.row.concurrency))].map((concurrency) => {
    const of = (store: Store['name'], pick: (r: FlatRow) => number) =>
      median(results.filter((r) => r.store === store && r.row.concurrency === concurrency).map(pick));
    const both = (label: string, pick: (r: FlatRow) => number, digits: number) =>
      `${label} ${fixed(of('empty', pick), digits)} empty, ${fixed(of('full', pick), digits)} full`;
    const ratios = results
      .filter((r) => r.store === 'full' && r.row.concurrency === concurrency)
      .map((r) => r.row.msgsPerSecond / (partner(r)?.row.msgsPerSecond ?? NaN));
    return (
      `${concurrency} workers, medians of ${options.rounds} round(s): full/empty ${fixed(median(ratios), 2)}; ` +
      [
        both('msgs/s', (r) => r.row.msgsPerSecond, 0),
        both('coordinator CPU µs per msg', usPerMsg, 0),
        both('postgres CPU µs per msg', postgresUsPerMsg, 0),
        both('store commits per msg', commitsPerMsg, 2),
        both('store rows read per msg', rowsPerMsg, 1),
      ].join('; ')
    );
  });
  return [
    `## Flat cost: an empty store vs one holding ${options.rows.toLocaleString('en-US')} finished transactions`,
    '',
    `Date: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC  `,
    `Machine: ${machineLine(postgresVersion)}  `,
    `Code: ${codeVersion()}  `,
    `Settings: ${options.warmupSeconds} s warm-up, then ${options.seconds} s measured per row; empty and full alternately, the order swapped every round.`,
    '',
    table(
      [
        'round',
        'concurrency',
        'store',
        'msgs/s',
        'full/empty',
        'p50 ms',
        'p99 ms',
        'coordinator CPU µs per msg',
        'postgres CPU µs per msg',
        'store commits per msg',
        'store rows read per msg',
        'errors',
        ...tables.map((t) => `${t} rows read: seq / index`),
        'autovacuum + autoanalyze runs',
      ],
      lines,
    ),
    '',
    ...summary.map((s) => `- ${s}`),
    '',
  ].join('\n');
}

await runBench(main);
