/** The embedded store serves one process: a second is refused, a restart waits, a killed holder is taken over. */
import { mkdtemp, rm } from 'node:fs/promises';
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
  dir = await mkdtemp(join(tmpdir(), 'concord-pglite-lock-'));
  bank = await startBankService(await freshDatabase());
});
afterAll(async () => {
  await bank?.close();
  await rm(dir, { recursive: true, force: true });
});

it('refuses a second coordinator on the same directory, naming it and the holder, while the first keeps serving', async () => {
  const store = join(dir, 'exclusive');
  const first = await startCoordinator({ store, env: fastCoordinator });
  try {
    const startedAt = Date.now();
    const second = startCoordinator({ store, env: { ...fastCoordinator, CONCORD_STORE_LOCK_TIMEOUT: '1' } });
    await expect(second).rejects.toThrow(/exited with 1/);
    await second.catch((err: Error) => {
      expect(err.message).toContain(`the store directory ${store} is in use by another coordinator (pid ${first.proc.pid}`);
    });
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_000);
    const gid = `l-${randomUUID()}`;
    await new Msg(first.dtm, gid, { waitResult: true }).add(`${bank.url}/TransIn`, { amount: 1 }).submit();
    expect((await query(first.dtm, gid)).transaction?.status).toBe('succeed');
    expect(await bank.effects(gid)).toBe(1);
  } finally {
    expect(await first.stop()).toBe(0);
  }
});

it('takes over from a SIGKILLed holder at once and from a stopping one when it exits, losing no acknowledged transaction', async () => {
  const store = join(dir, 'takeover');
  const first = await startCoordinator({ store, env: fastCoordinator });
  const gids = Array.from({ length: 60 }, () => `l-${randomUUID()}`);
  // Branches fail for a while, so most messages are still unfinished when their node dies.
  bank.failNext('/TransOut', 100, 'error');
  for (const gid of gids) await new Msg(first.dtm, gid).add(`${bank.url}/TransOut`, { amount: 1 }).submit();
  expect(await first.stop('SIGKILL')).toBe(null);

  const killedAt = Date.now();
  const second = await startCoordinator({ store, env: fastCoordinator });
  expect(Date.now() - killedAt).toBeLessThan(8_000); // no waiting for a lock whose holder is dead
  // A restart that overlaps the old process's exit waits for the lock instead of failing or sharing it.
  let third: Awaited<ReturnType<typeof startCoordinator>> | undefined;
  try {
    const starting = startCoordinator({ store, env: { ...fastCoordinator, CONCORD_STORE_LOCK_TIMEOUT: '30' } });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await fetch(`${second.url}/api/health`)).status).toBe(200);
    expect(await second.stop()).toBe(0);
    third = await starting;
    for (const gid of gids) await waitForStatus(third.dtm, gid, 'succeed');
    for (const gid of gids) expect(await bank.effects(gid)).toBe(1);
  } finally {
    await second.stop();
    expect(await third?.stop()).toBe(0);
  }
});
