/**
 * Steady-state outbox latency: N writers each commit one business row + one native outbox row at a
 * time (`outbox.publish`), while `concord outbox drain --native` publishes to Kafka and a consumer
 * measures commit → receive. Woken by the NOTIFY trigger, or by polling (BENCH_OUTBOX_NOTIFY=0), or
 * streaming the table's inserts from a replication slot (BENCH_OUTBOX_READ=logical; no trigger).
 *
 * node dist/bench/outbox-latency.js; BENCH_SECONDS (default 10), BENCH_CONCURRENCY (default 16).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { ensureOutboxTable, outbox } from '../sdk/index.js';
import { startKafka } from '../test/services/kafka.js';
import { createDatabase } from '../test/services/postgres.js';
import { runBench, type Bench } from './lifecycle.js';
import { startBenchPostgres } from './postgres-server.js';
import { progress } from './report.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const writers = Number(process.env.BENCH_CONCURRENCY ?? 16);
const logical = process.env.BENCH_OUTBOX_READ === 'logical';
const notify = process.env.BENCH_OUTBOX_NOTIFY !== '0' && !logical;
const dist = new URL('..', import.meta.url).pathname;

async function main(bench: Bench): Promise<void> {
  const [server, kafka] = await Promise.all([startBenchPostgres(bench, 'concord_bench_outlat_'), startKafka()]);
  bench.defer(() => kafka.stop());
  const url = await createDatabase(server.url, `${server.prefix}outbox`);
  const pool = new pg.Pool({ connectionString: url, max: writers + 2 });
  bench.defer(() => pool.end());
  await ensureOutboxTable(pool, { notify });
  await pool.query('create table orders (id bigserial primary key, note text)');
  const topic = `bench-outlat-${randomUUID()}`;
  const client = new Kafka({ brokers: kafka.brokers.split(','), logLevel: logLevel.NOTHING });
  const admin = client.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });
  await admin.disconnect();

  const committedAt = new Map<string, number>();
  const latencies: number[] = [];
  let measuring = false;
  const consumer = client.consumer({ groupId: `g-${randomUUID()}`, maxWaitTimeInMs: 5 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const id = String(message.headers?.['message-id']);
      const at = committedAt.get(id);
      if (at !== undefined && measuring) latencies.push(performance.now() - at);
      committedAt.delete(id);
    },
  });
  bench.defer(() => consumer.disconnect());
  const drain = spawn(
    'node',
    [
      `${dist}coordinator/cli.js`,
      'outbox',
      'drain',
      '--native',
      '--database',
      url,
      '--kafka-brokers',
      kafka.brokers,
      ...(logical ? ['--read', 'logical'] : []),
    ],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  bench.defer(async () => {
    drain.kill('SIGTERM');
    await new Promise((resolve) => drain.once('exit', resolve));
    // A slot left behind would hold WAL (and its database) for ever.
    for (let tries = 0; logical && tries < 50; tries++) {
      const { rows } = await pool.query(`select slot_name from pg_replication_slots where database = current_database()`);
      const dropped = await Promise.all(
        rows.map((r: { slot_name: string }) =>
          pool.query('select pg_drop_replication_slot($1)', [r.slot_name]).then(
            () => true,
            () => false,
          ),
        ),
      );
      if (dropped.every(Boolean)) break;
      await new Promise((r) => setTimeout(r, 200)); // the drain's walsender lets go a moment after it exits
    }
  });

  let stop = false;
  const write = async () => {
    const c = await pool.connect();
    try {
      while (!stop) {
        await c.query('begin');
        await c.query(`insert into orders (note) values ('x')`);
        const id = await outbox.publish(c, `kafka://default/${topic}`, { t: Date.now() });
        await c.query('commit');
        committedAt.set(id, performance.now());
      }
    } finally {
      c.release();
    }
  };
  const running = Array.from({ length: writers }, write);
  await new Promise((r) => setTimeout(r, 3_000)); // warm-up
  measuring = true;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  measuring = false;
  stop = true;
  await Promise.all(running);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => (latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))] ?? 0).toFixed(1);
  progress(`outbox latency: ${latencies.length} events`);
  const mode = logical ? 'read=logical (replication slot)' : notify ? 'NOTIFY' : 'polling every 10 ms';
  console.log(`\n### Native outbox, steady state: ${writers} writers, ${mode}\n`);
  console.log('| writers | events/s | commit→consumer p50 ms | p99 ms |\n| --- | --- | --- | --- |');
  console.log(`| ${writers} | ${Math.round(latencies.length / seconds)} | ${pct(50)} | ${pct(99)} |`);
}

await runBench(main);
