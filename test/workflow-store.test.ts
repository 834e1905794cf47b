/**
 * The workflow's store operations called directly on a freshly migrated Postgres database: a step
 * is recorded once and only while the workflow is prepared, a workflow ends once, and a resume
 * pass that settles after the client submitted changes nothing.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../coordinator/store/database.js';
import { claimDue, insertTransactions, settle, type NewTransaction } from '../coordinator/store/transactions.js';
import { findWorkflow, finishWorkflow, recordProgress } from '../coordinator/store/workflow.js';
import { freshDatabase } from './helpers/db.js';

let database: Database;

beforeAll(async () => {
  database = await openDatabase(await freshDatabase(), { poolSize: 4, logger: pino({ level: 'silent' }), lockTimeout: 5 });
});
afterAll(async () => {
  await database?.close();
});

function workflow(over: Partial<NewTransaction> = {}): NewTransaction {
  return {
    gid: `wf-store-${randomUUID()}`,
    transType: 'workflow',
    status: 'prepared',
    queryPrepared: 'http://svc/resume',
    protocol: 'http',
    options: {},
    customData: '{"name":"t","data":null}',
    contentHash: 'h',
    interval: 1,
    dueIn: 0,
    owner: '',
    branches: [],
    ...over,
  };
}
const step = { branch_id: '01', op: 'action', status: 'succeed' as const, data: '{"x":1}' };

describe('workflow store operations', () => {
  it('records a step once: the same record again is a repeat, another outcome is refused, the record reads back', async () => {
    const w = workflow();
    await insertTransactions(database, [w]);
    expect(await recordProgress(database, [{ gid: w.gid, ...step }])).toEqual([{ kind: 'recorded' }]);
    expect(await recordProgress(database, [{ gid: w.gid, ...step }])).toEqual([{ kind: 'repeated', same: true }]);
    expect(await recordProgress(database, [{ gid: w.gid, ...step, status: 'failed', data: 'no' }])).toEqual([
      { kind: 'repeated', same: false },
    ]);
    expect((await findWorkflow(database, w.gid))?.progresses).toEqual([step]);
  });

  it('records a batch in one statement, each item answered in order (steps of several workflows, refusals among them)', async () => {
    const [a, b] = [workflow(), workflow()];
    await insertTransactions(database, [a, b]);
    const answers = await recordProgress(database, [
      { gid: a.gid, ...step },
      { gid: b.gid, ...step, data: 'b' },
      { gid: 'no-such-gid', ...step },
      { gid: a.gid, ...step, branch_id: '02' },
    ]);
    expect(answers).toEqual([
      { kind: 'recorded' },
      { kind: 'recorded' },
      { kind: 'refused', status: null, transType: null },
      { kind: 'recorded' },
    ]);
    expect((await findWorkflow(database, a.gid))?.progresses.map((p) => p.branch_id)).toEqual(['01', '02']);
    expect((await findWorkflow(database, b.gid))?.progresses.map((p) => p.data)).toEqual(['b']);
  });

  it('records nothing for a workflow that ended, a gid of another type, or no gid', async () => {
    const w = workflow();
    const tcc = workflow({ transType: 'tcc' });
    await insertTransactions(database, [w, tcc]);
    expect(await finishWorkflow(database, w.gid, { status: 'succeed', reason: '', result: 'e30=' })).toBe(true);
    expect(await recordProgress(database, [{ gid: w.gid, ...step }])).toEqual([
      { kind: 'refused', status: 'succeed', transType: 'workflow' },
    ]);
    expect(await recordProgress(database, [{ gid: tcc.gid, ...step }])).toEqual([
      { kind: 'refused', status: 'prepared', transType: 'tcc' },
    ]);
    expect(await recordProgress(database, [{ gid: 'no-such-gid', ...step }])).toEqual([{ kind: 'refused', status: null, transType: null }]);
    expect((await findWorkflow(database, w.gid))?.progresses).toEqual([]);
  });

  it('ends a workflow once, whoever holds its lease; a resume pass settling afterwards changes nothing', async () => {
    const w = workflow();
    await insertTransactions(database, [w]);
    expect((await claimDue(database, 'node-a', 1000, 30)).map((r) => r.gid)).toContain(w.gid);
    expect(await finishWorkflow(database, w.gid, { status: 'failed', reason: 'step 2 refused', result: '' })).toBe(true);
    expect(await finishWorkflow(database, w.gid, { status: 'succeed', reason: '', result: '' })).toBe(false);
    const applied = await settle(database, 'node-a', [
      { gid: w.gid, succeeded: [], status: 'prepared', interval: 2, delay: 1, retried: true },
    ]);
    expect(applied.has(w.gid)).toBe(false);
    expect((await findWorkflow(database, w.gid))?.trans).toMatchObject({ status: 'failed', rollback_reason: 'step 2 refused' });
  });
});
