/** The two-phase message's decisions, from rows and the store's time alone: no store, no HTTP. */
import { describe, expect, it } from 'vitest';
import type { BranchRow } from '../coordinator/store/transactions.js';
import { checkBackVerdict, decideMsg, msgRetry } from '../coordinator/engine/msg-decide.js';

const row = (id: string): BranchRow => ({
  id: 1,
  gid: 'g',
  url: `http://svc/${id}`,
  data: '',
  meta: {},
  order_key: null,
  branch_id: id,
  op: 'action',
  status: 'prepared',
});

describe('decideMsg', () => {
  it('checks a prepared message back', () => {
    expect(decideMsg({ status: 'prepared', options: {}, ageMs: 0, branches: [row('01')] })).toEqual({ kind: 'check-back' });
  });

  it('waits out the delay by the store clock, then delivers', () => {
    expect(decideMsg({ status: 'submitted', options: { delay: 10 }, ageMs: 4_000, branches: [] })).toEqual({ kind: 'wait', delay: 6 });
    expect(decideMsg({ status: 'submitted', options: { delay: 10 }, ageMs: 10_000, branches: [] }).kind).toBe('deliver');
  });

  it('delivers one branch after another, or all at once when concurrent', () => {
    const branches = [row('01'), row('02')];
    const serial = decideMsg({ status: 'submitted', options: {}, ageMs: 0, branches });
    expect(serial.kind === 'deliver' && serial.groups.map((g) => g.map((b) => b.branch_id))).toEqual([['01'], ['02']]);
    const together = decideMsg({ status: 'submitted', options: { concurrent: true }, ageMs: 0, branches });
    expect(together.kind === 'deliver' && together.groups.map((g) => g.map((b) => b.branch_id))).toEqual([['01', '02']]);
  });
});

describe('check-back and retries', () => {
  it('reads query_prepared', () => {
    expect(checkBackVerdict('FAILURE')).toBe('failed');
    expect(checkBackVerdict('SUCCESS')).toBe('committed');
    expect(checkBackVerdict('ONGOING')).toBe('retry');
    expect(checkBackVerdict('ERROR')).toBe('retry');
  });

  it('doubles up to the cap, keeps the pace on ONGOING', () => {
    const policy = { base: 10, cap: 60 };
    expect(msgRetry('ERROR', 10, policy, () => 1)).toEqual({ interval: 20, delay: 20, retried: true });
    expect(msgRetry('ERROR', 40, policy, () => 0)).toEqual({ interval: 60, delay: 30, retried: true });
    expect(msgRetry('ONGOING', 40, policy, () => 1)).toEqual({ interval: 40, delay: 40, retried: false });
  });
});
