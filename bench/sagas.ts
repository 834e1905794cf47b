/**
 * Saga benchmark (part of `npm run bench`): three-step sagas per second end to end, with HTTP
 * steps and with Kafka steps, at several concurrencies. Each of N workers submits one saga at a
 * time with wait_result (the coordinator answers once the saga ended) and counts it at the 200.
 * Afterwards every saga's effects are counted in the service's database and a sample is queried
 * at the coordinator. Progress goes to stderr, the tables to stdout; docs/benchmarks.md describes
 * the workload and the knobs.
 */
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import pg from 'pg';
import { CoordinatorClient, Saga } from '../sdk/index.js';
import type { RunningCoordinator } from '../test/helpers/coordinator.js';
import { startKafka } from '../test/services/kafka.js';
import { createDatabase } from '../test/services/postgres.js';
import { percentile, runWorkers } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { fixed, table } from './markdown.js';
import { loadSagaBenchOptions, type SagaStepKind } from './options.js';
import { watchPostgres, type ActivityWatch, type DatabaseActivity } from './postgres-activity.js';
import { startBenchPostgres, type BenchPostgres } from './postgres-server.js';
import { cpuSnapshot, cpuSplit, findListener, quietPercent, type CpuSnapshot, type CpuSplit } from './proc-stats.js';
import { waitForQuiet } from './measure.js';
import { codeVersion, machineLine, otherCpu, progress } from './report.js';
import {
  countEffects,
  prepareEffects,
  sagaSteps,
  startSagaParticipants,
  type EffectCounts,
  type SagaParticipants,
} from './saga-participants.js';

const options = loadSagaBenchOptions(process.env);
/** The coordinator answers a wait_result submit after at most its waitResultTimeout (30 s by default). */
const submitTimeoutMs = 40_000;
/** Sagas queried at the coordinator after each kind's rows, besides every one that failed. */
const sampleSize = 20;

interface SagaRow {
  steps: SagaStepKind;
  concurrency: number;
  sagasPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  firstError?: string;
  cpu: CpuSplit;
  /** Commits in the window per counted saga: the coordinator's store, the services' database (pg_stat_database). */
  storeCommitsPerSaga: number;
  serviceCommitsPerSaga: number;
}

interface Verification {
  steps: SagaStepKind;
  /** Submits answered 200 (warm-up and the window's tail included). */
  succeeded: number;
  failed: number;
  effects: EffectCounts;
  /** Status at the coordinator's query API of a sample of the succeeded sagas and of every failed one (at most 20 of those). */
  queried: number;
  notSucceeded: string[];
}

/** One kind of steps against its own coordinator: the kind's rows and their check. */
interface KindRun {
  bench: Bench;
  kind: SagaStepKind;
  coordinator: RunningCoordinator;
  participants: SagaParticipants;
  postgres: BenchPostgres;
  /** Database names of the coordinator's store and of the services. */
  storeDb: string;
  serviceDb: string;
  /** The Kafka broker's process, when it runs on this machine (the Kafka run only). */
  brokerPid: number | undefined;
  gidPrefix: string;
  succeeded: string[];
  failed: string[];
  /** Measurements so far: each one's gids are new (a re-sent gid would answer at once, as a duplicate submit). */
  measurements: number;
}

