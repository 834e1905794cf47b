/**
 * Steady-state outbox latency beside the naive poller: N writers each commit one business row and
 * one event at a time, the event reaches a Kafka topic, and a consumer (in a worker thread,
 * bench/outbox-latency-consumer.ts) measures commit → receive. Contenders, each on a fresh database:
 * - poller: one outbox row per event, the naive hand-rolled poller (bench/outbox-naive-poller.ts,
 *   reading again every 10 ms when idle) publishing it;
 * - notify, polling: one outbox row per event, `concord outbox drain --native` woken by the NOTIFY
 *   trigger, or polling every 10 ms when idle (logical: streaming from a replication slot, only
 *   with BENCH_OUTBOX_READ=logical);
 * - msg: a two-phase message per event (Msg.doAndSubmit to kafka://, the business row in its local
 *   transaction with the barrier row) through a Concord coordinator on a Postgres store, which
 *   publishes to Kafka; measured from the writer's local commit;
 * - msg-batched: the same, with the writers' prepares and submits coalesced into shared batch
 *   requests (MsgCoalescer).
 * Prints events/s (and as a ratio to the naive poller's at the same writer count), p50/p99, the
 * relay's (or the coordinator's) CPU per 1,000 events, the bench Postgres's and this process's
 * (writers and consumer: the whole cost of an event, but for Kafka's), and for the two-phase messages the
 * coordinator requests and store commits per event (load-independent: what batching saves).
 *
 * node dist/bench/outbox-latency.js; BENCH_SECONDS (default 10), BENCH_WRITERS (default "16,64"),
 * BENCH_OUTBOX_CONTENDERS (default all: "poller,notify,polling,msg,msg-batched"), BENCH_ROUNDS
 * (default 1: the contenders alternate, round after round), BENCH_RELAY_NODE_ARGS (e.g. "--cpu-prof
 * --cpu-prof-dir=/tmp/prof" to profile the relays).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { Worker } from 'node:worker_threads';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { ensureBarrierTable, ensureOutboxTable, Msg, MsgCoalescer, outbox } from '../sdk/index.js';
import { startKafka } from '../test/services/kafka.js';
import { createDatabase } from '../test/services/postgres.js';
import { runBench, type Bench } from './lifecycle.js';
import { fixed, table } from './markdown.js';
import { startBenchPostgres } from './postgres-server.js';
import { cpuSnapshot, cpuSplit, type CpuSplit } from './proc-stats.js';
import { progress } from './report.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const writerCounts = (process.env.BENCH_WRITERS ?? process.env.BENCH_CONCURRENCY ?? '16,64').split(',').map(Number);
const warmUpMs = 3_000;
const dist = new URL('..', import.meta.url).pathname;

type Relay = 'poller' | 'notify' | 'polling' | 'logical' | 'msg' | 'msg-batched';
const relayNames: Record<Relay, string> = {
  poller: 'naive poller (select, send, delete, commit; 10 ms when idle)',
  notify: 'concord drain, NOTIFY trigger',
  polling: 'concord drain, polling every 10 ms when idle',
  logical: 'concord drain, read=logical (replication slot)',
  msg: 'two-phase message, one per event (Msg.doAndSubmit)',
  'msg-batched': 'two-phase message, batched SDK path (MsgCoalescer)',
};
const defaultRelays: Relay[] = [
  'poller',
  'notify',
  'polling',
  ...(process.env.BENCH_OUTBOX_READ === 'logical' ? (['logical'] as const) : []),
  'msg',
  'msg-batched',
];
const relays = process.env.BENCH_OUTBOX_CONTENDERS ? (process.env.BENCH_OUTBOX_CONTENDERS.split(',') as Relay[]) : defaultRelays;
for (const r of relays)
  if (!(r in relayNames)) throw new Error(`BENCH_OUTBOX_CONTENDERS: unknown contender ${r} (${Object.keys(relayNames).join(', ')})`);
const rounds = Number(process.env.BENCH_ROUNDS ?? 1);

interface Result {
  relay: Relay;
  round: number;
  writers: number;
  events: number;
  p50: number;
  p99: number;
  cpuMsPer1k: number;
  /** CPU per 1,000 events of the bench's Postgres (the writers' and the coordinator's databases) and of this process (writers, consumer). */
  postgresMsPer1k: number;
  writersMsPer1k: number;
  /** Two-phase messages: prepare and submit requests per event (2 when each goes alone); NaN for the relays. */
  requestsPerEvent: number;
  /** Two-phase messages: commits of the coordinator's store per event (pg_stat_database); NaN for the relays. */
  commitsPerEvent: number;
}

