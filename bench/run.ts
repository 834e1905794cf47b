/**
 * `npm run bench`: two-phase messages per second end to end, for each store kind and concurrency,
 * beside pgbench's insert rate on the same Postgres. Progress goes to stderr, the tables to stdout.
 * Everything it starts (Postgres, coordinators, pgbench) is stopped at the end, on failure and on
 * Ctrl-C. docs/benchmarks.md describes the workload and the knobs.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ensureBarrierTable } from '../sdk/index.js';
import type { RunningCoordinator } from '../test/helpers/coordinator.js';
import { createDatabase, pgBinDir } from '../test/services/postgres.js';
import { freePort } from '../test/services/supervised-process.js';
import { businessTableDdl } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { measureConfiguration } from './measure.js';
import { loadBenchOptions, type StoreKind } from './options.js';
import { preparePgbench } from './pgbench.js';
import { startBenchPostgres } from './postgres-server.js';
import { quietPercent, waitForIdleMachine } from './proc-stats.js';
import { otherCpu, progress, renderReport, type Row } from './report.js';

const options = loadBenchOptions(process.env);

async function main(bench: Bench): Promise<void> {
  progress(`settings: ${JSON.stringify(options)}`);
  const server = await startBenchPostgres(bench, 'concord_bench_');
  const { prefix } = server;

  const serviceDbUrl = await createDatabase(server.url, `${prefix}service`);
  const setupPool = new pg.Pool({ connectionString: serviceDbUrl, max: 1 });
  await ensureBarrierTable(setupPool);
  await setupPool.query(businessTableDdl);
  await setupPool.end();

  const ceilings = new Map<number, number>();
  if (options.pgbench) {
    const pgbench = await preparePgbench(await pgBinDir(), await createDatabase(server.url, `${prefix}pgbench`));
    bench.defer(() => pgbench.close());
    for (const clients of options.concurrency) {
      bench.checkAborted();
      if (options.idleWaitSeconds > 0) await waitForIdleMachine(quietPercent, options.idleWaitSeconds * 1000, bench.signal);
      progress(`pgbench: ${clients} clients for ${options.seconds} s`);
      const tps = await pgbench.run(clients, options.seconds, bench.signal);
      ceilings.set(clients, tps);
      progress(`pgbench: ${clients} clients: ${tps.toFixed(0)} inserts/s`);
    }
  }

  const rows: Row[] = [];
  for (const store of options.stores) {
    bench.checkAborted();
    const coordinator = await startFreshCoordinator(bench, store, server.url, prefix);
    const measure = (concurrency: number, ratePerSecond?: number, seconds = options.seconds) =>
      measureConfiguration({
        store,
        concurrency,
        ratePerSecond,
        coordinator,
        serviceDbUrl,
        adminUrl: server.url,
        storeDbName: store === 'postgres' ? `${prefix}store` : undefined,
        postmasterPid: server.postmasterPid,
        warmupSeconds: options.warmupSeconds,
        seconds,
        idleWaitSeconds: options.idleWaitSeconds,
        signal: bench.signal,
      });
    // Another job that started during the window took CPU from us: measure again (while waiting helps).
    const measureQuietly = async (...args: Parameters<typeof measure>) => {
      let row = await measure(...args);
      for (let retry = 1; retry <= options.busyRetries && otherCpu(row.cpu) > quietPercent; retry++) {
        progress(
          `other processes used ${otherCpu(row.cpu).toFixed(0)} % of a core during the window; measuring again (${retry}/${options.busyRetries})`,
        );
        row = await measure(...args);
      }
      return row;
    };
    const closed: Row[] = [];
    for (const concurrency of options.concurrency) {
      bench.checkAborted();
      const row = await measureQuietly(concurrency);
      closed.push({ ...row, pgbenchTps: ceilings.get(concurrency) });
    }
    rows.push(...closed);
    // The tail at a load the store carries with room to spare: an open loop at a fraction of its peak.
    const rate = options.openLoopRate ?? Math.max(...closed.map((r) => r.msgsPerSecond)) * options.openLoopFraction;
    if (options.openLoopSeconds > 0 && rate > 0) {
      bench.checkAborted();
      const row = await measureQuietly(64, rate, options.openLoopSeconds);
      rows.push({ ...row, pgbenchTps: undefined });
    }
    const code = await bench.stopCoordinator(coordinator);
    if (code !== 0) progress(`coordinator (${store}) exited with ${code}:\n${coordinator.output().slice(-2_000)}`);
  }

  process.stdout.write(renderReport(rows, options, server.version));
}

async function startFreshCoordinator(bench: Bench, store: StoreKind, adminUrl: string, prefix: string): Promise<RunningCoordinator> {
  if (store === 'none') return startNullCoordinator(bench);
  let location: string;
  if (store === 'postgres') {
    location = await createDatabase(adminUrl, `${prefix}store`);
  } else {
    location = await mkdtemp(join(tmpdir(), 'concord-bench-pglite-'));
    const dir = location;
    bench.defer(() => rm(dir, { recursive: true, force: true }));
  }
  const coordinator = await bench.startCoordinator({ store: location, env: { CONCORD_LOG_LEVEL: 'warn' } });
  progress(`coordinator (${store} store) started, pid ${coordinator.proc.pid}, ${coordinator.url}`);
  return coordinator;
}

/** bench/null-coordinator.ts as a process, shaped as a running coordinator for measureConfiguration. */
async function startNullCoordinator(bench: Bench): Promise<RunningCoordinator> {
  const port = await freePort();
  const proc = spawn(process.execPath, [fileURLToPath(new URL('null-coordinator.js', import.meta.url)), String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('listening')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`the null coordinator exited with ${code}: ${output}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const coordinator: RunningCoordinator = {
    url,
    dtm: `${url}/api/dtmsvr`,
    port,
    proc,
    output: () => output,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null) return proc.exitCode;
      const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
      proc.kill(signal);
      return exited;
    },
  };
  bench.defer(() => coordinator.stop());
  progress(`null coordinator started, pid ${proc.pid}, ${url}`);
  return coordinator;
}

await runBench(main);