async function main(bench: Bench): Promise<void> {
  progress(`saga settings: ${JSON.stringify(options)}`);
  const needsKafka = options.steps.includes('kafka');
  const [postgresStart, kafkaStart] = await Promise.allSettled([
    startBenchPostgres(bench, 'concord_bench_saga_'),
    needsKafka
      ? startKafka().then((kafka) => {
          bench.defer(() => kafka.stop());
          progress(`Kafka ready: ${kafka.brokers}`);
          return kafka.brokers;
        })
      : Promise.resolve(''),
  ]);
  if (postgresStart.status === 'rejected') throw postgresStart.reason;
  if (kafkaStart.status === 'rejected') throw kafkaStart.reason;
  const postgres = postgresStart.value;
  const kafkaBrokers = kafkaStart.value;

  // The services' database; every step holds a connection for its commit.
  const serviceDb = `${postgres.prefix}service`;
  const pool = new pg.Pool({ connectionString: await createDatabase(postgres.url, serviceDb), max: 64 });
  pool.on('error', () => {}); // a dropped idle connection; the next query reports it anyway
  bench.defer(() => pool.end());
  await prepareEffects(pool);

  const run = randomBytes(3).toString('hex');
  const rows: SagaRow[] = [];
  const checks: Verification[] = [];
  for (const kind of options.steps) {
    bench.checkAborted();
    const storeDb = `${postgres.prefix}store_${kind}`;
    const coordinator = await bench.startCoordinator({
      store: await createDatabase(postgres.url, storeDb),
      // Only the Kafka run listens for replies: the HTTP run's coordinator does no Kafka work at all.
      env: { CONCORD_LOG_LEVEL: 'warn', ...(kind === 'kafka' ? { CONCORD_KAFKA_BROKERS: kafkaBrokers } : {}) },
    });
    progress(`coordinator (${kind} steps) started, pid ${coordinator.proc.pid}, ${coordinator.url}`);
    const participants = await startSagaParticipants(kind, pool, kafkaBrokers.split(','));
    bench.defer(() => participants.close());
    const brokerPid = kind === 'kafka' ? localBroker(kafkaBrokers) : undefined;
    const k: KindRun = {
      bench,
      kind,
      coordinator,
      participants,
      postgres,
      storeDb,
      serviceDb,
      brokerPid,
      gidPrefix: `bs-${run}-${kind}-`,
      succeeded: [],
      failed: [],
      measurements: 0,
    };
    await firstSaga(k);
    await warmUp(k);
    for (const concurrency of options.concurrency) {
      bench.checkAborted();
      let row = await measureRow(k, concurrency);
      // Another job that started during the window took CPU from us: measure again (while waiting helps).
      for (let retry = 1; retry <= options.busyRetries && otherCpu(row.cpu) > quietPercent; retry++) {
        progress(
          `other processes used ${otherCpu(row.cpu).toFixed(0)} % of a core during the window; measuring again (${retry}/${options.busyRetries})`,
        );
        row = await measureRow(k, concurrency);
      }
      rows.push(row);
    }
    checks.push(await verify(k, pool));
    await participants.close();
    const code = await bench.stopCoordinator(coordinator);
    if (code !== 0) progress(`coordinator (${kind} steps) exited with ${code}:\n${coordinator.output().slice(-2_000)}`);
  }
  process.stdout.write(renderSagaReport(rows, checks, postgres.version));
}

/** The Kafka broker's process when the first broker listens on this machine; its CPU is then measured apart. */
function localBroker(brokers: string): number | undefined {
  const first = new URL(`kafka://${brokers.split(',')[0] ?? ''}`);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(first.hostname)) return undefined;
  const pid = findListener(Number(first.port));
  if (pid === undefined)
    progress(`no process listens on ${brokers.split(',')[0]} here (a container?): the Kafka broker's CPU counts as other`);
  return pid;
}

/** One three-step saga, submitted with wait_result: resolves when the coordinator answered 200 (the saga succeeded). */
async function submitSaga(k: KindRun, gid: string): Promise<void> {
  const saga = new Saga(k.coordinator.dtm, gid, { waitResult: true, timeoutMs: submitTimeoutMs, signal: k.bench.signal });
  for (const step of k.participants.steps) saga.add(step.action, step.compensate, { amount: 1 });
  try {
    await saga.submit();
    k.succeeded.push(gid);
  } catch (err) {
    k.failed.push(gid);
    throw err;
  }
}

/** Before measuring: one saga end to end (consumer groups joined, connections open), or a clear failure. */
async function firstSaga(k: KindRun): Promise<void> {
  const gid = `${k.gidPrefix}first`;
  const started = performance.now();
  try {
    await submitSaga(k, gid);
  } catch (err) {
    const state = await new CoordinatorClient(k.coordinator.dtm).query(gid).catch((e: unknown) => String(e));
    throw new Error(
      `the first saga with ${k.kind} steps did not succeed: ${(err as Error).message}\n` +
        `its state at the coordinator: ${JSON.stringify(state)}\nthe coordinator's output:\n${k.coordinator.output().slice(-2_000)}`,
      { cause: err },
    );
  }
  progress(`${k.kind}: first saga succeeded in ${(performance.now() - started).toFixed(0)} ms`);
}

/**
 * Unmeasured load before a kind's first row: a fresh Kafka broker's JIT compiler otherwise takes
 * most of a core through the first rows (and the coordinator's and participants' code warms up too).
 */
