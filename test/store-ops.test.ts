/**
 * The store's operations called directly on a freshly migrated Postgres database, without a
 * coordinator: claims split work, a node that lost its lease writes nothing, a stale reply
 * changes nothing, a branch registers only while its transaction is prepared.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../coordinator/store/database.js';
import { recordReplies, sagaBranches, settleSagas, updateSagaBranches } from '../coordinator/store/sagas.js';
import { abortPrepared, registerBranches } from '../coordinator/store/tcc.js';
import {
  claimDue,
  extendLease,
  findTransactions,
  insertTransactions,
  promoteToSubmitted,
  settle,
  type NewBranch,
  type NewTransaction,
} from '../coordinator/store/transactions.js';
import { freshDatabase } from './helpers/db.js';

let database: Database;

beforeAll(async () => {
  database = await openDatabase(await freshDatabase(), { poolSize: 4, logger: pino({ level: 'silent' }), lockTimeout: 5 });
});
afterAll(async () => {
  await database?.close();
});

function transaction(over: Partial<NewTransaction> = {}): NewTransaction {
  return {
    gid: `store-${randomUUID()}`,
    transType: 'msg',
    status: 'submitted',
    queryPrepared: '',
    protocol: 'http',
    options: {},
    customData: '',
    contentHash: 'h',
    interval: 1,
    dueIn: 0,
    owner: '',
    branches: [],
    ...over,
  };
}
const branch = (branchId: string, op: string): NewBranch => ({ branchId, op, url: 'http://svc/x', data: '', meta: {}, orderKey: null });

describe('store operations', () => {
  it('returns the rows it wrote: inserted, promoted and aborted transactions come back with their pending branches', async () => {
    const t = transaction({ status: 'prepared', dueIn: 60, branches: [branch('01', 'action'), branch('02', 'action')] });
    const created = (await insertTransactions(database, [t, { ...t, contentHash: 'other' }])).get(t.gid);
    expect(created?.trans).toMatchObject({ gid: t.gid, status: 'prepared', submit_seq: null, content_hash: 'h', retry_count: 0 });
    expect(created?.trans.id).toBeGreaterThan(0);
    expect(created?.branches.map((b) => [b.branch_id, b.status, b.gid])).toEqual([
      ['01', 'prepared', t.gid],
      ['02', 'prepared', t.gid],
    ]);
    expect(created?.branches.every((b) => b.id > 0)).toBe(true);
    // One branch delivered already (a check-back raced a submit): only the other is pending.
    await database.rows(sql`update trans_branch_op set status = 'succeed' where gid = ${t.gid} and branch_id = '01'`);
    const [promoted] = await promoteToSubmitted(database, [{ gid: t.gid, transType: 'msg', contentHash: 'h' }], 'node-a', 30);
    expect(promoted?.trans).toMatchObject({ gid: t.gid, status: 'submitted', owner: 'node-a', id: created?.trans.id });
    expect(promoted?.trans.submit_seq).toBeGreaterThan(0);
    expect(promoted?.branches.map((b) => b.branch_id)).toEqual(['02']);

    const tcc = transaction({ transType: 'tcc', status: 'prepared', dueIn: 60 });
    await insertTransactions(database, [tcc]);
    await registerBranches(database, tcc.gid, 'tcc', [branch('01', 'cancel'), branch('01', 'confirm')]);
    const aborting = await abortPrepared(database, tcc.gid, 'tcc', 'node-a', 30, 'test');
    expect(aborting?.trans.status).toBe('aborting');
    expect(aborting?.branches.map((b) => `${b.branch_id} ${b.op}`)).toEqual(['01 cancel', '01 confirm']);
  });

  it('claims due work once: two nodes get disjoint rows, and a leased row is not due', async () => {
    const items = [transaction(), transaction(), transaction()];
    await insertTransactions(database, items);
    const gids = new Set(items.map((t) => t.gid));
    const [a, b] = await Promise.all([claimDue(database, 'node-a', 100, 30), claimDue(database, 'node-b', 100, 30)]);
    const mine = (rows: { gid: string }[]) => rows.map((r) => r.gid).filter((g) => gids.has(g));
    expect([...mine(a), ...mine(b)].sort()).toEqual([...gids].sort());
    expect(mine(a).filter((g) => mine(b).includes(g))).toEqual([]);
    expect(mine(await claimDue(database, 'node-c', 100, 30))).toEqual([]);
    // The row's age is the store's: now() - create_time.
    expect(a.concat(b).every((r) => r.age_ms >= 0 && r.age_ms < 60_000)).toBe(true);
  });

  it('ignores the settlement and the lease extension of a node that lost the lease', async () => {
    const t = transaction({ owner: 'node-a', dueIn: 30, branches: [branch('01', 'action')] });
    await insertTransactions(database, [t]);
    const done = {
      gid: t.gid,
      succeeded: [{ branchId: '01', op: 'action' }],
      status: 'succeed' as const,
      interval: 1,
      delay: 0,
      retried: false,
    };
    expect(await extendLease(database, t.gid, 'node-b', 60)).toBe(false);
    expect(await settle(database, 'node-b', [done])).toEqual(new Set());
    expect((await findTransactions(database, [t.gid])).get(t.gid)?.status).toBe('submitted');
    expect(await settle(database, 'node-a', [done])).toEqual(new Set([t.gid]));
    expect((await findTransactions(database, [t.gid])).get(t.gid)?.status).toBe('succeed');
  });

  it('records a reply only for the current attempt of a branch', async () => {
    const t = transaction({
      transType: 'saga',
      owner: 'node-a',
      dueIn: 30,
      branches: [branch('01', 'compensate'), branch('01', 'action')],
    });
    await insertTransactions(database, [t]);
    const attempt = { status: 'prepared' as const, attempts: 2, lastError: null, replyIn: 30, retryIn: null };
    expect(await updateSagaBranches(database, 'node-a', t.gid, [{ branch_id: '01', op: 'action', update: attempt }])).toBe(true);
    const reply = { gid: t.gid, branch_id: '01', op: 'action' as const, outcome: 'SUCCESS' as const };
    expect(await recordReplies(database, 'node-b', 30, [{ ...reply, attempt: 1 }])).toEqual([{ recorded: false }]);
    // The current attempt is recorded; node-a holds a live lease, so node-b only pokes it.
    expect(await recordReplies(database, 'node-b', 30, [{ ...reply, attempt: 2 }])).toEqual([{ recorded: true }]);
    expect(await recordReplies(database, 'node-b', 30, [{ ...reply, attempt: 2 }])).toEqual([{ recorded: false }]);
  });

  it('records a batch of replies in one statement: each once, the saga claimed with its first reply', async () => {
    const t = transaction({
      transType: 'saga',
      owner: 'node-a',
      dueIn: 30,
      branches: [branch('01', 'compensate'), branch('01', 'action'), branch('02', 'compensate'), branch('02', 'action')],
    });
    await insertTransactions(database, [t]);
    const attempt = { status: 'prepared' as const, attempts: 1, lastError: null, replyIn: 30, retryIn: null };
    const both = [
      { branch_id: '01', op: 'action' as const, update: attempt },
      { branch_id: '02', op: 'action' as const, update: attempt },
    ];
    expect(await updateSagaBranches(database, 'node-a', t.gid, both)).toBe(true);
    await settle(database, 'node-a', [{ gid: t.gid, succeeded: [], status: 'submitted', interval: 1, delay: 30, retried: false }]);
    const reply = { gid: t.gid, op: 'action' as const, outcome: 'SUCCESS' as const, attempt: 1 };
    const answers = await recordReplies(database, 'node-b', 30, [
      { ...reply, branch_id: '01' },
      { ...reply, branch_id: '01' }, // a duplicate in the same batch changes nothing
      { ...reply, branch_id: '02', attempt: 2 }, // a stale attempt neither
      { ...reply, branch_id: '02' },
    ]);
    expect(answers.map((a) => a.recorded)).toEqual([true, false, false, true]);
    // The lease was given back: node-b claims the saga, once, with the first reply recorded.
    expect(answers[0]?.claimed?.gid).toBe(t.gid);
    expect(answers[0]?.claimed?.owner).toBe('node-b');
    expect(answers[3]?.claimed).toBeUndefined();
    // With the saga's branches as a read after the statement finds them (both replies laid over).
    expect(answers[0]?.branches?.map((b) => `${b.branch_id} ${b.op} ${b.status}`)).toEqual([
      '01 compensate prepared',
      '01 action succeed',
      '02 compensate prepared',
      '02 action succeed',
    ]);
    expect(answers[0]?.branches).toEqual(await sagaBranches(database, t.gid));
  });

  it('settles the passes of several sagas in one statement, only those the node still holds', async () => {
    const saga = (owner: string) =>
      transaction({ transType: 'saga', owner, dueIn: 30, branches: [branch('01', 'compensate'), branch('01', 'action')] });
    const [ending, waiting, lost] = [saga('node-a'), saga('node-a'), saga('node-b')];
    await insertTransactions(database, [ending, waiting, lost]);
    const attempt = { status: 'prepared' as const, attempts: 1, lastError: null, replyIn: 60, retryIn: null };
    const change = { branch_id: '01', op: 'action', update: attempt };
    const settled = await settleSagas(database, 'node-a', [
      { gid: ending.gid, s: { status: 'succeed', delay: 0 }, changes: [] },
      { gid: waiting.gid, s: { status: 'submitted', delay: 60 }, changes: [change] },
      { gid: lost.gid, s: { status: 'submitted', delay: 60 }, changes: [change] },
    ]);
    expect(settled).toEqual(
      new Map([
        [ending.gid, { poked: false }],
        [waiting.gid, { poked: false }],
      ]),
    );
    const rows = await findTransactions(database, [ending.gid, waiting.gid, lost.gid]);
    expect([ending, waiting, lost].map((t) => [rows.get(t.gid)?.status, rows.get(t.gid)?.owner])).toEqual([
      ['succeed', ''],
      ['submitted', ''],
      ['submitted', 'node-b'],
    ]);
    const action = async (gid: string) => (await sagaBranches(database, gid)).find((b) => b.op === 'action');
    expect((await action(waiting.gid))?.attempts).toBe(1);
    expect((await action(waiting.gid))?.reply_due_in).toBeGreaterThan(50);
    // Another node's saga: neither it nor its branches changed.
    expect((await action(lost.gid))?.attempts).toBe(0);
  });

  it('registers TCC branches only while the transaction is prepared', async () => {
    const t = transaction({ transType: 'tcc', status: 'prepared', dueIn: 60 });
    await insertTransactions(database, [t]);
    const rows = [branch('01', 'cancel'), branch('01', 'confirm')];
    expect(await registerBranches(database, t.gid, 'tcc', rows)).toEqual({ kind: 'registered' });
    expect(await registerBranches(database, t.gid, 'tcc', rows)).toEqual({ kind: 'repeated', same: true });
    expect(await registerBranches(database, t.gid, 'saga', rows)).toEqual({ kind: 'refused', status: 'prepared', transType: 'tcc' });
    expect(await promoteToSubmitted(database, [{ gid: t.gid, transType: 'tcc', contentHash: '' }], 'node-a', 30)).toHaveLength(1);
    const late = [branch('02', 'cancel'), branch('02', 'confirm')];
    expect(await registerBranches(database, t.gid, 'tcc', late)).toEqual({ kind: 'refused', status: 'submitted', transType: 'tcc' });
    expect(await registerBranches(database, 'no-such-gid', 'tcc', late)).toEqual({ kind: 'refused', status: null, transType: null });
  });
});
