/**
 * Batched two-phase messages (part of `npm run bench`): events per second from writers that each
 * commit one local transaction carrying B events, sent as B single messages (Msg.doAndSubmit each)
 * or as one MsgBatch (two requests for all B), to an HTTP branch. An operation counts when every
 * event of it reached the branch. One coordinator on a Postgres store (the bench's Postgres: durable,
 * unless CONCORD_TEST_PG_URL names another).
 *
 * BENCH_SECONDS (default 10), BENCH_BATCH_WRITERS (default 16), BENCH_BATCH_SIZES (default 1,10,50).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { ensureBarrierTable, Msg, MsgBatch } from '../sdk/index.js';
import { createDatabase } from '../test/services/postgres.js';
import { startBranchService } from './branch-service.js';
import { businessTableDdl, percentile, runWorkers } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { table } from './markdown.js';
import { startBenchPostgres } from './postgres-server.js';
import { progress } from './report.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const writers = Number(process.env.BENCH_BATCH_WRITERS ?? 16);
const sizes = (process.env.BENCH_BATCH_SIZES ?? '1,10,50').split(',').map(Number);

async function main(bench: Bench): Promise<void> {
  const server = await startBenchPostgres(bench, 'concord_bench_batch_');
  const serviceUrl = await createDatabase(server.url, `${server.prefix}service`);
  const pool = new pg.Pool({ connectionString: serviceUrl, max: writers + 4 });
  bench.defer(() => pool.end());
  await ensureBarrierTable(pool);
  await pool.query(businessTableDdl);
  const service = await startBranchService(pool);
  bench.defer(() => service.close());
  const coordinator = await bench.startCoordinator({
    store: await createDatabase(server.url, `${server.prefix}store`),
    env: { CONCORD_LOG_LEVEL: 'warn' },
  });
  const transIn = `${service.url}/TransIn`;
  const queryPrepared = `${service.url}/QueryPrepared`;
  const rows: string[][] = [];
  for (const size of sizes) {
    for (const mode of size === 1 ? ['single'] : ['single', 'batch']) {
      bench.checkAborted();
      progress(`msg-batch: ${writers} writers, ${size} events per local transaction, ${mode}`);
      const run = randomBytes(4).toString('hex');
      const result = await runWorkers(
        { concurrency: writers, warmupMs: 2_000, measureMs: seconds * 1000, signal: bench.signal },
        async (w, i) => {
          const gids = Array.from({ length: size }, (_, n) => `bench-${run}-${w}-${i}-${n}`);
          const arrivals = gids.map((gid) => service.arrival(gid, 30_000));
          for (const a of arrivals) a.catch(() => undefined);
          const business = async (tx: pg.PoolClient) => {
            for (const gid of gids) await tx.query('insert into bench_business (gid, amount) values ($1, 1)', [gid]);
          };
          if (mode === 'batch') {
            const batch = new MsgBatch(coordinator.dtm);
            for (const gid of gids) batch.add(new Msg(coordinator.dtm, gid).add(transIn, { amount: 1 }));
            await batch.doAndSubmit<void, pg.PoolClient>(queryPrepared, pool, business);
          } else {
            // B single messages, each with its own local transaction: what a service does without batches.
            for (const gid of gids) {
              await new Msg(coordinator.dtm, gid)
                .add(transIn, { amount: 1 })
                .doAndSubmit<void, pg.PoolClient>(queryPrepared, pool, (tx) =>
                  tx.query('insert into bench_business (gid, amount) values ($1, 1)', [gid]).then(() => undefined),
                );
            }
          }
          const times = await Promise.all(arrivals);
          return { doneAt: Math.max(...times) };
        },
      );
      const events = (result.completed * size) / result.seconds;
      rows.push([
        String(size),
        mode === 'batch' ? 'MsgBatch (2 requests)' : `${size} × Msg.doAndSubmit`,
        events.toFixed(0),
        percentile(result.latenciesMs, 0.5).toFixed(1),
        percentile(result.latenciesMs, 0.99).toFixed(1),
        String(result.errors),
      ]);
      progress(`msg-batch: ${events.toFixed(0)} events/s, ${result.errors} errors${result.firstError ? ` (${result.firstError})` : ''}`);
    }
  }
  console.log(`\n### Batched two-phase messages: ${writers} writers, HTTP branch, Postgres store\n`);
  console.log(table(['events per local transaction', 'sent as', 'events/s', 'p50 ms per transaction', 'p99 ms', 'errors'], rows));
}

await runBench(main);