async function warmUp(k: KindRun): Promise<void> {
  if (options.kindWarmupSeconds === 0) return;
  const concurrency = Math.max(...options.concurrency);
  progress(`${k.kind}: ${options.kindWarmupSeconds} s warm-up at concurrency ${concurrency}`);
  const result = await runWorkers(
    { concurrency, warmupMs: options.kindWarmupSeconds * 1000, measureMs: 0, signal: k.bench.signal },
    async (w, i) => {
      await submitSaga(k, `${k.gidPrefix}warm-${w}-${i}`);
      return { doneAt: performance.now() };
    },
  );
  k.bench.checkAborted();
  if (result.errors > 0) progress(`${k.kind}: ${result.errors} sagas failed during the warm-up, first: ${result.firstError}`);
}

async function measureRow(k: KindRun, concurrency: number): Promise<SagaRow> {
  const { bench, kind, coordinator } = k;
  await waitForQuiet(options.idleWaitSeconds, bench.signal);
  const pid = coordinator.proc.pid ?? 0;
  const measurement = ++k.measurements;
  let before: { cpu: CpuSnapshot; watch: ActivityWatch } | undefined;
  let after: { cpu: CpuSnapshot; activity: Map<string, DatabaseActivity> } | undefined;
  progress(`${kind} × ${concurrency}: ${options.warmupSeconds} s warm-up, ${options.seconds} s measured`);
  const result = await runWorkers(
    {
      concurrency,
      warmupMs: options.warmupSeconds * 1000,
      measureMs: options.seconds * 1000,
      signal: bench.signal,
      onWindow: async (edge) => {
        if (edge === 'start') {
          const watch = await watchPostgres(k.postgres.url, [k.storeDb, k.serviceDb]);
          before = { watch, cpu: cpuSnapshot(pid, k.postgres.postmasterPid, k.brokerPid) };
        } else {
          const cpu = cpuSnapshot(pid, k.postgres.postmasterPid, k.brokerPid);
          after = { cpu, activity: (await before?.watch.stop()) ?? new Map<string, DatabaseActivity>() };
        }
      },
    },
    async (w, i) => {
      await submitSaga(k, `${k.gidPrefix}m${measurement}-${w}-${i}`);
      return { doneAt: performance.now() };
    },
  );
  if (after === undefined) await before?.watch.stop().catch(() => undefined); // interrupted inside the window
  bench.checkAborted();
  if (coordinator.proc.exitCode !== null) throw new Error(`the coordinator exited during the run:\n${coordinator.output().slice(-2_000)}`);
  if (before === undefined || after === undefined) throw new Error('the measurement window never closed');
  const row: SagaRow = {
    steps: kind,
    concurrency,
    sagasPerSecond: result.completed / result.seconds,
    p50Ms: percentile(result.latenciesMs, 0.5),
    p99Ms: percentile(result.latenciesMs, 0.99),
    maxMs: result.latenciesMs.at(-1) ?? NaN,
    errors: result.errors,
    ...(result.firstError ? { firstError: result.firstError } : {}),
    cpu: cpuSplit(before.cpu, after.cpu),
    storeCommitsPerSaga: (after.activity.get(k.storeDb)?.commits ?? NaN) / result.completed,
    serviceCommitsPerSaga: (after.activity.get(k.serviceDb)?.commits ?? NaN) / result.completed,
  };
  const { cpu } = row;
  progress(
    `${kind} × ${concurrency}: ${row.sagasPerSecond.toFixed(0)} sagas/s, p50 ${row.p50Ms.toFixed(1)} ms, p99 ${row.p99Ms.toFixed(1)} ms, ` +
      `max ${row.maxMs.toFixed(0)} ms, ${row.errors} errors${row.firstError ? ` (first: ${row.firstError})` : ''}; ` +
      `CPU % coordinator ${cpu.coordinator.toFixed(0)}, postgres ${cpu.postgres.toFixed(0)}, kafka ${cpu.broker.toFixed(0)} (JIT ${cpu.brokerJit.toFixed(0)}), bench ${cpu.bench.toFixed(0)}, ` +
      `other ${otherCpu(cpu).toFixed(0)}`,
  );
  return row;
}

