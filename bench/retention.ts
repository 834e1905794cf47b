/**
 * `node dist/bench/retention.js`: what a big store costs and what retention does about it. Seeds
 * RETENTION_BENCH_ROWS (default 1,000,000) finished transactions with their branches straight into a
 * Postgres database (test/helpers/finished-store.ts), then:
 *   1. times GET /all with each filter (p50 of 15 calls) without and with migration 0004's indexes,
 *      how long creating them takes on that table, and what they cost the write path (a closed loop
 *      of RETENTION_BENCH_WORKERS, default 8, submitting messages, without and with them);
 *   2. runs the retention job (default settings: 7 days, 500 rows per statement) on the half of the
 *      rows that finished more than 7 days ago, and reports rows deleted per second and the latency
 *      of a light load of two-phase messages beside it (RETENTION_BENCH_RATE, default 50/s), against the same load without it.
 * docs/operations.md (Retention) reports the figures.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { once } from 'node:events';
import pg from 'pg';
import { Msg } from '../sdk/index.js';
import { seedFinishedStore } from '../test/helpers/finished-store.js';
import { createDatabase } from '../test/services/postgres.js';
import { percentile } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { startBenchPostgres } from './postgres-server.js';
import { progress } from './report.js';

const rows = Number(process.env.RETENTION_BENCH_ROWS ?? 1_000_000);
const loadSeconds = Number(process.env.RETENTION_BENCH_LOAD_SECONDS ?? 60);
const rate = Number(process.env.RETENTION_BENCH_RATE ?? 50);
const workers = Number(process.env.RETENTION_BENCH_WORKERS ?? 8);
const indexes = ['trans_global_status_idx', 'trans_global_type_idx', 'trans_global_create_idx', 'trans_global_finished_idx'];

const queries = [
  'transType=saga',
  'transType=msg',
  'status=needs_attention',
  'status=failed',
  'status=succeed&transType=saga',
  // a one-hour window ten days ago
  `createTimeStart=${Date.now() - 10 * 86_400_000}&createTimeEnd=${Date.now() - 10 * 86_400_000 + 3_600_000}`,
  '',
];

async function main(bench: Bench): Promise<void> {
  const server = await startBenchPostgres(bench, 'concord_retention_');
  const url = await createDatabase(server.url, `${server.prefix}store`);
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  bench.defer(() => pool.end());

  // A coordinator with retention off migrates the store; the seed goes in behind it.
  let node = await bench.startCoordinator({ store: url, env: { CONCORD_RETENTION: '0' } });
  progress(`seeding ${rows} finished transactions and their branches`);
  let t = performance.now();
  // Half of them finished more than 7 days ago: the retention job's work.
  await seedFinishedStore(pool, { rows, spanDays: 14 });
  progress(`seeded in ${((performance.now() - t) / 1000).toFixed(0)} s; ${await sizes(pool)}`);

  const branch = await startBranch();
  bench.defer(() => branch.close());
  const dropped = indexes.map((name) => `drop index ${name}`).join('; ');
  await pool.query(dropped);
  const before = await timeQueries(node.dtm);
  progress(`write cost: ${workers} workers for ${loadSeconds / 2} s without the indexes`);
  const writesBefore = await closedLoop(node.dtm, branch.url, (loadSeconds / 2) * 1000);
  t = performance.now();
  await pool.query(`
    create index trans_global_status_idx on trans_global (status, id);
    create index trans_global_type_idx on trans_global (trans_type, id);
    create index trans_global_create_idx on trans_global (create_time);
    create index trans_global_finished_idx on trans_global (coalesce(finish_time, update_time)) where status in ('succeed', 'failed');
    analyze trans_global;`);
  progress(`migration 0004's indexes built in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const after = await timeQueries(node.dtm);
  progress(`write cost: ${workers} workers for ${loadSeconds / 2} s with the indexes`);
  const writesAfter = await closedLoop(node.dtm, branch.url, (loadSeconds / 2) * 1000);
  process.stdout.write('\n| GET /api/dtmsvr/all?… | p50 before (ms) | p50 after (ms) |\n|---|---:|---:|\n');
  for (const q of queries) {
    const shown = q.startsWith('createTimeStart') ? 'createTimeStart…End (1 h, 10 days ago)' : q || '(no filter)';
    process.stdout.write(`| ${shown} | ${before.get(q)?.toFixed(1)} | ${after.get(q)?.toFixed(1)} |\n`);
  }

  process.stdout.write(
    `\nwrite cost (${workers} workers, submit with wait_result): without the indexes ${throughput(writesBefore)}; with them ${throughput(writesAfter)}\n`,
  );
  progress(`light load without retention for ${loadSeconds} s`);
  const quiet = await lightLoad(node.dtm, branch.url, loadSeconds * 1000);
  await bench.stopCoordinator(node);

  node = await bench.startCoordinator({ store: url, env: { CONCORD_RETENTION_INTERVAL: '1' } });
  progress(`retention (7 days, batches of 500) with the same load for ${loadSeconds} s`);
  t = performance.now();
  const busy = await lightLoad(node.dtm, branch.url, loadSeconds * 1000);
  const seconds = (performance.now() - t) / 1000;
  const metrics = await (await fetch(`${node.url}/api/metrics`)).text();
  const deleted = Number(/concord_retention_deleted_total\{table="trans_global"\} (\d+)/.exec(metrics)?.[1]);
  const branches = /concord_retention_deleted_total\{table="trans_branch_op"\} (\d+)/.exec(metrics)?.[1];
  process.stdout.write(
    `\nretention: ${deleted} transactions (${branches} branches) in ${seconds.toFixed(0)} s = ${(deleted / seconds).toFixed(0)} transactions/s\n` +
      `light load (${rate} messages/s, submit with wait_result): without retention ${describe(quiet)}; with retention ${describe(busy)}\n`,
  );
  progress('waiting for retention to finish');
  t = performance.now();
  for (;;) {
    const left = await pool.query<{ n: number }>(
      `select count(*)::int as n from trans_global where status in ('succeed', 'failed') and coalesce(finish_time, update_time) < now() - interval '7 days'`,
    );
    if (left.rows[0]?.n === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 2_000));
  }
  process.stdout.write(`rest deleted in ${((performance.now() - t) / 1000).toFixed(0)} s; ${await sizes(pool)}\n`);
  await bench.stopCoordinator(node);
}

async function sizes(pool: pg.Pool): Promise<string> {
  const { rows: r } = await pool.query<{ g: string; b: string }>(
    `select pg_size_pretty(pg_total_relation_size('trans_global')) as g, pg_size_pretty(pg_total_relation_size('trans_branch_op')) as b`,
  );
  return `trans_global ${r[0]?.g}, trans_branch_op ${r[0]?.b}`;
}

/** p50 of 15 calls of each query, after 2 unmeasured ones. */
async function timeQueries(dtm: string): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for (const q of queries) {
    const times: number[] = [];
    for (let i = 0; i < 17; i++) {
      const t = performance.now();
      const res = await fetch(`${dtm}/all?${q}`);
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`/all?${q}: ${res.status}`);
      if (i >= 2) times.push(performance.now() - t);
    }
    result.set(
      q,
      percentile(
        times.sort((a, b) => a - b),
        0.5,
      ),
    );
    progress(`/all?${q}: p50 ${result.get(q)?.toFixed(1)} ms`);
  }
  return result;
}

