/**
 * A two-phase message whose local change lives in Postgres, MariaDB or Redis, end to end: a real
 * coordinator, the SDK's doAndSubmit, and the coordinator's check-back answered by
 * fastifyQueryPrepared from the same store, when the sender dies before or after its local change.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchBarrier, fastifyBranch, fastifyQueryPrepared, isBranchFailure, Msg, type BarrierSource } from '../sdk/index.js';
import { barrierBackends, type BarrierBackend } from './helpers/barrier-backends.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshStore } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';

let coordinator: TestCoordinator;
beforeAll(async () => {
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
}, 120_000);
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
});

const msgBarrier = (gid: string) => new BranchBarrier({ trans_type: 'msg', gid, branch_id: '00', op: 'msg' });

describe.each(barrierBackends)('two-phase message with its local change in %s', (_name, open) => {
  let store: BarrierBackend;
  let app: FastifyInstance;
  let url = '';
  const received = new Map<string, number>();

  beforeAll(async () => {
    store = await open();
    app = Fastify();
    app.get('/QueryPrepared', fastifyQueryPrepared(store.source));
    app.post(
      '/TransIn',
      fastifyBranch(async ({ barrier }) => {
        received.set(barrier.call.gid, (received.get(barrier.call.gid) ?? 0) + 1);
      }),
    );
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await app?.close();
    await store?.close();
  });

  const account = async (balance = 100) => {
    const gid = randomUUID();
    await store.setBalance(gid, balance);
    return gid;
  };
  const message = (gid: string) => new Msg(coordinator.dtm, gid).add(`${url}/TransIn`, { amount: 30 });
  /** doAndSubmit with this store's form of the change (one call for both overloads). */
  const doAndSubmit = (gid: string, amount: number) =>
    (message(gid).doAndSubmit as (q: string, db: BarrierSource, change: unknown) => Promise<unknown>).call(
      message(gid),
      `${url}/QueryPrepared`,
      store.source,
      store.change(gid, amount),
    );

  it('doAndSubmit commits the local change, and the message is delivered', async () => {
    const gid = await account();
    await doAndSubmit(gid, -30);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(received.get(gid)).toBeGreaterThan(0);
    expect(await store.balance(gid)).toBe(70);
  });

  it('doAndSubmit aborts the message when the local change fails', async () => {
    const gid = await account(10);
    expect(isBranchFailure(await doAndSubmit(gid, -30).catch((e: unknown) => e))).toBe(true);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(received.get(gid)).toBeUndefined();
    expect(await store.balance(gid)).toBe(10);
  });

  it('a refused prepare fails doAndSubmit: the local change never runs and leaves no barrier row', async () => {
    const gid = await account();
    // The same gid prepared with other content: the coordinator refuses doAndSubmit's prepare.
    await new Msg(coordinator.dtm, gid).add(`${url}/TransIn`, { amount: 99 }).prepare(`${url}/QueryPrepared`);
    const refused = await doAndSubmit(gid, -30).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Error);
    expect(isBranchFailure(refused)).toBe(false);
    expect(await store.balance(gid)).toBe(100);
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('prepared');
    // No barrier row committed: the change applies once through the same barrier.
    expect(await store.apply(msgBarrier(gid), gid, -30)).toBe(true);
    expect(await store.balance(gid)).toBe(70);
  });

  it('a sender that died after its local change: the check-back answers SUCCESS and the message goes out', async () => {
    const gid = await account();
    await message(gid).prepare(`${url}/QueryPrepared`);
    expect(await store.apply(msgBarrier(gid), gid, -30)).toBe(true);
    // No submit: the coordinator asks the query-prepared URL after timeout_to_fail.
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(received.get(gid)).toBeGreaterThan(0);
    expect(await store.balance(gid)).toBe(70);
  });

  it('a sender that died before its local change: the check-back answers FAILURE, and the late change is refused', async () => {
    const gid = await account();
    await message(gid).prepare(`${url}/QueryPrepared`);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await query(coordinator.dtm, gid)).branches.every((b) => b.status !== 'succeed')).toBe(true);
    expect(isBranchFailure(await store.apply(msgBarrier(gid), gid, -30).catch((e: unknown) => e))).toBe(true);
    expect(received.get(gid)).toBeUndefined();
    expect(await store.balance(gid)).toBe(100);
  });
});
