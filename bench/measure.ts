/**
 * One row of the table: one store kind at one concurrency, against a running coordinator. Starts
 * the branch service and the service's pool, runs the closed loop, and reads the coordinator's
 * metrics, the CPU of every process and the coordinator's peak RSS around the measured window.
 */
import pg from 'pg';
import type { RunningCoordinator } from '../test/helpers/coordinator.js';
import { startBranchService } from './branch-service.js';
import { messageWorkload, percentile, runClosedLoop, type ClosedLoopResult, type Phases } from './closed-loop.js';
import { coordinatorFigures, scrapeMetrics, type Samples } from './coordinator-metrics.js';
import type { StoreKind } from './options.js';
import {
  cpuSnapshot,
  cpuSplit,
  peakRssMiB,
  peakRssSinceStartMiB,
  quietPercent,
  resetPeakRss,
  waitForIdleMachine,
  type CpuSnapshot,
} from './proc-stats.js';
import { runOpenLoop, type OpenLoopResult } from './open-loop.js';
import { watchPostgres, type ActivityWatch, type DatabaseActivity } from './postgres-activity.js';
import { otherCpu, progress, type Row } from './report.js';

export interface MeasureOptions {
  store: StoreKind;
  /** Closed-loop workers; with ratePerSecond, the size of the service's pool. */
  concurrency: number;
  /** Set: an open loop at this many messages per second (open-loop.ts) instead of the closed loop. */
  ratePerSecond?: number | undefined;
  coordinator: RunningCoordinator;
  serviceDbUrl: string;
  /** A superuser URL of the server, to watch pg_stat_activity, and the store's database (Postgres store only). */
  adminUrl: string;
  storeDbName: string | undefined;
  /** The Postgres server's postmaster, when it runs on this machine. */
  postmasterPid: number | undefined;
  warmupSeconds: number;
  seconds: number;
  /** Most seconds to wait for an idle machine first. */
  idleWaitSeconds: number;
  signal: AbortSignal;
  /** Also called as the measured window opens and closes, after the row's own snapshots (e.g. for the store's table counters). */
  onWindow?: (edge: 'start' | 'end') => Promise<void>;
}

/** Waits up to `seconds` for an idle machine before a measurement, and says so when it stays busy. */
export async function waitForQuiet(seconds: number, signal: AbortSignal): Promise<void> {
  if (seconds <= 0) return;
  const busy = await waitForIdleMachine(quietPercent, seconds * 1000, signal);
  if (busy > quietPercent) progress(`the machine is still busy (${busy.toFixed(0)} % of a core) after ${seconds} s; measuring anyway`);
}

