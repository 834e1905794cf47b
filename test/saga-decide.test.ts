/** The saga's decisions, from rows and the store's time alone: no store, no HTTP. */
import { describe, expect, it } from 'vitest';
import type { SagaBranchRow } from '../coordinator/store/sagas.js';
import { afterAnswer, afterFailure, attemptUpdate, decideSaga, type SagaConfig, type SagaView } from '../coordinator/engine/saga-decide.js';

const config: SagaConfig = {
  compensateAttempts: 3,
  retryInterval: 10,
  requestTimeout: 3,
  replyTimeout: 30,
  maxRetryInterval: 300,
  alertRetryLimit: 5,
};

function branch(id: number, op: 'action' | 'compensate', over: Partial<SagaBranchRow> = {}): SagaBranchRow {
  return {
    branch_id: String(id).padStart(2, '0'),
    op,
    url: `http://svc/${op}${id}`,
    data: '',
    meta: {},
    status: 'prepared',
    attempts: 0,
    last_error: null,
    reply_due_in: null,
    retry_in: null,
    ...over,
  };
}

/** Steps 1..n, each a compensate and an action row, with overrides per `${id}/${op}`. */
function saga(n: number, over: Record<string, Partial<SagaBranchRow>> = {}, rest: Partial<SagaView> = {}): SagaView {
  const branches = Array.from({ length: n }, (_, i) => [
    branch(i + 1, 'compensate', over[`${i + 1}/compensate`]),
    branch(i + 1, 'action', over[`${i + 1}/action`]),
  ]).flat();
  return { status: 'submitted', options: {}, ageMs: 0, branches, ...rest };
}

const ids = (rows: SagaBranchRow[]) => rows.map((b) => `${b.branch_id}/${b.op}`);

describe('decideSaga forward', () => {
  it('runs the first unfinished action, one at a time', () => {
    const d = decideSaga(saga(3, { '1/action': { status: 'succeed', attempts: 1 } }), config);
    expect(d.kind === 'advance' && ids(d.run)).toEqual(['02/action']);
  });

  it('finishes succeed when every action succeeded', () => {
    const all = { '1/action': { status: 'succeed' as const }, '2/action': { status: 'succeed' as const } };
    expect(decideSaga(saga(2, all), config)).toEqual({ kind: 'finish', status: 'succeed' });
  });

  it('runs concurrent actions whose dependencies succeeded', () => {
    const view = saga(3, { '1/action': { status: 'succeed' } }, { options: { orders: { '2': [1] } } });
    const d = decideSaga(view, config);
    // Step 3 (index 2) waits for step 2 (index 1); step 2 depends on nothing.
    expect(d.kind === 'advance' && ids(d.run)).toEqual(['02/action']);
  });

  it('rolls back on a failed action, naming its error', () => {
    const d = decideSaga(saga(2, { '2/action': { status: 'failed', attempts: 1, last_error: 'no funds' } }), config);
    expect(d).toEqual({ kind: 'rollback', reason: 'no funds' });
  });

  it('rolls back once timeout_to_fail passed by the store clock, not before', () => {
    const options = { timeout_to_fail: 5 };
    expect(decideSaga(saga(1, {}, { options, ageMs: 4_999 }), config).kind).toBe('advance');
    expect(decideSaga(saga(1, {}, { options, ageMs: 5_000 }), config)).toEqual({ kind: 'rollback', reason: 'Timeout after 5 seconds' });
  });

  it('waits for a retry time and for a reply not yet due', () => {
    const waiting = decideSaga(saga(1, { '1/action': { attempts: 1, last_error: 'x', retry_in: 7 } }), config);
    expect(waiting).toEqual({ kind: 'advance', overdue: [], run: [], waits: [7] });
    const cmd = { url: 'kafka://k/t', attempts: 1, reply_due_in: 12 };
    expect(decideSaga(saga(1, { '1/action': cmd }), config)).toEqual({ kind: 'advance', overdue: [], run: [], waits: [12] });
  });

  it('settles an overdue reply and a failed reply through the policy', () => {
    const overdue = decideSaga(saga(1, { '1/action': { url: 'kafka://k/t', attempts: 1, reply_due_in: -1 } }), config);
    expect(overdue.kind === 'advance' && overdue.overdue.map((o) => o.detail)).toEqual(['no reply within 30 s']);
    const failedReply = decideSaga(saga(1, { '1/action': { attempts: 1, last_error: 'ERROR reply: down' } }), config);
    expect(failedReply.kind === 'advance' && failedReply.overdue.map((o) => o.detail)).toEqual(['ERROR reply: down']);
  });
});

