/**
 * Outbox bench (part of `npm run bench`): drain a backlog of committed outbox rows to Kafka (acks
 * from all in-sync replicas, idempotent producer), first with the naive hand-rolled poller
 * (bench/outbox-naive-poller.ts), then with `concord outbox drain` deleting published rows as the
 * poller does, then with its cursor (published=none: no write per row), then streaming the inserts
 * from a replication slot (read=logical, published=none; the slot exists before the rows are
 * written), on the same Postgres, Kafka and table, each as its own process. Prints rows/s, peak RSS and CPU per 1,000 rows.
 *
 * BENCH_OUTBOX_ROWS (default 200000; 1000000 for the figure), BENCH_OUTBOX_ROUNDS (default 1:
 * each contender once; more rounds alternate them), BENCH_OUTBOX_BATCH (the poller's rows per batch,
 * default 1000), BENCH_OUTBOX_CONCORD_BATCH (the drain's --batch-size; its default otherwise).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { dropLogical, ensureLogical, logicalNamesIn, recordCatchUp } from '../relay/outbox/logical-slot.js';
import { outboxDb } from '../relay/outbox/outbox-db.js';
import { outboxStateDdlPostgres } from '../schemas/db/outbox.js';
import { startKafka } from '../test/services/kafka.js';
import { createDatabase } from '../test/services/postgres.js';
import { runBench, type Bench } from './lifecycle.js';
import { table } from './markdown.js';
import { startBenchPostgres } from './postgres-server.js';
import { progress } from './report.js';

const rows = Number(process.env.BENCH_OUTBOX_ROWS ?? 200_000);
const rounds = Number(process.env.BENCH_OUTBOX_ROUNDS ?? 1);
const batch = Number(process.env.BENCH_OUTBOX_BATCH ?? 1000);
/** Concord's own batch size (its default unless given); the poller's stays BENCH_OUTBOX_BATCH. */
const concordBatch = process.env.BENCH_OUTBOX_CONCORD_BATCH;
/** Node flags of the drain, as docs/outbox-migration.md recommends (a fixed heap: less RSS, the same CPU). */
const concordNodeFlags = (process.env.BENCH_OUTBOX_NODE_FLAGS ?? '--max-semi-space-size=16 --max-old-space-size=128')
  .split(' ')
  .filter(Boolean);
const dist = new URL('..', import.meta.url).pathname;

interface Result {
  contender: string;
  seconds: number;
  rssMiB: number;
  cpuSeconds: number;
}