export async function measureConfiguration(o: MeasureOptions): Promise<Omit<Row, 'pgbenchTps'>> {
  const { store, concurrency, coordinator } = o;
  await waitForQuiet(o.idleWaitSeconds, o.signal);
  const pid = coordinator.proc.pid ?? 0;
  // One connection per worker (a message holds one for its local transaction), 4 to 64.
  const isOpenLoop = o.ratePerSecond !== undefined;
  const pool = new pg.Pool({
    connectionString: o.serviceDbUrl,
    max: Math.min(64, Math.max(concurrency, 4)),
    // The open loop keeps its connections (see below); pg's default closes one idle for 10 s.
    ...(isOpenLoop ? { idleTimeoutMillis: 0 } : {}),
  });
  // A connection dropped while idle, or while checked out between two statements of the SDK's
  // local transaction, emits 'error' on its client; the next query reports it anyway.
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  // The open loop's bursts would otherwise open connections (a Postgres backend each) inside the
  // window, a stall of the bench's own making: open them all first.
  if (isOpenLoop) {
    const clients = await Promise.all(Array.from({ length: pool.options.max }, () => pool.connect()));
    for (const client of clients) client.release();
  }
  const service = await startBranchService(pool);
  const perConfigPeak = resetPeakRss(pid);
  const databases = { service: new URL(o.serviceDbUrl).pathname.slice(1), store: o.storeDbName };
  let before: { cpu: CpuSnapshot; metrics: Samples; watch: ActivityWatch } | undefined;
  let after: { cpu: CpuSnapshot; metrics: Samples; activity: Map<string, DatabaseActivity> } | undefined;
  const label = o.ratePerSecond === undefined ? `${store} × ${concurrency}` : `${store} open loop at ${o.ratePerSecond.toFixed(0)}/s`;
  progress(`${label}: ${o.warmupSeconds} s warm-up, ${o.seconds} s measured`);
  try {
    const loop = {
      warmupMs: o.warmupSeconds * 1000,
      measureMs: o.seconds * 1000,
      signal: o.signal,
      async onWindow(edge: 'start' | 'end') {
        if (edge === 'start') {
          const metrics = await scrapeMetrics(coordinator.url);
          const watch = await watchPostgres(o.adminUrl, [databases.service, ...(databases.store ? [databases.store] : [])]);
          before = { metrics, watch, cpu: cpuSnapshot(pid, o.postmasterPid) };
        } else {
          const cpu = cpuSnapshot(pid, o.postmasterPid);
          const activity = (await before?.watch.stop()) ?? new Map<string, DatabaseActivity>();
          after = { cpu, activity, metrics: await scrapeMetrics(coordinator.url) };
        }
        await o.onWindow?.(edge);
      },
    };
    const target = { dtm: coordinator.dtm, service, pool };
    let result: ClosedLoopResult & Partial<OpenLoopResult> & { phasesP99Ms?: Phases };
    if (o.ratePerSecond === undefined) {
      result = await runClosedLoop({ ...target, ...loop, concurrency });
    } else {
      const workload = messageWorkload(target);
      const open = await runOpenLoop({ ...loop, ratePerSecond: o.ratePerSecond }, (i) => workload.send(0, i), workload.counted);
      result = { ...open, phasesMs: workload.phasesMs(open.latenciesMs.length), phasesP99Ms: workload.phaseQuantileMs(0.99) };
    }
    if (o.signal.aborted) throw o.signal.reason;
    if (coordinator.proc.exitCode !== null) {
      throw new Error(`the coordinator exited during the run:\n${coordinator.output().slice(-2_000)}`);
    }
    if (before === undefined || after === undefined) throw new Error('the measurement window never closed');
    const row = {
      store,
      concurrency,
      msgsPerSecond: result.completed / result.seconds,
      p50Ms: percentile(result.latenciesMs, 0.5),
      p99Ms: percentile(result.latenciesMs, 0.99),
      ...(o.ratePerSecond === undefined
        ? {}
        : {
            openLoop: {
              targetPerSecond: o.ratePerSecond,
              p999Ms: percentile(result.latenciesMs, 0.999),
              maxMs: result.latenciesMs.at(-1) ?? NaN,
              scheduled: result.scheduled ?? 0,
              outstandingAtEnd: result.outstandingAtEnd ?? 0,
              startLagP99Ms: percentile(result.startLagsMs ?? [], 0.99),
              phasesP99Ms: result.phasesP99Ms ?? { prepare: NaN, localTxSubmit: NaN, branchWait: NaN },
            },
          }),
      completed: result.completed,
      errors: result.errors,
      ...(result.firstError ? { firstError: result.firstError } : {}),
      peakRssMiB: perConfigPeak ? peakRssMiB(pid) : undefined,
      peakRssSinceStartMiB: peakRssSinceStartMiB(pid),
      cpu: cpuSplit(before.cpu, after.cpu),
      coordinator: coordinatorFigures(before.metrics, after.metrics, result.seconds),
      phasesMs: result.phasesMs,
      postgres: {
        service: after.activity.get(databases.service),
        store: databases.store === undefined ? undefined : after.activity.get(databases.store),
      },
    };
    const { cpu } = row;
    progress(
      `${label}: ${row.msgsPerSecond.toFixed(0)} msgs/s, p50 ${row.p50Ms.toFixed(1)} ms, p99 ${row.p99Ms.toFixed(1)} ms, ` +
        (row.openLoop ? `p99.9 ${row.openLoop.p999Ms.toFixed(1)} ms, ` : '') +
        `max ${(result.latenciesMs.at(-1) ?? NaN).toFixed(0)} ms, ${row.errors} errors; CPU % coordinator ${cpu.coordinator.toFixed(0)}, postgres ${cpu.postgres.toFixed(0)}, ` +
        `bench ${cpu.bench.toFixed(0)}, other ${otherCpu(cpu).toFixed(0)}; ` +
        `peak RSS ${row.peakRssMiB?.toFixed(0) ?? '?'} MiB (since start ${row.peakRssSinceStartMiB?.toFixed(0)})` +
        (service.unexpected > 0 ? `; ${service.unexpected} unexpected branch calls` : ''),
    );
    return row;
  } finally {
    if (after === undefined) await before?.watch.stop().catch(() => undefined); // interrupted inside the window
    await service.close();
    await pool.end();
  }
}
