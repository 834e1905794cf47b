/** Batched two-phase messages: many messages from one local transaction in two requests. */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BranchBarrier, BranchFailure, CoordinatorClient, Msg, MsgBatch } from '../sdk/index.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

let coordinator: TestCoordinator;
let bank: BankService;

beforeAll(async () => {
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
  bank = await startBankService(await freshDatabase());
});
afterAll(async () => {
  await bank?.close();
  expect(await coordinator?.stop()).toBe(0);
});

const gid = () => `batch-${randomUUID()}`;

function batchOf(n: number): MsgBatch {
  const batch = new MsgBatch(coordinator.dtm);
  for (let i = 0; i < n; i++) batch.add(new Msg(coordinator.dtm, gid()).add(`${bank.url}/TransIn`, { amount: i + 1 }));
  return batch;
}

it('prepares 50 messages, commits them with one local transaction, submits them, and delivers each once', async () => {
  const batch = batchOf(50);
  const marker = gid();
  await batch.doAndSubmit<void, pg.PoolClient>(`${bank.url}/QueryPrepared`, bank.pool, async (tx) => {
    await tx.query('insert into transfers (gid, kind, amount) values ($1, $2, $3)', [marker, 'out', 50]);
  });
  for (const g of batch.gids) await waitForStatus(coordinator.dtm, g, 'succeed');
  expect(batch.gids.map((g) => bank.received(g, '/TransIn'))).toEqual(new Array<number>(50).fill(1));
  // One barrier row per message, written in the business's transaction.
  const { rows } = await bank.pool.query<{ n: string }>(
    `select count(*)::text as n from dtm_barrier.barrier where gid = any($1) and branch_id = '00'`,
    [batch.gids],
  );
  expect(Number(rows[0]!.n)).toBe(50);
});

it('aborts every message when the business refuses, and delivers none', async () => {
  const batch = batchOf(5);
  await expect(
    batch.doAndSubmit(`${bank.url}/QueryPrepared`, bank.pool, async () => {
      throw new BranchFailure('insufficient funds');
    }),
  ).rejects.toThrow('insufficient funds');
  for (const g of batch.gids) expect((await query(coordinator.dtm, g)).transaction?.status).toBe('failed');
  expect(batch.gids.map((g) => bank.received(g, '/TransIn'))).toEqual([0, 0, 0, 0, 0]);
});

it('delivers the messages of a committed batch whose sender died before submitting (check-back per message)', async () => {
  const batch = batchOf(3);
  const client = new CoordinatorClient(coordinator.dtm);
  const requests = batch.gids.map((g) =>
    new Msg(coordinator.dtm, g, { timeoutToFail: 1 }).add(`${bank.url}/TransIn`, { amount: 1 }).toRequest(`${bank.url}/QueryPrepared`),
  );
  expect((await client.batchCall('prepare', requests)).map((r) => r.status)).toEqual([200, 200, 200]);
  await BranchBarrier.runForMessages(bank.pool, batch.gids, async () => undefined);
  // No submit: the coordinator asks the service about each one.
  for (const g of batch.gids) await waitForStatus(coordinator.dtm, g, 'succeed');
  expect(batch.gids.map((g) => bank.received(g, '/TransIn'))).toEqual([1, 1, 1]);
});

it('answers each message for itself: one refused, the others stored', async () => {
  const client = new CoordinatorClient(coordinator.dtm);
  const [a, b] = [gid(), gid()];
  await new Msg(coordinator.dtm, a).add(`${bank.url}/TransIn`, { amount: 1 }).prepare(`${bank.url}/QueryPrepared`);
  await new Msg(coordinator.dtm, a).abort('changed my mind');
  const results = await client.batchCall('submit', [
    new Msg(coordinator.dtm, a).add(`${bank.url}/TransIn`, { amount: 1 }).toRequest(),
    new Msg(coordinator.dtm, b).add(`${bank.url}/TransIn`, { amount: 1 }).toRequest(),
  ]);
  expect(results[0]).toMatchObject({ gid: a, status: 409, dtm_result: 'FAILURE' });
  expect(results[1]).toMatchObject({ gid: b, status: 200, dtm_result: 'SUCCESS' });
  await waitForStatus(coordinator.dtm, b, 'succeed');
});

it('refuses a malformed batch with 400 naming the item and field, storing nothing', async () => {
  const [a, b] = [gid(), gid()];
  const step = { steps: [{ action: `${bank.url}/TransIn` }], payloads: ['{}'] };
  const url = `${coordinator.url}/api/concord/msg/submit`;
  const wrongType = await post(url, {
    transactions: [
      { gid: a, trans_type: 'msg', ...step },
      { gid: b, trans_type: 'saga', ...step },
    ],
  });
  expect(wrongType).toMatchObject({ status: 400, body: { code: 'INVALID_REQUEST', field: 'transactions.1.trans_type' } });
  const twice = await post(url, {
    transactions: [
      { gid: a, trans_type: 'msg', ...step },
      { gid: a, trans_type: 'msg', ...step },
    ],
  });
  expect(twice).toMatchObject({ status: 400, body: { field: 'transactions.1.gid' } });
  const empty = await post(url, { transactions: [] });
  expect(empty).toMatchObject({ status: 400, body: { field: 'transactions' } });
  for (const g of [a, b]) expect((await query(coordinator.dtm, g)).transaction ?? null).toBeNull();
});
