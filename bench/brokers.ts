/**
 * Broker benchmark (part of `npm run bench`): two-phase messages from the service's local commit
 * to the broker's ack, for Kafka and RabbitMQ at several concurrencies. Each of N workers sends one
 * message at a time: prepare, local transaction (business row + barrier row), submit with
 * wait_result, which answers once the coordinator has the broker's ack. The `http` row sends the
 * same messages (wait_result too) to the HTTP branch of bench/branch-service.ts, so a broker's cost
 * is read against HTTP's in one run. Prints a markdown table with the coordinator's CPU per message
 * and its store's commits per message.
 *
 * BENCH_SECONDS (default 10), BENCH_CONCURRENCY (default 1,16,64), BENCH_BROKERS (http,kafka,rabbitmq;
 * http is the HTTP row).
 */
import { randomUUID } from 'node:crypto';
import { connect } from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { Msg, ensureBarrierTable } from '../sdk/index.js';
import { startCoordinator } from '../test/helpers/coordinator.js';
import { startKafka } from '../test/services/kafka.js';
import { createDatabase, startPostgres } from '../test/services/postgres.js';
import { startRabbitMQ } from '../test/services/rabbitmq.js';
import { startBranchService } from './branch-service.js';
import { cpuSnapshot, cpuSplit } from './proc-stats.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const concurrencies = (process.env.BENCH_CONCURRENCY ?? '1,16,64').split(',').map(Number);
const brokers = (process.env.BENCH_BROKERS ?? 'http,kafka,rabbitmq').split(',');

const cleanups: (() => Promise<unknown>)[] = [];
const cleanup = async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
};
process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));

try {
  const [postgres, kafka, rabbit] = await Promise.all([startPostgres({ durable: true }), startKafka(), startRabbitMQ()]);
  cleanups.push(
    () => postgres.stop(),
    () => kafka.stop(),
    () => rabbit.stop(),
  );
  const pool = new pg.Pool({ connectionString: await createDatabase(postgres.url), max: 64 });
  cleanups.push(() => pool.end());
  await ensureBarrierTable(pool);
  await pool.query('create table bench_orders (id bigserial primary key, gid text not null)');
  const storeUrl = await createDatabase(postgres.url);
  const storeDb = new URL(storeUrl).pathname.slice(1);
  const coordinator = await startCoordinator({
    store: storeUrl,
    env: { CONCORD_LOG_LEVEL: 'warn', CONCORD_KAFKA_BROKERS: kafka.brokers, CONCORD_AMQP_URL: rabbit.url },
  });
  cleanups.push(() => coordinator.stop());

  const topic = `bench-${randomUUID()}`;
  const admin = new Kafka({ brokers: kafka.brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });
  await admin.disconnect();
  const amqp = await connect(rabbit.url);
  const channel = await amqp.createChannel();
  const queue = `bench-${randomUUID()}`;
  await channel.assertQueue(queue, { durable: true });
  cleanups.push(() => amqp.close());
  const service = await startBranchService(pool);
  cleanups.push(() => service.close());
  const destinations: Record<string, string> = {
    kafka: `kafka://default/${topic}`,
    rabbitmq: `rabbitmq://default//${queue}`,
    http: `${service.url}/TransIn`,
  };
  /** Commits of the coordinator's store database so far (pg_stat_database). */
  const storeCommits = async () =>
    Number(
      (await pool.query<{ n: string }>('select xact_commit as n from pg_stat_database where datname = $1', [storeDb])).rows[0]?.n ?? 0,
    );
  const pid = coordinator.proc.pid ?? 0;

  const rows: string[] = [];
  for (const broker of brokers) {
    for (const n of concurrencies) {
      process.stderr.write(`bench: ${broker} × ${n}\n`);
      const latencies: number[] = [];
      let measuring = false;
      let errors = 0;
      let stop = false;
      const worker = async (w: number) => {
        for (let i = 0; !stop; i++) {
          const gid = `${broker}-${n}-${w}-${i}-${randomUUID()}`;
          const started = performance.now();
          const sent = new Msg(coordinator.dtm, gid, { waitResult: true })
            // One key per worker: a closed loop waits for each message, so a key shared by two
            // workers would measure the order-per-key wait, not the broker path.
            .add(destinations[broker]!, { gid }, broker === 'http' ? {} : { key: `customer-${w}` })
            .doAndSubmit<void, pg.PoolClient>(`http://127.0.0.1:1/unused`, pool, async (tx) => {
              await tx.query('insert into bench_orders (gid) values ($1)', [gid]);
            });
          const ok = await sent.then(
            () => true,
            () => false,
          );
          if (measuring) {
            if (ok) latencies.push(performance.now() - started);
            else errors++;
          }
        }
      };
      const workers = Array.from({ length: n }, (_, w) => worker(w));
      await new Promise((r) => setTimeout(r, 2_000)); // warm-up
      const cpu0 = cpuSnapshot(pid, undefined);
      const commits0 = await storeCommits();
      measuring = true;
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, seconds * 1000));
      measuring = false;
      const elapsed = (performance.now() - t0) / 1000;
      const cpu1 = cpuSnapshot(pid, undefined);
      const commits = (await storeCommits()) - commits0 - 2; // the two reads' own
      stop = true;
      await Promise.all(workers);
      latencies.sort((a, b) => a - b);
      const pct = (p: number) => (latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))] ?? 0).toFixed(1);
      const done = Math.max(1, latencies.length);
      const cpuSeconds = cpu1.coordinator - cpu0.coordinator;
      rows.push(
        `| ${broker} | ${n} | ${Math.round(latencies.length / elapsed)} | ${pct(50)} | ${pct(99)} | ${errors} | ` +
          `${((100 * cpuSeconds) / elapsed).toFixed(0)} | ${((cpuSeconds * 1e6) / done).toFixed(0)} | ${(commits / done).toFixed(2)} | ` +
          `${cpuSplit(cpu0, cpu1).machineBusy.toFixed(0)} |`,
      );
    }
  }
  await channel.purgeQueue(queue);
  console.log('\n### Two-phase messages to brokers: prepare, local commit, submit, broker ack (wait_result)\n');
  console.log(
    '| destination | concurrency | msgs/s | p50 ms | p99 ms | errors | coordinator CPU % | coordinator CPU µs per msg | store commits per msg | machine busy % (of 100 × cores) |\n' +
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  console.log(rows.join('\n'));
} finally {
  await cleanup();
}
