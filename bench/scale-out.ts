/**
 * Scale out (part of `npm run bench`): 1, 2, 3… coordinators on one Postgres store database, the
 * message workload of bench/run.ts with its workers spread evenly across them (worker w sends to
 * coordinator w mod n; each coordinator delivers what it was submitted). A fresh store database per
 * coordinator count. Prints msgs/s, latency, the coordinators' CPU (all of them, and per message),
 * Postgres's CPU and the store's commits per message. docs/benchmarks.md reads the figures.
 *
 * BENCH_COORDINATORS (default 1,2,3), BENCH_CONCURRENCY (default 16,64), BENCH_SECONDS (default 5),
 * BENCH_WARMUP_SECONDS, BENCH_IDLE_WAIT_SECONDS.
 */
import pg from 'pg';
import { ensureBarrierTable } from '../sdk/index.js';
import type { RunningCoordinator } from '../test/helpers/coordinator.js';
import { createDatabase } from '../test/services/postgres.js';
import { startBranchService } from './branch-service.js';
import { businessTableDdl, percentile, runClosedLoop } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { fixed, table } from './markdown.js';
import { waitForQuiet } from './measure.js';
import { loadScaleOutBenchOptions } from './options.js';
import { startBenchPostgres } from './postgres-server.js';
import { cpuSnapshot, cpuSplit, type CpuSnapshot } from './proc-stats.js';
import { codeVersion, machineLine, otherCpu, progress } from './report.js';

const options = loadScaleOutBenchOptions(process.env);

interface ScaleRow {
  coordinators: number;
  concurrency: number;
  msgsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** % of one core: all coordinators together, Postgres, the bench process, the rest of the machine. */
  coordinatorCpu: number;
  postgresCpu: number;
  benchCpu: number;
  otherCpu: number;
  /** The coordinators' CPU per message, µs. */
  coordinatorUsPerMsg: number;
  storeCommitsPerMsg: number;
}

async function main(bench: Bench): Promise<void> {
  progress(`settings: ${JSON.stringify(options)}`);
  const server = await startBenchPostgres(bench, 'concord_scale_');
  const serviceDbUrl = await createDatabase(server.url, `${server.prefix}service`);
  const setup = new pg.Pool({ connectionString: serviceDbUrl, max: 1 });
  await ensureBarrierTable(setup);
  await setup.query(businessTableDdl);
  await setup.end();
  const admin = new pg.Pool({ connectionString: server.url, max: 1 });
  bench.defer(() => admin.end());
  const commitsOf = async (db: string) =>
    Number((await admin.query<{ n: string }>('select xact_commit as n from pg_stat_database where datname = $1', [db])).rows[0]?.n ?? 0);

  const rows: ScaleRow[] = [];
  for (const count of options.coordinators) {
    bench.checkAborted();
    const storeDb = `${server.prefix}store_${count}`;
    const storeUrl = await createDatabase(server.url, storeDb);
    const coordinators: RunningCoordinator[] = [];
    // One after the other: the first runs the migrations, the others find them done.
    for (let i = 0; i < count; i++) {
      coordinators.push(await bench.startCoordinator({ store: storeUrl, env: { CONCORD_LOG_LEVEL: 'warn' } }));
    }
    progress(`${count} coordinator(s) on ${storeDb}: pids ${coordinators.map((c) => c.proc.pid).join(', ')}`);
    for (const concurrency of options.concurrency) {
      bench.checkAborted();
      await waitForQuiet(options.idleWaitSeconds, bench.signal);
      const pool = new pg.Pool({ connectionString: serviceDbUrl, max: Math.min(64, Math.max(concurrency, 4)) });
      pool.on('error', () => {});
      pool.on('connect', (client) => client.on('error', () => {}));
      const service = await startBranchService(pool);
      const pids = coordinators.map((c) => c.proc.pid ?? 0);
      let before: { cpu: CpuSnapshot[]; commits: number } | undefined;
      let after: { cpu: CpuSnapshot[]; commits: number } | undefined;
      const snapshot = async () => ({
        cpu: pids.map((pid) => cpuSnapshot(pid, server.postmasterPid)),
        commits: await commitsOf(storeDb),
      });
      progress(`${count} × ${concurrency}: ${options.warmupSeconds} s warm-up, ${options.seconds} s measured`);
      try {
        const result = await runClosedLoop({
          dtm: coordinators.map((c) => c.dtm),
          service,
          pool,
          concurrency,
          warmupMs: options.warmupSeconds * 1000,
          measureMs: options.seconds * 1000,
          signal: bench.signal,
          async onWindow(edge) {
            if (edge === 'start') before = await snapshot();
            else after = await snapshot();
          },
        });
        if (before === undefined || after === undefined) throw new Error('the measurement window never closed');
        const splits = before.cpu.map((b, i) => cpuSplit(b, after!.cpu[i]!));
        const first = splits[0]!;
        const coordinatorCpu = splits.reduce((sum, s) => sum + s.coordinator, 0);
        const done = Math.max(1, result.completed);
        const row: ScaleRow = {
          coordinators: count,
          concurrency,
          msgsPerSecond: result.completed / result.seconds,
          p50Ms: percentile(result.latenciesMs, 0.5),
          p99Ms: percentile(result.latenciesMs, 0.99),
          errors: result.errors,
          coordinatorCpu,
          postgresCpu: first.postgres,
          benchCpu: first.bench,
          otherCpu: otherCpu({ ...first, coordinator: coordinatorCpu }),
          coordinatorUsPerMsg: ((coordinatorCpu / 100) * result.seconds * 1e6) / done,
          storeCommitsPerMsg: (after.commits - before.commits) / done,
        };
        rows.push(row);
        progress(
          `${count} × ${concurrency}: ${row.msgsPerSecond.toFixed(0)} msgs/s, p50 ${row.p50Ms.toFixed(1)} ms, p99 ${row.p99Ms.toFixed(1)} ms, ` +
            `${row.errors} errors; CPU % coordinators ${coordinatorCpu.toFixed(0)}, postgres ${row.postgresCpu.toFixed(0)}, ` +
            `bench ${row.benchCpu.toFixed(0)}, other ${row.otherCpu.toFixed(0)}`,
        );
      } finally {
        await service.close();
        await pool.end();
      }
    }
    for (const c of coordinators) await bench.stopCoordinator(c);
  }

  process.stdout.write(
    [
      '## Scale out: coordinators on one Postgres store',
      '',
      `Date: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC  `,
      `Machine: ${machineLine(server.version)}  `,
      `Code: ${codeVersion()}  `,
      `Settings: ${options.warmupSeconds} s warm-up, then ${options.seconds} s measured per row; workers spread evenly across the coordinators.`,
      '',
      table(
        [
          'coordinators',
          'concurrency',
          'msgs/s',
          'p50 ms',
          'p99 ms',
          'errors',
          'coordinators CPU % (all)',
          'coordinator CPU µs per msg',
          'postgres %',
          'bench %',
          'other %',
          'store commits per msg',
        ],
        rows.map((r) => [
          String(r.coordinators),
          String(r.concurrency),
          fixed(r.msgsPerSecond, 0),
          fixed(r.p50Ms, 1),
          fixed(r.p99Ms, 1),
          String(r.errors),
          fixed(r.coordinatorCpu, 0),
          fixed(r.coordinatorUsPerMsg, 0),
          fixed(r.postgresCpu, 0),
          fixed(r.benchCpu, 0),
          fixed(r.otherCpu, 0),
          fixed(r.storeCommitsPerMsg, 2),
        ]),
      ),
      '',
    ].join('\n'),
  );
}

await runBench(main);
