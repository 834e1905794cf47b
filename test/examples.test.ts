/** The examples run as users would run them, against a real coordinator and Postgres. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { freePort, type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshMysqlDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

let coordinator: TestCoordinator;
beforeAll(async () => {
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
});
afterAll(async () => {
  await coordinator?.stop();
});

/** Runs the built example `name` with the coordinator's URL and `env`; its standard output. */
async function runExample(name: string, env: Record<string, string>, timeout = 30_000): Promise<string> {
  const script = fileURLToPath(new URL(`../dist/examples/${name}/index.js`, import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [script], {
    env: { ...process.env, CONCORD_URL: coordinator.dtm, ...env },
    timeout,
  });
  return stdout;
}

it('runs the bank-transfer quick start: one transfer lands, the overdraft rolls back', async () => {
  const stdout = await runExample('bank-transfer', { DATABASE_URL: await freshDatabase() });
  expect(stdout).toMatch(/transferred 30/);
  expect(stdout).toMatch(/rolled back \(insufficient balance\)/);
  expect(stdout).toContain('balances [{"id":1,"balance":70},{"id":2,"balance":30}]');
});

it('runs the bank transfer with the barrier in MySQL and Redis: one transfer lands, the overdraft rolls back', async () => {
  const stdout = await runExample('bank-transfer-mysql-redis', { MYSQL_URL: await freshMysqlDatabase(), REDIS_URL: inject('redisUrl') });
  expect(stdout).toMatch(/transferred 30/);
  expect(stdout).toMatch(/rolled back \(insufficient balance\)/);
  expect(stdout).toContain('balances {"alice":70,"bob":30}');
});

it('runs the workflow bank transfer: one lands, a closed account is compensated, an overdraft fails at once', async () => {
  const stdout = await runExample('workflow-transfer', { DATABASE_URL: await freshDatabase(), PORT: String(await freePort()) });
  expect(stdout).toMatch(/transferred 30/);
  expect(stdout).toMatch(/rolled back \(.*account 3 is closed\)/);
  expect(stdout).toMatch(/rolled back \(insufficient balance\)/);
  expect(stdout).toContain('balances [{"id":1,"balance":70},{"id":2,"balance":30},{"id":3,"balance":0}]');
});

it('runs the gRPC saga transfer: one transfer lands, the overdraft rolls back', async () => {
  const stdout = await runExample('grpc-transfer', { DATABASE_URL: await freshDatabase() }, 60_000);
  expect(stdout).toMatch(/transferred 30/);
  expect(stdout).toMatch(/rolled back \(.*\)/);
  expect(stdout).toContain('balances [{"id":1,"balance":70},{"id":2,"balance":30}]');
});
