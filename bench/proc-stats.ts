/**
 * Linux /proc readings: CPU time per process group (coordinator, Postgres, a message broker, the
 * bench process itself, the whole machine) and a process's peak resident set size.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';

/** Clock ticks per second of the utime/stime fields (USER_HZ, 100 on Linux). */
const ticksPerSecond = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcStat {
  ppid: number;
  /** utime + stime, seconds. */
  own: number;
  /** cutime + cstime: CPU of children this process has reaped, seconds. */
  reaped: number;
}

function readStat(pid: number | 'self' | `${number}/task/${string}`): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // gone
  }
  // The command name (field 2) may hold spaces and parentheses; the fields after its last ')' do not.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const field = (n: number) => Number(fields[n - 3]); // n is the 1-based field number of proc(5)
  return { ppid: field(4), own: (field(14) + field(15)) / ticksPerSecond, reaped: (field(16) + field(17)) / ticksPerSecond };
}

/** CPU seconds (user + system) a process has used so far; undefined once it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  return readStat(pid)?.own;
}

/** The postmaster listening on `port` (matched on its `-c port=N` argument), if it runs here. */
export function findPostmaster(port: number): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (argv[0]?.endsWith('/postgres') && argv.includes(`port=${port}`)) return Number(entry);
  }
  return undefined;
}

/**
 * CPU seconds of a JVM's JIT compiler threads (C1 and C2). A fresh JVM compiles its hot paths
 * under load for minutes, which a short measurement should be able to tell apart from the work.
 */
function jitSeconds(pid: number): number {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0;
  }
  let seconds = 0;
  for (const tid of tasks) {
    let name: string;
    try {
      name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8');
    } catch {
      continue;
    }
    if (/^C[12] CompilerThre/.test(name)) seconds += readStat(`${pid}/task/${tid}`)?.own ?? 0;
  }
  return seconds;
}

/** The process listening on TCP `port` of this machine (e.g. a Kafka broker), if one is visible here. */
export function findListener(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    // sl local_address rem_address st ... inode; the port is the hex after the last ':', 0A is LISTEN
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const local = fields[1] ?? '';
      if (fields[3] === '0A' && parseInt(local.slice(local.lastIndexOf(':') + 1), 16) === port && fields[9]) inodes.add(fields[9]);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${entry}/fd/${fd}`));
        if (match?.[1] !== undefined && inodes.has(match[1])) return Number(entry);
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined;
}

function childrenOf(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (readStat(Number(entry))?.ppid === parent) pids.push(Number(entry));
  }
  return pids;
}

export interface CpuSnapshot {
  at: number;
  coordinator: number;
  /** Per live Postgres process, and what the postmaster reaped from exited ones. */
  postgres: Map<number, number>;
  postgresReaped: number;
  /** The message broker's process (0 when there is none to measure), and the part of it that its JIT compiler threads used. */
  broker: number;
  brokerJit: number;
  bench: number;
  /** Whole machine, seconds summed over all cores: busy (not idle, not iowait) and iowait. */
  machineBusy: number;
  machineIowait: number;
}

export function cpuSnapshot(coordinatorPid: number, postmasterPid: number | undefined, brokerPid?: number): CpuSnapshot {
  const postgres = new Map<number, number>();
  let postgresReaped = 0;
  if (postmasterPid !== undefined) {
    const postmaster = readStat(postmasterPid);
    postgresReaped = postmaster?.reaped ?? 0;
    for (const pid of [postmasterPid, ...childrenOf(postmasterPid)]) {
      const stat = readStat(pid);
      if (stat) postgres.set(pid, stat.own);
    }
  }
  // cpu  user nice system idle iowait irq softirq steal ...
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = cpu[3] ?? 0;
  const iowait = cpu[4] ?? 0;
  return {
    at: performance.now(),
    coordinator: readStat(coordinatorPid)?.own ?? 0,
    postgres,
    postgresReaped,
    broker: brokerPid === undefined ? 0 : (readStat(brokerPid)?.own ?? 0),
    brokerJit: brokerPid === undefined ? 0 : jitSeconds(brokerPid),
    bench: readStat('self')?.own ?? 0,
    machineBusy: (total - idle - iowait) / ticksPerSecond,
    machineIowait: iowait / ticksPerSecond,
  };
}

/** CPU used between two snapshots, as a percentage of one core (200 % = both cores of a 2-core box). */
export interface CpuSplit {
  coordinator: number;
  postgres: number;
  broker: number;
  /** Part of `broker`: its JIT compiler (a JVM's warm-up). */
  brokerJit: number;
  bench: number;
  machineBusy: number;
  machineIowait: number;
}

export function cpuSplit(before: CpuSnapshot, after: CpuSnapshot): CpuSplit {
  const wall = (after.at - before.at) / 1000;
  const pct = (seconds: number) => (100 * seconds) / wall;
  // A backend that exited in between shows up in the postmaster's reaped time with all its CPU,
  // including what it had used before the window; take that part back out.
  let postgres = after.postgresReaped - before.postgresReaped;
  for (const [pid, seconds] of after.postgres) postgres += seconds - (before.postgres.get(pid) ?? 0);
  for (const [pid, seconds] of before.postgres) if (!after.postgres.has(pid)) postgres -= seconds;
  return {
    coordinator: pct(after.coordinator - before.coordinator),
    postgres: pct(postgres),
    broker: pct(after.broker - before.broker),
    brokerJit: pct(after.brokerJit - before.brokerJit),
    bench: pct(after.bench - before.bench),
    machineBusy: pct(after.machineBusy - before.machineBusy),
    machineIowait: pct(after.machineIowait - before.machineIowait),
  };
}

/** VmHWM (peak resident set size) of a process, in MiB. */
export function peakRssMiB(pid: number): number | undefined {
  try {
    const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match?.[1] === undefined ? undefined : Number(match[1]) / 1024;
  } catch {
    return undefined;
  }
}

/** The highest VmHWM seen before the last reset, per pid. */
const peakBeforeReset = new Map<number, number>();

/** Peak RSS since the process started, in MiB, across resets of VmHWM. */
export function peakRssSinceStartMiB(pid: number): number | undefined {
  const now = peakRssMiB(pid);
  const earlier = peakBeforeReset.get(pid);
  return now === undefined ? earlier : Math.max(now, earlier ?? 0);
}

/**
 * Resets a process's VmHWM to its current RSS (proc(5), clear_refs value 5), so the next reading
 * is the peak of one configuration. False when not allowed (another user's process, not root).
 */
export function resetPeakRss(pid: number): boolean {
  peakBeforeReset.set(pid, peakRssSinceStartMiB(pid) ?? 0);
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

function machineBusySeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  return (cpu.slice(0, 8).reduce((a, b) => a + b, 0) - (cpu[3] ?? 0) - (cpu[4] ?? 0)) / ticksPerSecond;
}

/** CPU (% of one core) that other processes may use while the machine counts as quiet. */
export const quietPercent = 15;

/**
 * Waits until the machine is idle (under `maxBusyPercent` of one core over a second), at most
 * `timeoutMs`, so that another job on a shared machine does not skew a measurement. Returns the
 * busy percentage last seen.
 */
export async function waitForIdleMachine(maxBusyPercent: number, timeoutMs: number, signal?: AbortSignal): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const before = machineBusySeconds();
    await delay(1_000, undefined, { signal }).catch(() => undefined);
    const busy = 100 * (machineBusySeconds() - before);
    if (busy <= maxBusyPercent || performance.now() >= deadline || signal?.aborted) return busy;
  }
}
