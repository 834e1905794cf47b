/** The barrier's rules, on a real Postgres database, through pg and through drizzle. */
import { randomUUID } from 'node:crypto';
import { drizzle } from 'drizzle-orm/node-postgres';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchBarrier, BranchFailure, ensureBarrierTable, expressBranch, isBranchFailure, type DrizzleLike } from '../sdk/index.js';
import { backoffInterval, doubled, jitter } from '../schemas/backoff.js';
import { freshDatabase } from './helpers/db.js';

let pool: pg.Pool;
beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase() });
  await Promise.all([ensureBarrierTable(pool), ensureBarrierTable(pool)]); // racing services are fine
});
afterAll(async () => {
  await pool?.end();
});

const call = (gid: string, op: string) => new BranchBarrier({ trans_type: 'saga', gid, branch_id: '01', op });

describe('barrier', () => {
  it('runs a repeated request once', async () => {
    const gid = randomUUID();
    let runs = 0;
    for (let i = 0; i < 3; i++) await call(gid, 'action').run(pool, async () => runs++);
    expect(runs).toBe(1);
  });

  it('skips a compensation that arrives before its action (null compensation), then the late action (hanging)', async () => {
    const gid = randomUUID();
    const ran: string[] = [];
    expect(await call(gid, 'compensate').run(pool, async () => ran.push('compensate'))).toBeUndefined();
    expect(await call(gid, 'action').run(pool, async () => ran.push('action'))).toBeUndefined();
    expect(ran).toEqual([]);
  });

  it('runs action then compensation in the normal order', async () => {
    const gid = randomUUID();
    const ran: string[] = [];
    await call(gid, 'action').run(pool, async () => ran.push('action'));
    await call(gid, 'compensate').run(pool, async () => ran.push('compensate'));
    expect(ran).toEqual(['action', 'compensate']);
  });

  it('rolls the barrier row back with the business error, so a retry runs again', async () => {
    const gid = randomUUID();
    let runs = 0;
    await expect(
      call(gid, 'action').run(pool, async () => {
        runs++;
        throw new Error('db hiccup');
      }),
    ).rejects.toThrow('db hiccup');
    await call(gid, 'action').run(pool, async () => runs++);
    expect(runs).toBe(2);
  });

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

  it('answers the check-back from the barrier row: SUCCESS after a commit, FAILURE otherwise', async () => {
    const committed = randomUUID();
    await new BranchBarrier({ trans_type: 'msg', gid: committed, branch_id: '00', op: 'msg' }).run(pool, async () => undefined);
    expect(await BranchBarrier.queryPrepared(pool, committed)).toBe('SUCCESS');
    const never = randomUUID();
    const failure = await BranchBarrier.queryPrepared(pool, never).catch((e: unknown) => e);
    expect(isBranchFailure(failure)).toBe(true);
    // Asked again, the answer stays the same.
    expect(isBranchFailure(await BranchBarrier.queryPrepared(pool, never).catch((e: unknown) => e))).toBe(true);
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
