/**
 * `npm run bench`: two-phase messages per second end to end, for each store kind and concurrency,
 * beside pgbench's insert rate on the same Postgres. Progress goes to stderr, the tables to stdout.
 * Everything it starts (Postgres, coordinators, pgbench) is stopped at the end, on failure and on
 * Ctrl-C. docs/benchmarks.md describes the workload and the knobs.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ensureBarrierTable } from '../sdk/index.js';
import { startCoordinator, type RunningCoordinator } from '../test/helpers/coordinator.js';
import { createDatabase, dropDatabases, pgBinDir, randomDatabaseName, startPostgres } from '../test/services/postgres.js';
import { businessTableDdl } from './closed-loop.js';
import { measureConfiguration } from './measure.js';
import { loadBenchOptions, type StoreKind } from './options.js';
import { preparePgbench } from './pgbench.js';
import { findPostmaster, quietPercent, waitForIdleMachine } from './proc-stats.js';
import { otherCpu, progress, renderReport, type Row } from './report.js';

const options = loadBenchOptions(process.env);
const abort = new AbortController();
/** Undone in reverse order at the end, whatever happened. */
const cleanups: (() => Promise<unknown>)[] = [];
const children = new Set<RunningCoordinator>();

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (abort.signal.aborted) process.exit(130); // a second Ctrl-C: the exit handlers below still kill the children
    progress(`${signal}: stopping`);
    abort.abort(new Error(`interrupted by ${signal}`));
  });
}
// Last resort (process.exit, an uncaught error): a coordinator must not outlive us.
process.on('exit', () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
});

function checkAborted(): void {
  if (abort.signal.aborted) throw abort.signal.reason;
}

async function main(): Promise<void> {
  progress(`settings: ${JSON.stringify(options)}`);
  const started = Date.now();
  const server = await startPostgres({ durable: true });
  cleanups.push(() => server.stop());
  const prefix = randomDatabaseName('concord_bench_') + '_';
  // A server of CONCORD_TEST_PG_URL outlives us: drop our databases there (a throwaway one just goes).
  if (process.env.CONCORD_TEST_PG_URL) cleanups.push(() => dropDatabases(server.url, prefix));
  const postmasterPid = findPostmaster(Number(new URL(server.url).port));
  const postgresVersion = await scalar(server.url, 'select version()');
  progress(`Postgres ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${postgresVersion}`);
  if (postmasterPid === undefined) progress('Postgres runs elsewhere (container or CONCORD_TEST_PG_URL): its CPU is not measured');
  progress(`synchronous_commit=${await scalar(server.url, 'show synchronous_commit')} fsync=${await scalar(server.url, 'show fsync')}`);

  const serviceDbUrl = await createDatabase(server.url, `${prefix}service`);
  const setupPool = new pg.Pool({ connectionString: serviceDbUrl, max: 1 });
  await ensureBarrierTable(setupPool);
  await setupPool.query(businessTableDdl);
  await setupPool.end();

  const ceilings = new Map<number, number>();
  if (options.pgbench) {
    const pgbench = await preparePgbench(await pgBinDir(), await createDatabase(server.url, `${prefix}pgbench`));
    cleanups.push(() => pgbench.close());
    for (const clients of options.concurrency) {
      checkAborted();
      if (options.idleWaitSeconds > 0) await waitForIdleMachine(quietPercent, options.idleWaitSeconds * 1000, abort.signal);
      progress(`pgbench: ${clients} clients for ${options.seconds} s`);
      const tps = await pgbench.run(clients, options.seconds, abort.signal);
      ceilings.set(clients, tps);
      progress(`pgbench: ${clients} clients: ${tps.toFixed(0)} inserts/s`);
    }
  }

  const rows: Row[] = [];
  for (const store of options.stores) {
    checkAborted();
    const coordinator = await startFreshCoordinator(store, server.url, prefix);
    for (const concurrency of options.concurrency) {
      checkAborted();
      const measure = () =>
        measureConfiguration({
          store,
          concurrency,
          coordinator,
          serviceDbUrl,
          adminUrl: server.url,
          storeDbName: store === 'postgres' ? `${prefix}store` : undefined,
          postmasterPid,
          warmupSeconds: options.warmupSeconds,
          seconds: options.seconds,
          idleWaitSeconds: options.idleWaitSeconds,
          signal: abort.signal,
        });
      let row = await measure();
      // Another job that started during the window took CPU from us: measure again (while waiting helps).
      for (let retry = 1; retry <= options.busyRetries && otherCpu(row.cpu) > quietPercent; retry++) {
        progress(
          `other processes used ${otherCpu(row.cpu).toFixed(0)} % of a core during the window; measuring again (${retry}/${options.busyRetries})`,
        );
        row = await measure();
      }
      rows.push({ ...row, pgbenchTps: ceilings.get(concurrency) });
    }
    const code = await stopCoordinator(coordinator);
    if (code !== 0) progress(`coordinator (${store}) exited with ${code}:\n${coordinator.output().slice(-2_000)}`);
  }

  process.stdout.write(renderReport(rows, options, postgresVersion));
}

async function startFreshCoordinator(store: StoreKind, adminUrl: string, prefix: string): Promise<RunningCoordinator> {
  let location: string;
  if (store === 'postgres') {
    location = await createDatabase(adminUrl, `${prefix}store`);
  } else {
    location = await mkdtemp(join(tmpdir(), 'concord-bench-pglite-'));
    const dir = location;
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
  }
  const coordinator = await startCoordinator({ store: location, env: { CONCORD_LOG_LEVEL: 'warn' } });
  children.add(coordinator);
  cleanups.push(() => stopCoordinator(coordinator));
  progress(`coordinator (${store} store) started, pid ${coordinator.proc.pid}, ${coordinator.url}`);
  return coordinator;
}

/** SIGTERM (a graceful drain), then SIGKILL if it is still there after 15 s. */
async function stopCoordinator(coordinator: RunningCoordinator): Promise<number | null> {
  // After Ctrl-C there is nothing to drain for: do not wait long for a graceful exit.
  const patienceMs = abort.signal.aborted ? 3_000 : 15_000;
  const killer = setTimeout(() => {
    progress(
      `the coordinator did not exit within ${patienceMs / 1000} s of SIGTERM; killing it. Its last output:\n${coordinator.output().slice(-1_500)}`,
    );
    coordinator.proc.kill('SIGKILL');
  }, patienceMs);
  try {
    return await coordinator.stop();
  } finally {
    clearTimeout(killer);
    children.delete(coordinator);
  }
}

async function scalar(url: string, text: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<Record<string, string>>(text);
    return String(Object.values(rows[0] ?? {})[0] ?? '');
  } finally {
    await client.end();
  }
}

async function cleanUp(): Promise<void> {
  for (const undo of cleanups.reverse()) {
    try {
      await undo();
    } catch (err) {
      progress(`cleanup step failed: ${(err as Error).message}`);
    }
  }
}

let exitCode = 0;
try {
  await main();
} catch (err) {
  exitCode = abort.signal.aborted ? 130 : 1;
  progress(abort.signal.aborted ? 'interrupted' : `failed: ${(err as Error).stack ?? String(err)}`);
} finally {
  await cleanUp();
}
process.exit(exitCode);