const now = () => performance.timeOrigin + performance.now();
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? NaN;

async function measure(
  bench: Bench,
  serverUrl: string,
  prefix: string,
  brokers: string,
  relay: Relay,
  writers: number,
  round: number,
  postmasterPid: number | undefined,
): Promise<Result> {
  const url = await createDatabase(serverUrl, `${prefix}${relay}_${writers}_${randomUUID().slice(0, 8)}`);
  const pool = new pg.Pool({ connectionString: url, max: writers + 2 });
  pool.on('error', () => undefined); // an idle connection cut when the bench's Postgres stops at the end
  const topic = `bench-outlat-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });
  await admin.disconnect();
  await pool.query('create table orders (id bigserial primary key, note text)');
  const committedAt = new Map<string, number>();
  // Each writer's one event: a transaction with a business row and the event; notes when it committed under the id the consumer sees.
  let writeEvent: (c: pg.PoolClient) => Promise<void>;
  // What publishes to Kafka, whose CPU is measured: a relay process, or the coordinator.
  let publisher: { pid: number; stop: () => Promise<unknown> };
  // The coordinator requests the writers made so far, and its store's commits, when they send two-phase messages.
  let requests: (() => number) | undefined;
  let storeCommits: (() => Promise<number>) | undefined;
  if (relay === 'msg' || relay === 'msg-batched') {
    await ensureBarrierTable(pool);
    const store = await createDatabase(serverUrl, `${prefix}store_${relay}_${writers}_${randomUUID().slice(0, 8)}`);
    storeCommits = async () => {
      const { rows } = await pool.query<{ n: string }>('select xact_commit as n from pg_stat_database where datname = $1', [
        new URL(store).pathname.slice(1),
      ]);
      return Number(rows[0]?.n ?? NaN);
    };
    const coordinator = await bench.startCoordinator({
      store,
      env: { CONCORD_LOG_LEVEL: 'warn', CONCORD_KAFKA_BROKERS: brokers },
    });
    publisher = { pid: coordinator.proc.pid!, stop: () => bench.stopCoordinator(coordinator) };
    const coalescer = relay === 'msg-batched' ? new MsgCoalescer(coordinator.dtm) : undefined;
    let sent = 0;
    requests = () => coalescer?.stats.requests ?? sent;
    writeEvent = async (c) => {
      const gid = randomUUID();
      const stopClock = commitClock(c);
      let at: number;
      try {
        // Every message is submitted before its writer goes on: the check-back URL is never asked.
        await new Msg(coordinator.dtm, gid, { coalescer })
          .add(`kafka://default/${topic}`, { t: Date.now() })
          .doAndSubmit<void, pg.PoolClient>('http://127.0.0.1:1/unused', c, async (tx) => {
            await tx.query(`insert into orders (note) values ('x')`);
          });
      } finally {
        at = stopClock();
      }
      sent += 2;
      // The consumer sees the message id the coordinator gives the message's one branch.
      committedAt.set(`${gid}/01`, at);
    };
  } else {
    let writeOne: (c: pg.PoolClient) => Promise<string>;
    let args: string[];
    if (relay === 'poller') {
      await pool.query('create table naive_outbox (id bigserial primary key, topic text not null, k text, payload text not null)');
      writeOne = async (c) => {
        const { rows } = await c.query<{ id: string }>(`insert into naive_outbox (topic, k, payload) values ($1, null, $2) returning id`, [
          topic,
          JSON.stringify({ t: Date.now() }),
        ]);
        return `outbox:naive_outbox:${rows[0]!.id}`;
      };
      args = [`${dist}bench/outbox-naive-poller.js`, url, brokers, 'naive_outbox', '1000', '10'];
    } else {
      await ensureOutboxTable(pool, { notify: relay === 'notify' });
      writeOne = (c) => outbox.publish(c, `kafka://default/${topic}`, { t: Date.now() });
      args = [
        `${dist}coordinator/cli.js`,
        'outbox',
        'drain',
        '--native',
        '--database',
        url,
        '--kafka-brokers',
        brokers,
        ...(relay === 'logical' ? ['--read', 'logical'] : []),
      ];
    }
    writeEvent = async (c) => {
      await c.query('begin');
      await c.query(`insert into orders (note) values ('x')`);
      const id = await writeOne(c);
      await c.query('commit');
      committedAt.set(id, now());
    };
    const nodeArgs = (process.env.BENCH_RELAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const child = spawn('node', [...nodeArgs, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
    publisher = { pid: child.pid!, stop: () => stopChild(child) };
  }

  const consumer = new Worker(new URL('./outbox-latency-consumer.js', import.meta.url), { workerData: { brokers, topic } });
  await new Promise((resolve, reject) => consumer.once('message', resolve).once('error', reject));

  let stop = false;
  const write = async () => {
    const c = await pool.connect();
    try {
      while (!stop) await writeEvent(c);
    } finally {
      c.release();
    }
  };
  const running = Array.from({ length: writers }, write);
  try {
    await new Promise((r) => setTimeout(r, warmUpMs));
    bench.checkAborted();
    const windowStart = now();
    const cpuBefore = cpuSnapshot(publisher.pid, postmasterPid);
    const requestsBefore = requests?.() ?? NaN;
    const commitsBefore = (await storeCommits?.()) ?? NaN;
    const committedBefore = committedAt.size;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const windowEnd = now();
    const cpu = cpuSplit(cpuBefore, cpuSnapshot(publisher.pid, postmasterPid));
    const committedInWindow = Math.max(1, committedAt.size - committedBefore);
    const requestsPerEvent = ((requests?.() ?? NaN) - requestsBefore) / committedInWindow;
    const commitsPerEvent = (((await storeCommits?.()) ?? NaN) - commitsBefore) / committedInWindow;
    stop = true;
    await Promise.all(running);
    // What committed in the window has had a second to arrive.
    await new Promise((r) => setTimeout(r, 1_000));
    consumer.postMessage('report');
    const arrived = new Map(await new Promise<[string, number][]>((resolve) => consumer.once('message', resolve)));
    const latencies: number[] = [];
    let lost = 0;
    for (const [id, at] of committedAt) {
      if (at < windowStart || at > windowEnd) continue;
      const received = arrived.get(id);
      if (received === undefined) lost++;
      else latencies.push(received - at);
    }
    if (lost > latencies.length / 100) progress(`  ${relay}: ${lost} events committed in the window did not arrive within a second`);
    latencies.sort((a, b) => a - b);
    return {
      relay,
      round,
      writers,
      events: latencies.length,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      // cpuSplit's % of one core over the window → ms per 1,000 events.
      ...perThousand(cpu, (windowEnd - windowStart) / 1000, latencies.length, postmasterPid !== undefined),
      requestsPerEvent,
      commitsPerEvent,
    };
  } finally {
    stop = true;
    await Promise.all(running).catch(() => undefined);
    await publisher.stop();
    consumer.postMessage('stop');
    await new Promise((resolve) => consumer.once('exit', resolve));
    if (relay === 'logical') await dropSlots(pool);
    await pool.end();
  }
}

function perThousand(
  cpu: CpuSplit,
  wallSeconds: number,
  events: number,
  postgresMeasured: boolean,
): Pick<Result, 'cpuMsPer1k' | 'postgresMsPer1k' | 'writersMsPer1k'> {
  const ms = (pct: number) => (pct * 10 * wallSeconds * 1000) / Math.max(1, events);
  return { cpuMsPer1k: ms(cpu.coordinator), postgresMsPer1k: postgresMeasured ? ms(cpu.postgres) : NaN, writersMsPer1k: ms(cpu.bench) };
}

function stopChild(child: ChildProcess): Promise<unknown> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  else return Promise.resolve();
  return exited;
}

/**
 * When the last `commit` on this client was acknowledged, for the SDK's own local transaction:
 * the same moment the outbox writers note after their `await c.query('commit')`.
 */
function commitClock(c: pg.PoolClient): () => number {
  let at = NaN;
  const query = c.query.bind(c) as (...args: unknown[]) => unknown;
  c.query = ((...args: unknown[]) => {
    const result = query(...args);
    if (args[0] === 'commit') void (result as Promise<unknown>).then(() => (at = now()));
    return result;
  }) as typeof c.query;
  return () => {
    Reflect.deleteProperty(c, 'query'); // the prototype's again
    return at;
  };
}

/** A replication slot left behind would hold WAL (and its database) for ever. */
async function dropSlots(pool: pg.Pool): Promise<void> {
  for (let tries = 0; tries < 50; tries++) {
    const { rows } = await pool.query<{ slot_name: string }>(
      `select slot_name from pg_replication_slots where database = current_database()`,
    );
    const dropped = await Promise.all(
      rows.map((r) =>
        pool.query('select pg_drop_replication_slot($1)', [r.slot_name]).then(
          () => true,
          () => false,
        ),
      ),
    );
    if (dropped.every(Boolean)) return;
    await new Promise((r) => setTimeout(r, 200)); // the drain's walsender lets go a moment after it exits
  }
}

async function main(bench: Bench): Promise<void> {
  const [server, kafka] = await Promise.all([startBenchPostgres(bench, 'concord_bench_outlat_'), startKafka()]);
  bench.defer(() => kafka.stop());
  const results: Result[] = [];
  const load: number[] = [];
  // Round after round, the contenders alternate: the machine's load drifts over minutes.
  for (let round = 1; round <= rounds; round++)
    for (const writers of writerCounts)
      for (const relay of relays) {
        progress(`outbox latency, round ${round}: ${relayNames[relay]}, ${writers} writers`);
        results.push(await measure(bench, server.url, server.prefix, kafka.brokers, relay, writers, round, server.postmasterPid));
        load.push(loadavg()[0]!);
      }
  const perSecond = (r: Result) => r.events / seconds;
  const poller = (r: Result) => results.find((p) => p.relay === 'poller' && p.writers === r.writers && p.round === r.round);
  console.log(`\n### Outbox steady state: commit → consumer, ${seconds} s per row after ${warmUpMs / 1000} s of warm-up\n`);
  console.log(
    table(
      [
        'contender',
        ...(rounds > 1 ? ['round'] : []),
        'writers',
        'events/s',
        '× naive poller',
        'p50 ms',
        'p99 ms',
        'relay / coordinator CPU ms per 1k events',
        'Postgres CPU ms per 1k',
        'writers + consumer CPU ms per 1k',
        'coordinator requests per event',
        'store commits per event',
      ],
      results.map((r) => {
        const base = poller(r);
        return [
          relayNames[r.relay],
          ...(rounds > 1 ? [String(r.round)] : []),
          String(r.writers),
          String(Math.round(perSecond(r))),
          fixed(base && perSecond(r) / perSecond(base), 2),
          fixed(r.p50, 1),
          fixed(r.p99, 1),
          fixed(r.cpuMsPer1k, 0),
          fixed(r.postgresMsPer1k, 0),
          fixed(r.writersMsPer1k, 0),
          fixed(r.requestsPerEvent, 2),
          fixed(r.commitsPerEvent, 2),
        ];
      }),
    ),
  );
  console.log(`\n1-minute load average after each row: ${load.map((l) => l.toFixed(1)).join(', ')} (2 cores)`);
}

await runBench(main);