async function startBranch(): Promise<{ url: string; close: () => Promise<void> }> {
  const srv = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"dtm_result":"SUCCESS"}'));
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const address = srv.address() as { port: number };
  return { url: `http://127.0.0.1:${address.port}`, close: () => new Promise((resolve) => srv.close(() => resolve())) };
}

/** An open loop: one-branch messages submitted with wait_result at `rate` per second, each on its own. */
async function lightLoad(dtm: string, branchUrl: string, ms: number): Promise<number[]> {
  const latencies: number[] = [];
  const pending: Promise<void>[] = [];
  const start = Date.now();
  for (let i = 0; Date.now() - start < ms; i++) {
    const wait = start + (i * 1000) / rate - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const t = performance.now();
    pending.push(
      new Msg(dtm, `load-${randomUUID()}`, { waitResult: true })
        .add(`${branchUrl}/TransIn`, { amount: 1 })
        .submit()
        .then(() => void latencies.push(performance.now() - t)),
    );
  }
  await Promise.all(pending);
  return latencies.sort((a, b) => a - b);
}

/** `workers` workers, each submitting one-branch messages with wait_result one after another. */
async function closedLoop(dtm: string, branchUrl: string, ms: number): Promise<{ seconds: number; latencies: number[] }> {
  const latencies: number[] = [];
  const start = performance.now();
  const worker = async () => {
    while (performance.now() - start < ms) {
      const t = performance.now();
      await new Msg(dtm, `write-${randomUUID()}`, { waitResult: true }).add(`${branchUrl}/TransIn`, { amount: 1 }).submit();
      latencies.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  return { seconds: (performance.now() - start) / 1000, latencies: latencies.sort((a, b) => a - b) };
}

function throughput(run: { seconds: number; latencies: number[] }): string {
  return `${(run.latencies.length / run.seconds).toFixed(0)} messages/s, p50 ${percentile(run.latencies, 0.5).toFixed(1)} ms`;
}

function describe(l: number[]): string {
  const f = (q: number) => percentile(l, q).toFixed(1);
  return `${l.length} messages, p50 ${f(0.5)} ms, p99 ${f(0.99)} ms`;
}

await runBench(main);
