/** examples/xa-transfer runs as a user would run it: a real coordinator, Postgres and MariaDB. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshMysqlDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

let coordinator: TestCoordinator;
beforeAll(async () => {
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
});
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
});

it('runs the XA transfer: one commits in both databases, an overdraft and an unknown account roll back', async () => {
  const script = fileURLToPath(new URL('../dist/examples/xa-transfer/index.js', import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [script], {
    env: { ...process.env, CONCORD_URL: coordinator.dtm, DATABASE_URL: await freshDatabase(), MYSQL_URL: await freshMysqlDatabase() },
    timeout: 60_000,
  });
  expect(stdout).toContain('30 from 1 to 2: committed');
  expect(stdout).toMatch(/500 from 1 to 2: rolled back \(.*insufficient balance/);
  expect(stdout).toMatch(/10 from 1 to 3: rolled back \(.*no account 3/);
  expect(stdout).toContain('balances {"alice":70,"bob":30}');
});
