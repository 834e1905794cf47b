/**
 * Transfer benchmark: TCC and XA transfers per second with two branches, end to end. Each of N
 * workers runs one transfer at a time with wait_result, so a transfer counts when its second
 * phase (every Confirm, every XA commit) is done. TCC: the bank service of the tests (Try,
 * Confirm, Cancel under the barrier, Postgres). XA: two xaLocal banks, on two Postgres databases
 * (xa-pg) or on Postgres and MariaDB (xa-mysql); each worker moves money between accounts of its
 * own, so workers do not queue on one row's lock. Progress goes to stderr, the table to stdout.
 *
 *   npm run build && node dist/bench/transfers.js
 */
import { randomBytes } from 'node:crypto';
import { startBankService, type BankService } from '../test/helpers/bank-service.js';
import { startXaBank, type XaBank } from '../test/helpers/xa-bank.js';
import { createMysqlDatabase, dropMysqlDatabases, startMariaDB } from '../test/services/mariadb.js';
import { createDatabase } from '../test/services/postgres.js';
import { tcc, xa } from '../sdk/index.js';
import { percentile, runWorkers } from './closed-loop.js';
import { runBench, type Bench } from './lifecycle.js';
import { fixed, table } from './markdown.js';
import { loadTransferBenchOptions, type TransferKind } from './options.js';
import { startBenchPostgres } from './postgres-server.js';
import { codeVersion, machineLine, progress } from './report.js';

const options = loadTransferBenchOptions(process.env);
const maxWorkers = Math.max(...options.concurrency);

interface Row {
  kind: TransferKind;
  concurrency: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  firstError?: string;
}

/** One transfer of a kind, given the worker (its accounts) and a fresh gid. */
type Transfer = (worker: number, gid: string) => Promise<void>;

async function main(bench: Bench): Promise<void> {
  progress(`transfer settings: ${JSON.stringify(options)}`);
  const postgres = await startBenchPostgres(bench, 'concord_bench_transfer_');
  const accounts = (side: string) => Object.fromEntries(Array.from({ length: maxWorkers }, (_, w) => [`${side}${w}`, 1_000_000_000]));
  const run = randomBytes(3).toString('hex');
  const rows: Row[] = [];
  for (const kind of options.kinds) {
    bench.checkAborted();
    const coordinator = await bench.startCoordinator({
      store: await createDatabase(postgres.url, `${postgres.prefix}store_${kind.replace('-', '_')}`),
      env: { CONCORD_LOG_LEVEL: 'warn' },
    });
    progress(`coordinator (${kind}) started, pid ${coordinator.proc.pid}`);
    const db = (name: string) => createDatabase(postgres.url, `${postgres.prefix}${kind.replace('-', '_')}_${name}`);
    let transfer: Transfer;
    if (kind === 'tcc') {
      const bank: BankService = await startBankService(await db('bank'));
      bench.defer(() => bank.close());
      transfer = (_worker, gid) =>
        tcc(
          coordinator.dtm,
          gid,
          async (t) => {
            for (const side of ['TransOut', 'TransIn']) {
              const url = `${bank.url}/${side}`;
              await t.callBranch({ amount: 1 }, `${url}Try`, `${url}Confirm`, `${url}Cancel`);
            }
          },
          { waitResult: true },
        );
    } else {
      let second: XaBank;
      if (kind === 'xa-mysql') {
        const mariadb = await startMariaDB();
        bench.defer(() => mariadb.stop());
        const prefix = `${postgres.prefix}xa_`;
        bench.defer(() => dropMysqlDatabases(mariadb.url, prefix));
        second = await startXaBank('mysql', await createMysqlDatabase(mariadb.url, `${prefix}bob`), accounts('b'));
      } else {
        second = await startXaBank('postgres', await db('bob'), accounts('b'));
      }
      const first = await startXaBank('postgres', await db('alice'), accounts('a'));
      bench.defer(() => first.close());
      bench.defer(() => second.close());
      transfer = (worker, gid) =>
        xa(
          coordinator.dtm,
          gid,
          async (x) => {
            await x.callBranch({ account: `a${worker}`, amount: -1 }, `${first.url}/Trans`);
            await x.callBranch({ account: `b${worker}`, amount: 1 }, `${second.url}/Trans`);
          },
          { waitResult: true },
        );
    }
    for (const concurrency of options.concurrency) {
      bench.checkAborted();
      const result = await runWorkers(
        { concurrency, warmupMs: options.warmupSeconds * 1000, measureMs: options.seconds * 1000, signal: bench.signal },
        async (worker, index) => {
          await transfer(worker, `bt-${run}-${kind}-${concurrency}-${worker}-${index}`);
          return { doneAt: performance.now() };
        },
      );
      const row: Row = {
        kind,
        concurrency,
        perSecond: result.completed / result.seconds,
        p50Ms: percentile(result.latenciesMs, 0.5),
        p99Ms: percentile(result.latenciesMs, 0.99),
        errors: result.errors,
        firstError: result.firstError,
      };
      progress(`${kind} × ${concurrency}: ${row.perSecond.toFixed(0)}/s, p50 ${row.p50Ms.toFixed(1)} ms, p99 ${row.p99Ms.toFixed(1)} ms`);
      rows.push(row);
    }
    await bench.stopCoordinator(coordinator);
  }
  process.stdout.write(render(rows, postgres.version));
}

function render(rows: Row[], postgresVersion: string): string {
  const lines = [
    `## TCC and XA transfers (two branches)`,
    '',
    `${machineLine(postgresVersion)}; code ${codeVersion()}; ${options.seconds} s per row after ${options.warmupSeconds} s of warm-up.`,
    '',
    table(
      ['kind', 'workers', 'transfers/s', 'p50 ms', 'p99 ms', 'errors'],
      rows.map((r) => [r.kind, String(r.concurrency), fixed(r.perSecond, 0), fixed(r.p50Ms, 1), fixed(r.p99Ms, 1), String(r.errors)]),
    ),
  ];
  const failed = rows.filter((r) => r.firstError);
  for (const r of failed) lines.push('', `${r.kind} × ${r.concurrency}, first error: ${r.firstError}`);
  return lines.join('\n') + '\n';
}

await runBench(main);