describe('decideSaga backward', () => {
  it('compensates only tried actions, last first, then fails', () => {
    const tried = { '1/action': { status: 'succeed' as const, attempts: 1 }, '2/action': { attempts: 1 } };
    const d = decideSaga(saga(3, tried, { status: 'aborting' }), config);
    // Step 2's action was called (attempt recorded) though no answer came: it is compensated first.
    expect(d.kind === 'advance' && ids(d.run)).toEqual(['02/compensate']);
    const done = { ...tried, '1/compensate': { status: 'succeed' as const }, '2/compensate': { status: 'succeed' as const } };
    expect(decideSaga(saga(3, done, { status: 'aborting' }), config)).toEqual({ kind: 'finish', status: 'failed' });
  });

  it('compensates concurrently after the dependents', () => {
    const all = { '1/action': { attempts: 1 }, '2/action': { attempts: 1 }, '3/action': { attempts: 1 } };
    const d = decideSaga(saga(3, all, { status: 'aborting', options: { orders: { '1': [0] } } }), config);
    expect(d.kind === 'advance' && ids(d.run)).toEqual(['02/compensate', '03/compensate']);
  });
});

describe('branch verdicts', () => {
  it('records the next attempt before a call, with the reply deadline for a command', () => {
    expect(attemptUpdate(branch(1, 'action', { attempts: 2 }), {}, config)).toMatchObject({ attempts: 3, replyIn: null });
    expect(attemptUpdate(branch(1, 'action', { url: 'rabbitmq://r/q' }), {}, config)).toMatchObject({ attempts: 1, replyIn: 30 });
  });

  it('retries with jittered backoff, ONGOING at the base pace', () => {
    const b = branch(1, 'action', { attempts: 2 });
    expect(afterFailure(b, 'ERROR', 'down', {}, config, () => 1).retry?.retryIn).toBe(20);
    expect(afterFailure(b, 'ERROR', 'down', {}, config, () => 0).retry?.retryIn).toBe(10);
    expect(afterFailure(b, 'ONGOING', 'busy', {}, config).retry?.retryIn).toBe(10);
  });

  it('gives an action up after retry_limit with DTM’s message', () => {
    const v = afterFailure(branch(1, 'action', { attempts: 3 }), 'ERROR', 'down', { retry_limit: 2 }, config);
    expect(v.update.status).toBe('failed');
    expect(v.update.lastError).toBe('RetryCount is greater than RetryLimit, RetryLimit: 2; last: down');
  });

  it('never gives a compensation up: it needs attention, counted from the redrive', () => {
    const spent = afterFailure(branch(1, 'compensate', { attempts: 3 }), 'ERROR', 'down', {}, config);
    expect(spent).toMatchObject({ update: { status: 'prepared' }, attention: 'step 01 compensate failed 3 times: down' });
    const redriven = afterFailure(branch(1, 'compensate', { attempts: 3, meta: { redriveBase: 2 } }), 'ERROR', 'down', {}, config);
    expect(redriven.attention).toBeUndefined();
  });

  it('turns an answer into the branch state', () => {
    const b = branch(1, 'action', { attempts: 1 });
    expect(afterAnswer(b, { outcome: 'SUCCESS', detail: '' }, {}, config).update.status).toBe('succeed');
    expect(afterAnswer(b, { outcome: 'FAILURE', detail: 'no' }, {}, config).update).toMatchObject({
      status: 'failed',
      lastError: 'http://svc/action1 answered FAILURE: no',
    });
    // A compensation answering FAILURE is retried: it must succeed eventually.
    expect(afterAnswer(branch(1, 'compensate', { attempts: 1 }), { outcome: 'FAILURE', detail: 'no' }, {}, config).retry).toBeDefined();
  });
});
