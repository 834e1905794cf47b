/**
 * Workflow benchmark: bank transfers written as a workflow of two steps (TransOut, then TransIn,
 * each an HTTP call to a service that writes a row and the barrier row in one commit), per second
 * end to end, at several concurrencies. Each of N workers runs one workflow at a time with
 * Workflows.execute and counts it when execute answered (the workflow submitted, so it is
 * finished at the coordinator). A workflow costs prepareWorkflow, two step calls, two
 * registerBranch and a submit: four requests to the coordinator, no call from it.
 *
 *   npm run build && node dist/bench/workflow.js   (BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_CONCURRENCY)
 */
import { randomBytes } from 'node:crypto';
import Fastify from 'fastify';
import pg from 'pg';
import { ensureBarrierTable, fastifyBranch, Workflows, type Workflow } from '../sdk/index.js';
import { createDatabase } from '../test/services/postgres.js';
import { percentile, runWorkers } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { fixed, table } from './markdown.js';
import { loadBenchOptions } from './options.js';
import { startBenchPostgres } from './postgres-server.js';
import { codeVersion, machineLine, progress } from './report.js';

const options = loadBenchOptions(process.env);

interface Row {
  concurrency: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  firstError?: string;
}

/** The two banks' steps: a row and the barrier row in one local transaction each. */
async function startBankService(bench: Bench, pool: pg.Pool): Promise<string> {
  await ensureBarrierTable(pool);
  await pool.query('create table if not exists bench_transfers (id bigserial primary key, gid text not null, kind text not null)');
  const app = Fastify({ logger: false });
  for (const kind of ['out', 'in']) {
    app.post(
      `/Trans${kind === 'out' ? 'Out' : 'In'}`,
      fastifyBranch(async ({ barrier }) => {
        await barrier.run<void, pg.PoolClient>(pool, async (tx) => {
          await tx.query('insert into bench_transfers (gid, kind) values ($1, $2)', [barrier.call.gid, kind]);
        });
      }),
    );
  }
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  bench.defer(() => app.close());
  return url;
}

async function main(bench: Bench): Promise<void> {
  progress(
    `workflow settings: ${JSON.stringify({ seconds: options.seconds, warmup: options.warmupSeconds, concurrency: options.concurrency })}`,
  );
  const postgres = await startBenchPostgres(bench, 'concord_bench_wf_');
  const pool = new pg.Pool({ connectionString: await createDatabase(postgres.url, `${postgres.prefix}service`), max: 64 });
  pool.on('error', () => {}); // a dropped idle connection; the next query reports it anyway
  bench.defer(() => pool.end());
  const bank = await startBankService(bench, pool);
  const coordinator = await bench.startCoordinator({
    store: await createDatabase(postgres.url, `${postgres.prefix}store`),
    env: { CONCORD_LOG_LEVEL: 'warn' },
  });
  progress(`coordinator started, pid ${coordinator.proc.pid}, ${coordinator.url}`);

  // No callback: every run finishes by itself, and retry_interval keeps the coordinator from resuming one that is still running.
  const workflows = new Workflows({ coordinator: coordinator.dtm, retryInterval: 60, signal: bench.signal });
  workflows.register('transfer', async (wf: Workflow, input: { amount: number }) => {
    await wf.callBranch(input, `${bank}/TransOut`);
    await wf.callBranch(input, `${bank}/TransIn`);
  });

  const run = randomBytes(3).toString('hex');
  const rows: Row[] = [];
  for (const concurrency of options.concurrency) {
    bench.checkAborted();
    const result = await runWorkers(
      { concurrency, warmupMs: options.warmupSeconds * 1000, measureMs: options.seconds * 1000, signal: bench.signal },
      async (w, i) => {
        await workflows.execute('transfer', `wf-${run}-${concurrency}-${w}-${i}`, { amount: 1 });
        return { doneAt: performance.now() };
      },
    );
    const row: Row = {
      concurrency,
      perSecond: result.completed / result.seconds,
      p50Ms: percentile(result.latenciesMs, 0.5),
      p99Ms: percentile(result.latenciesMs, 0.99),
      errors: result.errors,
      ...(result.firstError ? { firstError: result.firstError } : {}),
    };
    progress(
      `concurrency ${concurrency}: ${fixed(row.perSecond, 0)} workflows/s, p50 ${fixed(row.p50Ms, 1)} ms, p99 ${fixed(row.p99Ms, 1)} ms`,
    );
    rows.push(row);
  }
  const effects = Number((await pool.query('select count(*) from bench_transfers')).rows[0].count);
  const code = await bench.stopCoordinator(coordinator);
  if (code !== 0) progress(`coordinator exited with ${code}:\n${coordinator.output().slice(-2_000)}`);

  const errors = rows.filter((r) => r.firstError).map((r) => `- concurrency ${r.concurrency}: ${r.errors} errors, first: ${r.firstError}`);
  process.stdout.write(
    [
      '## Workflows: two-step transfers per second',
      '',
      machineLine(postgres.version),
      `Code: ${codeVersion()}. Each workflow: prepareWorkflow, two HTTP steps (row + barrier row each), two progress records, submit.`,
      '',
      table(
        ['workers', 'workflows/s', 'p50 ms', 'p99 ms', 'errors'],
        rows.map((r) => [String(r.concurrency), fixed(r.perSecond, 0), fixed(r.p50Ms, 1), fixed(r.p99Ms, 1), String(r.errors)]),
      ),
      '',
      `Step rows written by the service: ${effects} (two per workflow that finished, warm-up included).`,
      ...errors,
      '',
    ].join('\n'),
  );
}

await runBench(main);
