/**
 * The guarantees under crashes: a service killed between commit and submit, a local rollback
 * followed by a crash, the race of a late commit against the check-back, and coordinators
 * killed or stopped while delivering.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchBarrier, Msg, pgExecutor } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

const sender = fileURLToPath(new URL('../dist/test/helpers/crashing-sender.js', import.meta.url));
const gid = () => `c-${randomUUID()}`;

let bankDb: string;
let bank: BankService;
let coordinator: RunningCoordinator;

beforeAll(async () => {
  bankDb = await freshDatabase();
  bank = await startBankService(bankDb);
  coordinator = await startCoordinator({ store: await freshDatabase(), env: fastCoordinator });
});
afterAll(async () => {
  await bank?.close();
  await coordinator?.stop();
});

async function crashSender(g: string, mode: 'commit' | 'rollback'): Promise<string> {
  const child = spawn(process.execPath, [sender, coordinator.dtm, bank.url, bankDb, g, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  expect(signal, out).toBe('SIGKILL');
  expect(code).toBeNull();
  return out;
}

describe('a service that crashes between its local transaction and submit', () => {
  it('has its committed message delivered exactly once by the check-back', async () => {
    const g = gid();
    await crashSender(g, 'commit');
    expect((await query(coordinator.dtm, g)).transaction?.status).toBe('prepared');
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(bank.received(g, '/TransIn')).toBe(1);
    expect(await bank.effects(g)).toBe(2); // the sender's 'out' and the delivered 'in'
  });

  it('never has a rolled-back message delivered', async () => {
    const g = gid();
    await crashSender(g, 'rollback');
    await waitForStatus(coordinator.dtm, g, 'failed');
    expect((await query(coordinator.dtm, g)).transaction?.rollback_reason).toContain('FAILURE');
    expect(bank.received(g, '/TransIn')).toBe(0);
    expect(await bank.effects(g)).toBe(0);
  });
});

describe('a late commit racing the check-back', () => {
  it('loses when the check-back came first: the late transaction cannot commit', async () => {
    const g = gid();
    await new Msg(coordinator.dtm, g, { timeoutToFail: 1 }).add(`${bank.url}/TransIn`, { amount: 1 }).prepare(`${bank.url}/QueryPrepared`);
    await waitForStatus(coordinator.dtm, g, 'failed');
    const barrier = new BranchBarrier({ trans_type: 'msg', gid: g, branch_id: '00', op: 'msg' });
    await expect(
      barrier.run<void, pg.PoolClient>(bank.pool, async (tx) => {
        await tx.query(`insert into transfers (gid, kind, amount) values ($1, 'out', 1)`, [g]);
      }),
    ).rejects.toThrow(/already decided/);
    expect(await bank.effects(g)).toBe(0);
    expect(bank.received(g, '/TransIn')).toBe(0);
  });

  it('wins when it commits while the check-back waits on its row lock', async () => {
    const g = gid();
    await new Msg(coordinator.dtm, g, { timeoutToFail: 1 }).add(`${bank.url}/TransIn`, { amount: 1 }).prepare(`${bank.url}/QueryPrepared`);
    const client = await bank.pool.connect();
    try {
      await client.query('begin');
      const barrier = new BranchBarrier({ trans_type: 'msg', gid: g, branch_id: '00', op: 'msg' });
      await barrier.within(pgExecutor(client), async () => {
        await client.query(`insert into transfers (gid, kind, amount) values ($1, 'out', 1)`, [g]);
      });
      // The check-back's insert of the 'rollback' row now blocks on our uncommitted 'msg' row.
      await expect
        .poll(
          async () =>
            (
              await bank.pool.query(
                `select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and query like '%dtm_barrier%'`,
              )
            ).rows[0].n,
          { timeout: 15_000, interval: 20 },
        )
        .toBeGreaterThan(0);
      await client.query('commit');
    } finally {
      client.release();
    }
    await waitForStatus(coordinator.dtm, g, 'succeed');
    expect(bank.received(g, '/TransIn')).toBe(1);
    expect(await bank.effects(g)).toBe(2);
  });
});

describe('several coordinators on one Postgres', () => {
  it('delivers every message when one node is killed mid-delivery, never calling a branch twice at once', async () => {
    const store = await freshDatabase();
    // A shorter request timeout makes shorter leases (5 s), so node b takes over sooner.
    const env = { ...fastCoordinator, CONCORD_REQUEST_TIMEOUT: '2' };
    const a = await startCoordinator({ store, env });
    const b = await startCoordinator({ store, env });
    bank.setLatency(150);
    try {
      const gids = Array.from({ length: 40 }, gid);
      const transfer = (g: string) => ({
        gid: g,
        trans_type: 'msg',
        steps: [{ action: `${bank.url}/TransOut` }, { action: `${bank.url}/TransIn` }],
        payloads: ['{"amount":1}', '{"amount":1}'],
      });
      // Half through node a (delivered in-process), half with failing first calls so the schedulers of both nodes retry them.
      bank.failNext('/TransIn', 10, 'error');
      const answers = await Promise.all(gids.map((g, i) => post(`${i % 2 ? b.dtm : a.dtm}/submit`, transfer(g))));
      expect(answers.map((r) => r.status)).toEqual(gids.map(() => 200));
      await expect
        .poll(() => gids.filter((g) => bank.received(g, '/TransOut') > 0).length, { timeout: 10_000, interval: 10 })
        .toBeGreaterThan(0);
      expect(await a.stop('SIGKILL')).toBeNull();
      for (const g of gids) await waitForStatus(b.dtm, g, 'succeed', 30_000);
      for (const g of gids) {
        expect(bank.received(g, '/TransIn')).toBeGreaterThanOrEqual(1);
        expect(await bank.effects(g)).toBe(2); // redeliveries after the kill are absorbed by the barrier
      }
      expect(bank.maxOverlap()).toBe(1);
    } finally {
      bank.setLatency(0);
      await a.stop('SIGKILL');
      await b.stop();
    }
  });

  it('exits on SIGTERM within its shutdown timeout although clients keep connections alive', async () => {
    const node = await startCoordinator({ store: await freshDatabase(), env: { ...fastCoordinator, CONCORD_SHUTDOWN_TIMEOUT: '2' } });
    // Keep-alive clients (the SDK's pool) would hold the server open for its 72 s keep-alive otherwise.
    await Promise.all(Array.from({ length: 8 }, () => new Msg(node.dtm, gid()).add(`${bank.url}/TransIn`, { amount: 1 }).submit()));
    const started = Date.now();
    expect(await node.stop('SIGTERM')).toBe(0);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('drains in-flight deliveries on SIGTERM, exits 0, and leaves nothing behind', async () => {
    const store = await freshDatabase();
    const first = await startCoordinator({ store, env: fastCoordinator });
    bank.setLatency(300);
    const gids = Array.from({ length: 10 }, gid);
    try {
      await Promise.all(
        gids.map((g) =>
          new Msg(first.dtm, g).add(`${bank.url}/TransIn`, { amount: 1 }).add(`${bank.url}/TransOut`, { amount: 1 }).submit(),
        ),
      );
      expect(await first.stop('SIGTERM')).toBe(0);
    } finally {
      bank.setLatency(0);
    }
    // What the first node finished is final; whatever it did not reach was released and a second node completes it.
    const second = await startCoordinator({ store, env: fastCoordinator });
    try {
      for (const g of gids) await waitForStatus(second.dtm, g, 'succeed');
      for (const g of gids) expect(await bank.effects(g)).toBe(2);
    } finally {
      await second.stop();
    }
  });
});
