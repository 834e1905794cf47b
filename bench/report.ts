/** The benchmark's output: progress lines on stderr, markdown tables on stdout. */
import { availableParallelism, cpus, release, totalmem } from 'node:os';
import type { CoordinatorFigures } from './coordinator-metrics.js';
import type { StoreKind } from './options.js';
import type { CpuSplit } from './proc-stats.js';

export interface Row {
  store: StoreKind;
  concurrency: number;
  msgsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  completed: number;
  errors: number;
  firstError?: string;
  peakRssMiB: number | undefined;
  pgbenchTps: number | undefined;
  cpu: CpuSplit;
  coordinator: CoordinatorFigures;
}

export function progress(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

export function machineLine(postgresVersion: string): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const memory = `${(totalmem() / 1024 ** 3).toFixed(0)} GiB RAM`;
  return `${availableParallelism()} cores (${model}), ${memory}, ${process.platform} ${release()}, Node ${process.version}, ${postgresVersion}`;
}

const fixed = (value: number | undefined, digits: number) =>
  value === undefined || Number.isNaN(value) ? '–' : Number.isFinite(value) ? value.toFixed(digits) : '∞';

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** The main table: throughput, latency, memory, and the pgbench ceiling beside each row. */
export function resultsTable(rows: Row[]): string {
  return table(
    ['store', 'concurrency', 'msgs/s', 'p50 ms', 'p99 ms', 'coordinator peak RSS MB', 'pgbench inserts/s'],
    rows.map((r) => [
      r.store,
      String(r.concurrency),
      fixed(r.msgsPerSecond, 0),
      fixed(r.p50Ms, 1),
      fixed(r.p99Ms, 1),
      fixed(r.peakRssMiB, 0),
      fixed(r.pgbenchTps, 0),
    ]),
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
      String(r.concurrency),
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
  return Math.max(0, cpu.machineBusy - cpu.coordinator - cpu.postgres - cpu.bench);
}

/** The coordinator's own view: group-commit batches and server-side latencies. */
export function coordinatorTable(rows: Row[]): string {
  const batch = (r: Row, kind: string) => {
    const b = r.coordinator.batches.find((x) => x.kind === kind);
    return b === undefined
      ? '–'
      : `${fixed(b.meanSize, 1)} (p90 ≤ ${fixed(b.p90SizeAtMost, 0)}), ${fixed(b.perSecond, 0)}/s, ${fixed(b.meanMs, 1)} ms`;
  };
  return table(
    [
      'store',
      'concurrency',
      'prepare batches: size, rate, time',
      'submit batches',
      'settle batches',
      'HTTP prepare / submit ms',
      'branch call ms',
    ],
    rows.map((r) => [
      r.store,
      String(r.concurrency),
      batch(r, 'prepare'),
      batch(r, 'submit'),
      batch(r, 'settle'),
      `${fixed(r.coordinator.routesMs.prepare, 1)} / ${fixed(r.coordinator.routesMs.submit, 1)}`,
      fixed(r.coordinator.branchCallMs, 1),
    ]),
  );
}
