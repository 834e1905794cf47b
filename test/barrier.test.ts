/** The barrier's rules, one suite on real Postgres, MariaDB and Redis; drizzle and the Express adapter on Postgres. */
import { randomUUID } from 'node:crypto';
import { drizzle } from 'drizzle-orm/node-postgres';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BranchBarrier,
  BranchFailure,
  ensureBarrierTable,
  expressBranch,
  isBranchFailure,
  type BranchCallQuery,
  type DrizzleLike,
} from '../sdk/index.js';
import { barrierBackends, type BarrierBackend } from './helpers/barrier-backends.js';
import { backoffInterval, doubled, jitter } from '../schemas/backoff.js';
import { freshDatabase } from './helpers/db.js';

let pool: pg.Pool;
beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase() });
  await ensureBarrierTable(pool);
});
afterAll(async () => {
  await pool?.end();
});

const call = (gid: string, op: string, trans_type: BranchCallQuery['trans_type'] = 'saga') =>
  new BranchBarrier({ trans_type, gid, branch_id: '01', op });
const msgCall = (gid: string) => new BranchBarrier({ trans_type: 'msg', gid, branch_id: '00', op: 'msg' });
const failureOf = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (e: unknown) => e,
  );

describe.each(barrierBackends)('barrier on %s', (_name, open) => {
  let store: BarrierBackend;
  beforeAll(async () => {
    store = await open();
  });
  afterAll(async () => {
    await store?.close();
  });

  /** A new account holding 100, named by a new gid. */
  const account = async () => {
    const gid = randomUUID();
    await store.setBalance(gid, 100);
    return gid;
  };

  it('runs a repeated request once', async () => {
    const gid = await account();
    const ran = [];
    for (let i = 0; i < 3; i++) ran.push(await store.apply(call(gid, 'action'), gid, -30));
    expect(ran).toEqual([true, false, false]);
    expect(await store.balance(gid)).toBe(70);
  });

  it.each([
    ['saga', 'action', 'compensate'],
    ['tcc', 'try', 'cancel'],
  ] as const)('%s: null compensation, then the hanging %s is skipped', async (transType, origin, compensation) => {
    const gid = await account();
    expect(await store.apply(call(gid, compensation, transType), gid, 30)).toBe(false);
    expect(await store.apply(call(gid, origin, transType), gid, -30)).toBe(false);
    expect(await store.balance(gid)).toBe(100);
  });

  it('runs action then compensation in the normal order, each once', async () => {
    const gid = await account();
    expect(await store.apply(call(gid, 'action'), gid, -30)).toBe(true);
    expect(await store.apply(call(gid, 'compensate'), gid, 30)).toBe(true);
    expect(await store.apply(call(gid, 'compensate'), gid, 30)).toBe(false);
    expect(await store.balance(gid)).toBe(100);
  });

  it('leaves no mark when the business fails, so a retry runs', async () => {
    const gid = await account();
    await store.setBalance(gid, 10);
    expect(isBranchFailure(await failureOf(store.apply(call(gid, 'action'), gid, -30)))).toBe(true);
    await store.setBalance(gid, 100);
    expect(await store.apply(call(gid, 'action'), gid, -30)).toBe(true);
    expect(await store.balance(gid)).toBe(70);
  });

  it('runs the business once for concurrent identical calls', async () => {
    const gid = await account();
    const ran = await Promise.all(Array.from({ length: 5 }, () => store.apply(call(gid, 'action'), gid, -30)));
    expect(ran.filter(Boolean)).toHaveLength(1);
    expect(await store.balance(gid)).toBe(70);
  });

  it('answers the check-back SUCCESS after the local change committed, and the same again', async () => {
    const gid = await account();
    expect(await store.apply(msgCall(gid), gid, -30)).toBe(true);
    expect(await BranchBarrier.queryPrepared(store.source, gid)).toBe('SUCCESS');
    expect(await BranchBarrier.queryPrepared(store.source, gid)).toBe('SUCCESS');
    // A second run of the same message's local change is refused, not skipped.
    expect(isBranchFailure(await failureOf(store.apply(msgCall(gid), gid, -30)))).toBe(true);
    expect(await store.balance(gid)).toBe(70);
  });

  it('answers the check-back FAILURE when nothing committed, and then refuses the late local change', async () => {
    const gid = await account();
    for (let i = 0; i < 2; i++) expect(isBranchFailure(await failureOf(BranchBarrier.queryPrepared(store.source, gid)))).toBe(true);
    expect(isBranchFailure(await failureOf(store.apply(msgCall(gid), gid, -30)))).toBe(true);
    expect(await store.balance(gid)).toBe(100);
  });
});

describe('barrier', () => {
  it('works inside a drizzle transaction, writing with the same transaction', async () => {
    const db = drizzle(pool) as unknown as DrizzleLike;
    await pool.query('create table if not exists notes (gid text)');
    const gid = randomUUID();
    for (let i = 0; i < 2; i++) {
      await call(gid, 'action').run<void, DrizzleLike>(db, async (tx) => {
        await tx.execute(sql`insert into notes values (${gid})`);
      });
    }
    expect((await pool.query('select count(*)::int as n from notes where gid = $1', [gid])).rows[0].n).toBe(1);
  });

  it('refuses a barrier without the DTM query parameters, naming the missing one', () => {
    expect(() => BranchBarrier.from({ gid: 'g', trans_type: 'msg', op: 'msg' })).toThrow(/branch_id/);
  });
});

describe('backoff', () => {
  it('doubles up to the cap and never below the base', () => {
    const policy = { base: 1, cap: 8 };
    expect([0, 1, 2, 3, 4, 60].map((n) => backoffInterval(policy, n))).toEqual([1, 2, 4, 8, 8, 8]);
    expect(doubled(policy, 0.1)).toBe(1);
    expect(doubled(policy, 6)).toBe(8);
  });

  it('draws the delay from the upper half of the interval', () => {
    expect(jitter(10, () => 0)).toBe(5);
    expect(jitter(10, () => 0.999)).toBeCloseTo(9.995);
  });
});

describe('Express adapter', () => {
  it('answers DTM calls: 200 once per branch, 409 for BranchFailure, 400 naming a missing parameter', async () => {
    const { default: express } = await import('express');
    const app = express();
    app.use(express.json());
    let applied = 0;
    app.post(
      '/pay',
      expressBranch<{ fail?: boolean }>(async ({ barrier, body }) => {
        if (body.fail) throw new BranchFailure('card declined');
        await barrier.run(pool, async () => applied++);
      }),
    );
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as { port: number };
    const call = (query: string, body: unknown) =>
      fetch(`http://127.0.0.1:${port}/pay?${query}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    try {
      const gid = randomUUID();
      const q = `gid=${gid}&trans_type=msg&branch_id=01&op=action`;
      expect((await call(q, {})).status).toBe(200);
      expect((await call(q, {})).status).toBe(200);
      expect(applied).toBe(1);
      const declined = await call(`gid=${randomUUID()}&trans_type=msg&branch_id=01&op=action`, { fail: true });
      expect(declined.status).toBe(409);
      expect(await declined.json()).toEqual({ dtm_result: 'FAILURE', message: 'card declined' });
      const missing = await call(`gid=${gid}&trans_type=msg&op=action`, {});
      expect(missing.status).toBe(400);
      expect(((await missing.json()) as { message: string }).message).toContain('branch_id');
    } finally {
      server.close();
    }
  });
});
