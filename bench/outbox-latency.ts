/**
 * Steady-state outbox latency beside the naive poller: N writers each commit one business row and
 * one outbox row at a time while a relay publishes the outbox to Kafka, and a consumer (in a worker
 * thread, bench/outbox-latency-consumer.ts) measures commit → receive. Contenders, each its own
 * process on a fresh database: the naive hand-rolled poller (bench/outbox-naive-poller.ts, reading
 * again every 10 ms when idle), `concord outbox drain --native` woken by the NOTIFY trigger, and the
 * same drain polling every 10 ms when idle; BENCH_OUTBOX_READ=logical adds the drain streaming from
 * a replication slot. Prints events/s, p50/p99 and the relay's CPU per 1,000 events.
 *
 * node dist/bench/outbox-latency.js; BENCH_SECONDS (default 10), BENCH_WRITERS (default "16,64"),
 * BENCH_RELAY_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the relays).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { ensureOutboxTable, outbox } from '../sdk/index.js';
import { startKafka } from '../test/services/kafka.js';
import { createDatabase } from '../test/services/postgres.js';
import { runBench, type Bench } from './lifecycle.js';
import { fixed, table } from './markdown.js';
import { startBenchPostgres } from './postgres-server.js';
import { processCpuSeconds } from './proc-stats.js';
import { progress } from './report.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const writerCounts = (process.env.BENCH_WRITERS ?? process.env.BENCH_CONCURRENCY ?? '16,64').split(',').map(Number);
const warmUpMs = 3_000;
const dist = new URL('..', import.meta.url).pathname;

type Relay = 'poller' | 'notify' | 'polling' | 'logical';
const relays: Relay[] = ['poller', 'notify', 'polling', ...(process.env.BENCH_OUTBOX_READ === 'logical' ? (['logical'] as const) : [])];
const relayNames: Record<Relay, string> = {
  poller: 'naive poller (select, send, delete, commit; 10 ms when idle)',
  notify: 'concord drain, NOTIFY trigger',
  polling: 'concord drain, polling every 10 ms when idle',
  logical: 'concord drain, read=logical (replication slot)',
};

interface Result {
  relay: Relay;
  writers: number;
  events: number;
  p50: number;
  p99: number;
  cpuMsPer1k: number;
}

const now = () => performance.timeOrigin + performance.now();
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? NaN;

async function measure(bench: Bench, serverUrl: string, prefix: string, brokers: string, relay: Relay, writers: number): Promise<Result> {
  const url = await createDatabase(serverUrl, `${prefix}${relay}_${writers}_${randomUUID().slice(0, 8)}`);
  const pool = new pg.Pool({ connectionString: url, max: writers + 2 });
  pool.on('error', () => undefined); // an idle connection cut when the bench's Postgres stops at the end
  const topic = `bench-outlat-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });
  await admin.disconnect();
  await pool.query('create table orders (id bigserial primary key, note text)');
  // Each writer's one transaction: a business row and an outbox row; returns the message id the consumer sees.
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

  const consumer = new Worker(new URL('./outbox-latency-consumer.js', import.meta.url), { workerData: { brokers, topic } });
  await new Promise((resolve, reject) => consumer.once('message', resolve).once('error', reject));
  const nodeArgs = (process.env.BENCH_RELAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn('node', [...nodeArgs, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  const childExit = new Promise((resolve) => child.once('exit', resolve));

  const committedAt = new Map<string, number>();
  let stop = false;
  const write = async () => {
    const c = await pool.connect();
    try {
      while (!stop) {
        await c.query('begin');
        await c.query(`insert into orders (note) values ('x')`);
        const id = await writeOne(c);
        await c.query('commit');
        committedAt.set(id, now());
      }
    } finally {
      c.release();
    }
  };
  const running = Array.from({ length: writers }, write);
  try {
    await new Promise((r) => setTimeout(r, warmUpMs));
    bench.checkAborted();
    const windowStart = now();
    const cpuBefore = processCpuSeconds(child.pid!) ?? NaN;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const windowEnd = now();
    const cpuAfter = processCpuSeconds(child.pid!) ?? NaN;
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
      writers,
      events: latencies.length,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      cpuMsPer1k: ((cpuAfter - cpuBefore) * 1000 * 1000) / Math.max(1, latencies.length),
    };
  } finally {
    stop = true;
    await Promise.all(running).catch(() => undefined);
    child.kill('SIGTERM');
    await childExit;
    consumer.postMessage('stop');
    await new Promise((resolve) => consumer.once('exit', resolve));
    if (relay === 'logical') await dropSlots(pool);
    await pool.end();
  }
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
  for (const writers of writerCounts)
    for (const relay of relays) {
      progress(`outbox latency: ${relayNames[relay]}, ${writers} writers`);
      results.push(await measure(bench, server.url, server.prefix, kafka.brokers, relay, writers));
    }
  console.log(`\n### Outbox steady state: commit → consumer, ${seconds} s per row after ${warmUpMs / 1000} s of warm-up\n`);
  console.log(
    table(
      ['relay', 'writers', 'events/s', 'p50 ms', 'p99 ms', 'relay CPU ms per 1k events'],
      results.map((r) => [
        relayNames[r.relay],
        String(r.writers),
        String(Math.round(r.events / seconds)),
        fixed(r.p50, 1),
        fixed(r.p99, 1),
        fixed(r.cpuMsPer1k, 0),
      ]),
    ),
  );
}

await runBench(main);