/** Every saga that answered 200 left one action row per step and no compensation; the coordinator agrees on a sample. */
async function verify(k: KindRun, pool: pg.Pool): Promise<Verification> {
  const effects = await countEffects(pool, k.gidPrefix);
  const stride = Math.max(1, Math.floor(k.succeeded.length / sampleSize));
  const sample = [...k.succeeded.filter((_, i) => i % stride === 0).slice(0, sampleSize), ...k.failed.slice(0, sampleSize)];
  const client = new CoordinatorClient(k.coordinator.dtm);
  const notSucceeded: string[] = [];
  for (const gid of sample) {
    const answer = (await client.query(gid)) as { transaction: { status: string } | null };
    const status = answer.transaction?.status ?? 'missing';
    if (status !== 'succeed') notSucceeded.push(`${gid}: ${status}`);
  }
  const check: Verification = {
    steps: k.kind,
    succeeded: k.succeeded.length,
    failed: k.failed.length,
    effects,
    queried: sample.length,
    notSucceeded,
  };
  progress(
    `${k.kind}: ${check.succeeded} sagas answered 200, ${check.failed} failed; effects: ${effects.complete} complete of ${effects.sagas} sagas, ` +
      `${effects.compensations} compensations; ${sample.length} queried, ${notSucceeded.length} not succeed`,
  );
  return check;
}

function renderSagaReport(rows: SagaRow[], checks: Verification[], postgresVersion: string): string {
  const cores = availableParallelism();
  const out = [
    '## Concord sagas, end to end',
    '',
    `Date: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC  `,
    `Machine: ${machineLine(postgresVersion)}  `,
    `Code: ${codeVersion()}  `,
    `Settings: ${options.warmupSeconds} s warm-up, then ${options.seconds} s measured per row; ${sagaSteps.length} sequential steps per saga, ` +
      'each a barrier-protected insert; submit with wait_result, counted at its 200; Postgres store, fsync and synchronous_commit on.',
    '',
    table(
      ['steps', 'concurrency', 'sagas/s', 'p50 ms', 'p99 ms', 'errors'],
      rows.map((r) => [r.steps, String(r.concurrency), fixed(r.sagasPerSecond, 0), fixed(r.p50Ms, 1), fixed(r.p99Ms, 1), String(r.errors)]),
    ),
    '',
    '### CPU during the measured window (% of one core)',
    '',
    table(
      [
        'steps',
        'concurrency',
        'coordinator %',
        'postgres %',
        'Kafka broker % (of which JIT compiler)',
        'bench (client + participants) %',
        'other processes %',
        `machine busy % (of ${cores * 100})`,
        'CPU ms per saga',
        'commits per saga: store / services',
      ],
      rows.map((r) => [
        r.steps,
        String(r.concurrency),
        fixed(r.cpu.coordinator, 0),
        fixed(r.cpu.postgres, 0),
        r.steps === 'kafka' ? `${fixed(r.cpu.broker, 0)} (${fixed(r.cpu.brokerJit, 0)})` : '–',
        fixed(r.cpu.bench, 0),
        fixed(otherCpu(r.cpu), 0),
        fixed(r.cpu.machineBusy, 0),
        // coordinator + Postgres + Kafka + bench, in CPU milliseconds per saga
        fixed((10 * (r.cpu.coordinator + r.cpu.postgres + r.cpu.broker + r.cpu.bench)) / r.sagasPerSecond, 1),
        `${fixed(r.storeCommitsPerSaga, 1)} / ${fixed(r.serviceCommitsPerSaga, 1)}`,
      ]),
    ),
    '',
    '### Check',
    '',
  ];
  for (const c of checks) {
    const ok = c.failed === 0 && c.effects.complete === c.succeeded && c.effects.sagas === c.succeeded && c.notSucceeded.length === 0;
    out.push(
      `- ${c.steps}: ${ok ? 'OK' : 'NOT OK'}: ${c.succeeded} sagas answered 200 and ${c.failed} failed; ${c.effects.complete} of ${c.effects.sagas} ` +
        `sagas with effects have exactly one action row per step, ${c.effects.compensations} compensation rows; ` +
        `${c.queried} queried at the coordinator, ${c.notSucceeded.length} not in status succeed` +
        (c.notSucceeded.length > 0 ? ` (${c.notSucceeded.slice(0, 5).join('; ')})` : ''),
    );
  }
  for (const r of rows.filter((x) => otherCpu(x.cpu) > quietPercent)) {
    out.push(
      `- ${r.steps} × ${r.concurrency}: other processes used ${otherCpu(r.cpu).toFixed(0)} % of a core in the window; its figures are low (measured again up to BENCH_BUSY_RETRIES times).`,
    );
  }
  for (const r of rows.filter((x) => x.errors > 0))
    out.push(`- ${r.steps} × ${r.concurrency}: ${r.errors} failed sagas, first: ${r.firstError}`);
  return out.join('\n') + '\n';
}

await runBench(main);
