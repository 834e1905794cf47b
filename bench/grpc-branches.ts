/**
 * gRPC branches against HTTP branches: two-step sagas per second end to end, through one
 * coordinator on Postgres, whose steps are the same no-op handler served over HTTP (Fastify with
 * the SDK's fastifyBranch) or over gRPC (grpc-js with the SDK's grpcBranch). W workers each submit
 * one saga at a time with wait_result. Part of `npm run bench`; alone:
 *
 *   npm run build && node dist/bench/grpc-branches.js
 *
 * Postgres as the other benches get it (CONCORD_TEST_PG_URL, Docker or Debian's, durable). Knobs:
 * BENCH_SAGAS (per kind, default 2000), BENCH_WORKERS (default 16).
 */
import { randomBytes } from 'node:crypto';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import Fastify from 'fastify';
import { Saga, fastifyBranch, grpcBranch, grpcBranchService } from '../sdk/index.js';
import { createDatabase } from '../test/services/postgres.js';
import { percentile } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { startBenchPostgres } from './postgres-server.js';

const sagas = Number(process.env.BENCH_SAGAS ?? 2000);
const workers = Number(process.env.BENCH_WORKERS ?? 16);

async function main(bench: Bench): Promise<void> {
  const http = Fastify();
  for (const path of ['/Step', '/Undo'])
    http.post(
      path,
      fastifyBranch(async () => undefined),
    );
  const httpUrl = await http.listen({ port: 0, host: '127.0.0.1' });
  bench.defer(() => http.close());

  const server = new Server();
  const { definition, implementation } = grpcBranchService('bench.Steps', {
    Step: grpcBranch(async () => undefined),
    Undo: grpcBranch(async () => undefined),
  });
  server.addService(definition, implementation);
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  bench.defer(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));

  const postgres = await startBenchPostgres(bench, 'concord_bench_grpc_');
  const coordinator = await bench.startCoordinator({ store: await createDatabase(postgres.url, `${postgres.prefix}store`) });
  const steps = {
    http: { action: `${httpUrl}/Step`, compensate: `${httpUrl}/Undo` },
    grpc: { action: `127.0.0.1:${grpcPort}/bench.Steps/Step`, compensate: `127.0.0.1:${grpcPort}/bench.Steps/Undo` },
  };

  async function run(kind: keyof typeof steps): Promise<string> {
    const { action, compensate } = steps[kind];
    const latencies: number[] = [];
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: workers }, async () => {
        while (next++ < sagas) {
          const t = performance.now();
          await new Saga(coordinator.dtm, `bench-${kind}-${randomBytes(8).toString('hex')}`, { waitResult: true })
            .add(action, compensate, { amount: 30 })
            .add(action, compensate, { amount: 30 })
            .submit();
          latencies.push(performance.now() - t);
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    latencies.sort((a, b) => a - b);
    return `| ${kind} | ${sagas} | ${workers} | ${(sagas / seconds).toFixed(0)} | ${percentile(latencies, 0.5).toFixed(1)} | ${percentile(latencies, 0.99).toFixed(1)} |`;
  }

  // A warm-up of each kind (connections, JIT), then the measured runs.
  for (const kind of ['http', 'grpc'] as const)
    await new Saga(coordinator.dtm, `warm-${kind}`, { waitResult: true }).add(steps[kind].action, '', {}).submit();
  const rows = [await run('http'), await run('grpc'), await run('http'), await run('grpc')];
  console.log('| steps | sagas | workers | sagas/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n' + rows.join('\n'));
}

await runBench(main);
