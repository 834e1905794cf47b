/** The gRPC transfer example runs as a user would run it, against a real coordinator process and Postgres. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { inProcessCoordinator, type TestCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

let coordinator: TestCoordinator;
beforeAll(async () => {
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
}, 120_000);
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
});

it('runs the gRPC saga transfer: one transfer lands, the overdraft rolls back', async () => {
  const script = fileURLToPath(new URL('../dist/examples/grpc-transfer/index.js', import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [script], {
    env: { ...process.env, CONCORD_URL: coordinator.dtm, DATABASE_URL: await freshDatabase() },
    timeout: 60_000,
  });
  expect(stdout).toMatch(/transferred 30/);
  expect(stdout).toMatch(/rolled back \(.*\)/);
  expect(stdout).toContain('balances [{"id":1,"balance":70},{"id":2,"balance":30}]');
});
