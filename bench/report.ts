/** The benchmark's output: progress lines on stderr, markdown tables on stdout. */
import { execFileSync } from 'node:child_process';
import { availableParallelism, cpus, release, totalmem } from 'node:os';
import { fixed, table } from './markdown.js';
import { batchTable, latencyTable, loadOf, postgresTable } from './report-profile.js';
import type { Phases } from './closed-loop.js';
import type { CoordinatorFigures } from './coordinator-metrics.js';
import type { BenchOptions, StoreKind } from './options.js';
import type { DatabaseActivity } from './postgres-activity.js';
import { quietPercent, type CpuSplit } from './proc-stats.js';

export interface Row {
  store: StoreKind;
  concurrency: number;
  msgsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Set on an open-loop row (open-loop.ts): messages started on a schedule, latency from the scheduled start. */
  openLoop?: OpenLoopFigures;
  completed: number;
  errors: number;
  firstError?: string;
  /** VmHWM of the coordinator during this row (reset when the row started); undefined when it could not be reset. */
  peakRssMiB: number | undefined;
  /** VmHWM of the coordinator since it started (before the first row: migrations, store start-up). */
  peakRssSinceStartMiB: number | undefined;
  pgbenchTps: number | undefined;
  cpu: CpuSplit;
  coordinator: CoordinatorFigures;
  phasesMs: Phases;
  /** Postgres activity in the service's database and (Postgres store) the coordinator's. */
  postgres: { service: DatabaseActivity | undefined; store: DatabaseActivity | undefined };
}

export interface OpenLoopFigures {
  /** The schedule's rate: BENCH_OPEN_LOOP_FRACTION of the store's best closed-loop msgs/s. */
  targetPerSecond: number;
  p999Ms: number;
  maxMs: number;
  /** Messages scheduled inside the window, and those still running when it closed. */
  scheduled: number;
  outstandingAtEnd: number;
  /** p99 of how late the bench started a message after its scheduled time (the client's own lag). */
  startLagP99Ms: number;
  /** p99 of each step taken alone, as the client saw it. */
  phasesP99Ms: Phases;
}

