/** The embedded store: the same engine on PGlite, durable across a restart. */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Msg } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { startCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';

let dir: string;
let bank: BankService;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'concord-pglite-'));
  bank = await startBankService(await freshDatabase());
});
afterAll(async () => {
  await bank?.close();
  await rm(dir, { recursive: true, force: true });
});

it('delivers on the embedded store and keeps unfinished work across a restart', async () => {
  const store = join(dir, 'data');
  const first = await startCoordinator({ store, env: fastCoordinator });
  const done = `p-${randomUUID()}`;
  const pending = `p-${randomUUID()}`;
  try {
    expect(await (await fetch(`${first.url}/api/health`)).json()).toEqual({ status: 'ok', store: 'pglite' });
    await new Msg(first.dtm, done, { waitResult: true }).add(`${bank.url}/TransIn`, { amount: 1 }).submit();
    // A message whose branch keeps failing while the first node runs.
    bank.failNext('/TransOut', 1_000, 'error');
    await new Msg(first.dtm, pending).add(`${bank.url}/TransOut`, { amount: 1 }).submit();
    await expect.poll(() => bank.received(pending, '/TransOut'), { timeout: 10_000 }).toBeGreaterThan(0);
  } finally {
    expect(await first.stop()).toBe(0);
  }
  bank.failNext('/TransOut', 0, 'error');
  const second = await startCoordinator({ store, env: fastCoordinator });
  try {
    expect((await query(second.dtm, done)).transaction?.status).toBe('succeed');
    await waitForStatus(second.dtm, pending, 'succeed');
    expect(await bank.effects(pending)).toBe(1);
  } finally {
    expect(await second.stop()).toBe(0);
  }
});

it('makes a new store from the build-time template, with its small-footprint settings, and redoes an interrupted unpack', async () => {
  const store = join(dir, 'template');
  // What a start killed while unpacking leaves: a staging directory and no PG_VERSION.
  await mkdir(join(store, '.concord-template', 'base'), { recursive: true });
  await writeFile(join(store, '.concord-template', 'base', 'partial'), 'x');
  const node = await startCoordinator({ store, env: fastCoordinator });
  try {
    expect(await (await fetch(`${node.url}/api/health`)).json()).toEqual({ status: 'ok', store: 'pglite' });
  } finally {
    expect(await node.stop()).toBe(0);
  }
  expect(existsSync(join(store, '.concord-template'))).toBe(false);
  expect(await readFile(join(store, 'postgresql.auto.conf'), 'utf8')).toMatch(/^shared_buffers = '8MB'$/m);
  expect(existsSync(join(store, 'base', 'partial'))).toBe(false);
});