/** Runs a drainer process to its end; its last line reports peak RSS and CPU. */
async function timed(contender: string, bench: Bench, args: string[]): Promise<Result> {
  const started = performance.now();
  const child = spawn('node', args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const stop = () => child.kill('SIGTERM');
  bench.signal.addEventListener('abort', stop);
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  bench.signal.removeEventListener('abort', stop);
  const seconds = (performance.now() - started) / 1000;
  const match = /published (\d+).*peak RSS (\d+) MiB, CPU ([\d.]+) s/.exec(out);
  if (code !== 0 || !match) throw new Error(`${contender} failed (exit ${code}): ${out.slice(-1000)}`);
  if (Number(match[1]) !== rows) throw new Error(`${contender} published ${match[1]} of ${rows} rows`);
  return { contender, seconds, rssMiB: Number(match[2]), cpuSeconds: Number(match[3]) };
}

async function main(bench: Bench): Promise<void> {
  const [server, kafka] = await Promise.all([startBenchPostgres(bench, 'concord_bench_outbox_'), startKafka()]);
  bench.defer(() => kafka.stop());
  const url = await createDatabase(server.url, `${server.prefix}outbox`);
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => undefined); // an idle connection cut when the bench's Postgres stops at the end
  bench.defer(() => pool.end());
  const topic = `bench-outbox-${randomUUID()}`;
  const admin = new Kafka({ brokers: kafka.brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });
  await admin.disconnect();
  await pool.query(`create table bench_outbox (id bigserial primary key, topic text not null, k text not null, payload text not null,
    created_at timestamptz not null default now())`);

  const fill = async () => {
    await pool.query('truncate bench_outbox'); // the cursor contender leaves its rows behind
    await pool.query(
      `insert into bench_outbox (topic, k, payload) select $1, 'customer-' || (i % 64), '{"order":' || i || ',"note":"' || repeat('x', 80) || '"}'
       from generate_series(1, $2::int) i`,
      [topic, rows],
    );
    await pool.query('vacuum analyze bench_outbox');
    await pool.query('checkpoint');
  };
  const concord = (published: 'delete' | 'none', round: number, read = 'table') => [
    ...concordNodeFlags,
    `${dist}coordinator/cli.js`,
    'outbox',
    'drain',
    '--database',
    url,
    '--table',
    'bench_outbox',
    '--destination-column',
    'topic',
    '--destination-template',
    'kafka://default/{destination}',
    '--key-column',
    'k',
    '--payload-column',
    'payload',
    '--created-at-column',
    'created_at',
    '--published',
    published,
    '--name',
    `bench-${published}-${read}-${round}`,
    '--read',
    read,
    '--kafka-brokers',
    kafka.brokers,
    ...(concordBatch ? ['--batch-size', concordBatch] : []),
    '--progress-ms',
    '3600000',
    '--exit-when-idle',
  ];
  const contenders = (round: number): [string, string[]][] => [
    [
      'naive poller (select, send, delete, commit)',
      [`${dist}bench/outbox-naive-poller.js`, url, kafka.brokers, 'bench_outbox', String(batch)],
    ],
    ['concord outbox drain, published=delete', concord('delete', round)],
    ['concord outbox drain, published=none (cursor, rows left in place)', concord('none', round)],
    ['concord outbox drain, read=logical (replication slot, published=none)', concord('none', round, 'logical')],
  ];
  // read=logical streams what is written after its slot exists: the slot (and the note that rows
  // before it need no catch-up) is made before the fill, and dropped after the drain.
  const db = outboxDb(pool);
  const prepareSlot = async (round: number) => {
    const names = await logicalNamesIn(db, `bench-none-logical-${round}`);
    await db.query(outboxStateDdlPostgres);
    await ensureLogical(db, names, 'bench_outbox');
    await recordCatchUp(db, names);
    return () => dropLogical(db, names);
  };
  const results: Result[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const [name, args] of contenders(round)) {
      bench.checkAborted();
      progress(`outbox: filling ${rows} rows for ${name}`);
      const dropSlot = name.includes('read=logical') ? await prepareSlot(round) : undefined;
      await fill();
      progress(`outbox: draining with ${name}`);
      const result = await timed(name, bench, args).finally(() => dropSlot?.());
      progress(`outbox: ${name}: ${Math.round(rows / result.seconds)} rows/s`);
      results.push(result);
    }
  }
  const naive = results.filter((r) => r.contender.startsWith('naive'));
  const naiveRate = naive.reduce((s, r) => s + rows / r.seconds, 0) / naive.length;
  console.log(
    `\n### Outbox backlog drain to Kafka: ${rows} rows, acks=all, poller batches of ${batch}, drain batches of ${concordBatch ?? 'its default'}, drain node flags: ${concordNodeFlags.join(' ') || 'none'}\n`,
  );
  console.log(
    table(
      ['drainer', 'rows/s', 'vs naive', 'seconds', 'peak RSS MiB', 'CPU ms per 1k rows'],
      results.map((r) => [
        r.contender,
        String(Math.round(rows / r.seconds)),
        `${(rows / r.seconds / naiveRate).toFixed(2)}×`,
        r.seconds.toFixed(1),
        String(r.rssMiB),
        ((r.cpuSeconds * 1e6) / rows).toFixed(1),
      ]),
    ),
  );
}

await runBench(main);
