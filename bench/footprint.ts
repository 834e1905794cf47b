/**
 * Footprint bench (part of `npm run bench`): `npm start` on the embedded store, as a user runs it
 * first (a new directory) and then again (the same directory). Prints the time until the API
 * answers and the coordinator's RSS once it does, then its peak after a burst of messages.
 *
 * BENCH_FOOTPRINT_MESSAGES (default 2000): two-phase messages (prepare + submit, one HTTP branch) in the burst.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { runBench, type Bench } from './lifecycle.js';
import { table } from './markdown.js';
import { progress } from './report.js';

const messages = Number(process.env.BENCH_FOOTPRINT_MESSAGES ?? 2000);
const root = new URL('..', import.meta.url).pathname.replace(/dist\/$/, '');

interface Reading {
  run: string;
  readyMs: number;
  rssMiB: number;
  peakMiB?: number;
}

/** VmRSS or VmHWM of a process, MiB. */
function memory(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(field));
  return Math.round(Number(line?.split(/\s+/)[1] ?? 0) / 1024);
}

/** `npm start` with the store and port given; resolves with the coordinator's pid once /api/ping answers. */
async function start(bench: Bench, store: string, port: number): Promise<{ child: ChildProcess; pid: number; readyMs: number }> {
  const started = performance.now();
  // The gRPC API on, as by default, on a port beside the HTTP one: the default may be taken on a shared machine.
  const args = ['--store', store, '--port', String(port), '--grpc-port', String(port + 1), '--log-level', 'warn'];
  const child = spawn('npm', ['start', '--silent', '--', ...args], {
    cwd: root,
    stdio: 'ignore',
    detached: true, // its own group: npm, its shell and node are stopped together
  });
  bench.defer(() => stop(child));
  for (;;) {
    bench.checkAborted();
    const answered = await fetch(`http://127.0.0.1:${port}/api/ping`).then(
      (r) => r.ok,
      () => false,
    );
    if (answered) break;
    if (child.exitCode !== null) throw new Error(`npm start exited with ${child.exitCode}`);
    await delay(20);
  }
  const readyMs = performance.now() - started;
  return { child, pid: coordinatorPid(child.pid!), readyMs };
}

/** npm runs a shell that runs node: the node process is the deepest descendant. */
function coordinatorPid(pid: number): number {
  for (;;) {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    if (children.length === 0) return pid;
    pid = Number(children[0]);
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  process.kill(-child.pid!, 'SIGTERM');
  await exited;
}

/** Prepare + submit of `count` messages, 16 at a time, each with one branch on a local HTTP server. */
async function burst(port: number, count: number): Promise<void> {
  const branch = createServer((_req, res) => res.end('{"dtm_result":"SUCCESS"}'));
  await new Promise<void>((resolve) => branch.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(branch.address() as { port: number }).port}/branch`;
  const post = async (path: string, body: object) => {
    const r = await fetch(`http://127.0.0.1:${port}/api/dtmsvr/${path}`, { method: 'POST', body: JSON.stringify(body) });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  };
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const gid = `footprint-${process.pid}-${next++}`;
      const steps = [{ action: url }];
      await post('prepare', { gid, trans_type: 'msg', steps, payloads: ['{}'], query_prepared: url });
      await post('submit', { gid, trans_type: 'msg', steps, payloads: ['{}'] });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  branch.close();
}

async function main(bench: Bench): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'concord-footprint-'));
  bench.defer(() => rm(dir, { recursive: true, force: true, maxRetries: 5 }));
  const store = join(dir, 'store');
  const readings: Reading[] = [];
  for (const run of ['first start (new directory)', 'second start (same directory)']) {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    progress(`footprint: ${run}`);
    const { child, pid, readyMs } = await start(bench, store, port);
    await delay(1_000); // what a start leaves behind settles
    const reading: Reading = { run, readyMs, rssMiB: memory(pid, 'VmRSS') };
    if (run.startsWith('second')) {
      progress(`footprint: ${messages} messages`);
      await burst(port, messages);
      reading.peakMiB = memory(pid, 'VmHWM');
    }
    readings.push(reading);
    await stop(child);
  }
  console.log(`\n### Embedded store footprint: \`npm start\`, PGlite store; burst of ${messages} two-phase messages, 16 at a time\n`);
  console.log(
    table(
      ['run', 'ready ms', 'RSS MiB when ready', `peak RSS MiB after ${messages} messages`],
      readings.map((r) => [r.run, r.readyMs.toFixed(0), String(r.rssMiB), r.peakMiB === undefined ? '–' : String(r.peakMiB)]),
    ),
  );
}

await runBench(main);