export function progress(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

/** The commit measured, and whether the coordinator's or SDK's sources differ from it. */
export function codeVersion(): string {
  const git = (args: string[]) => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const dirty = git(['status', '--porcelain', '--', 'coordinator', 'relay', 'sdk', 'schemas']) !== '';
    return `${git(['rev-parse', '--short', 'HEAD'])}${dirty ? ' with uncommitted changes in coordinator/, relay/, sdk/ or schemas/' : ''}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

export function machineLine(postgresVersion: string): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const memory = `${(totalmem() / 1024 ** 3).toFixed(0)} GiB RAM`;
  return `${availableParallelism()} cores (${model}), ${memory}, ${process.platform} ${release()}, Node ${process.version}, ${postgresVersion}`;
}

/** The main table: throughput, latency, memory, and the pgbench ceiling beside each row. */
export function resultsTable(rows: Row[]): string {
  const ceiling = (r: Row) =>
    r.openLoop ? undefined : rows.find((c) => c.store === 'none' && !c.openLoop && c.concurrency === r.concurrency)?.msgsPerSecond;
  return table(
    [
      'store',
      'concurrency',
      'msgs/s',
      'vs null coordinator',
      'p50 ms',
      'p99 ms',
      'coordinator peak RSS MB: row / since start',
      'pgbench inserts/s',
    ],
    rows.map((r) => [
      r.store === 'none' ? 'none (null coordinator)' : r.store,
      loadOf(r),
      fixed(r.msgsPerSecond, 0),
      r.openLoop ? '–' : `${fixed(r.msgsPerSecond / (ceiling(r) ?? NaN), 2)}×`,
      fixed(r.p50Ms, 1),
      fixed(r.p99Ms, 1),
      `${fixed(r.peakRssMiB, 0)} / ${fixed(r.peakRssSinceStartMiB, 0)}`,
      r.openLoop ? '–' : fixed(r.pgbenchTps, 0),
    ]),
  );
}

/**
 * The open-loop rows: the rate asked for and achieved, and the latency from each message's
 * scheduled start (so a queue in the client, the coordinator or Postgres counts).
 */
export function openLoopTable(rows: Row[]): string {
  return table(
    [
      'store',
      'target msgs/s',
      'achieved msgs/s',
      'p50 ms',
      'p99 ms',
      'p99.9 ms',
      'max ms',
      'messages',
      'running at the end',
      'client start lag p99 ms',
      'p99 of each step: prepare / local tx + submit / submit → branch ms',
    ],
    rows.flatMap((r) =>
      r.openLoop
        ? [
            [
              r.store === 'none' ? 'none (null coordinator)' : r.store,
              fixed(r.openLoop.targetPerSecond, 0),
              fixed(r.msgsPerSecond, 0),
              fixed(r.p50Ms, 1),
              fixed(r.p99Ms, 1),
              fixed(r.openLoop.p999Ms, 1),
              fixed(r.openLoop.maxMs, 1),
              String(r.openLoop.scheduled),
              String(r.openLoop.outstandingAtEnd),
              fixed(r.openLoop.startLagP99Ms, 1),
              [r.openLoop.phasesP99Ms.prepare, r.openLoop.phasesP99Ms.localTxSubmit, r.openLoop.phasesP99Ms.branchWait]
                .map((v) => fixed(v, 1))
                .join(' / '),
            ],
          ]
        : [],
    ),
  );
}

/** Where the CPU went during the window, in % of one core. */
export function cpuTable(rows: Row[], cores: number): string {
  return table(
    [
      'store',
      'concurrency',
      'coordinator %',
      'postgres %',
      'bench (client + service) %',
      'other processes %',
      `machine busy % (of ${cores * 100})`,
      'iowait %',
      'CPU ms per msg',
    ],
    rows.map((r) => [
      r.store,
      loadOf(r),
      fixed(r.cpu.coordinator, 0),
      fixed(r.cpu.postgres, 0),
      fixed(r.cpu.bench, 0),
      fixed(otherCpu(r.cpu), 0),
      fixed(r.cpu.machineBusy, 0),
      fixed(r.cpu.machineIowait, 0),
      // coordinator + Postgres + bench, in CPU milliseconds per message
      fixed((10 * (r.cpu.coordinator + r.cpu.postgres + r.cpu.bench)) / r.msgsPerSecond, 2),
    ]),
  );
}

/** CPU of processes outside the benchmark (other jobs on the machine, the kernel's own threads). */
export function otherCpu(cpu: CpuSplit): number {
  return Math.max(0, cpu.machineBusy - cpu.coordinator - cpu.postgres - cpu.broker - cpu.bench);
}

/** The whole markdown document printed on stdout. */
export function renderReport(rows: Row[], options: BenchOptions, postgresVersion: string): string {
  const out = [
    `## Concord two-phase messages, end to end`,
    '',
    `Date: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC  `,
    `Machine: ${machineLine(postgresVersion)}  `,
    `Code: ${codeVersion()}  `,
    `Settings: ${options.warmupSeconds} s warm-up, then ${options.seconds} s measured per row; Postgres with fsync and synchronous_commit on; ` +
      'the bench process (client and branch service), the coordinator and Postgres share the machine.',
    '',
    resultsTable(rows),
    '',
    ...(rows.some((r) => r.openLoop)
      ? [
          options.openLoopRate === undefined
            ? `### Latency at ${fixed(options.openLoopFraction * 100, 0)} % of peak (open loop)`
            : `### Latency at ${fixed(options.openLoopRate, 0)} msgs/s (open loop)`,
          '',
          (options.openLoopRate === undefined
            ? `Messages started on a fixed schedule at ${fixed(options.openLoopFraction * 100, 0)} % of the store's best closed-loop rate above, `
            : `Messages started on a fixed schedule at ${fixed(options.openLoopRate, 0)} msgs/s (BENCH_OPEN_LOOP_RATE), `) +
            `${options.openLoopSeconds} s measured; latency from each message's scheduled start to its branch call.`,
          '',
          openLoopTable(rows),
          '',
        ]
      : []),
    '### CPU during the measured window (% of one core)',
    '',
    cpuTable(rows, availableParallelism()),
    '',
    '### Where a message spends its time (means, ms)',
    '',
    latencyTable(rows),
    '',
    '### Postgres during the measured window',
    '',
    'Sessions: mean number of sessions of each database in each state, sampled from pg_stat_activity every 50 ms.',
    '',
    postgresTable(rows),
    '',
    '### Group commit in the coordinator during the measured window',
    '',
    'Mean requests per store transaction (90th percentile bucket bound), store transactions per second, mean duration of one.',
    '',
    batchTable(rows),
    '',
  ];
  for (const r of rows.filter((x) => otherCpu(x.cpu) > quietPercent)) {
    out.push(
      `- ${r.store} × ${loadOf(r)}: other processes used ${otherCpu(r.cpu).toFixed(0)} % of a core in the window; its figures are low (measured again up to BENCH_BUSY_RETRIES times).`,
    );
  }
  for (const r of rows.filter((x) => x.errors > 0))
    out.push(`- ${r.store} × ${loadOf(r)}: ${r.errors} failed messages, first: ${r.firstError}`);
  return out.join('\n') + '\n';
}
