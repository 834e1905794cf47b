/** The phase-two decisions of TCC and XA, from rows and the store's time alone: no store, no HTTP. */
import { describe, expect, it } from 'vitest';
import type { BranchStatus } from '../schemas/dtm.js';
import type { BranchRow } from '../coordinator/store/transactions.js';
import { decidePhaseTwo } from '../coordinator/engine/phase-two-decide.js';

const row = (id: string, op: string, status: BranchStatus = 'prepared'): BranchRow => ({
  id: 1,
  gid: 'g',
  url: `http://svc/${op}${id}`,
  data: '',
  meta: {},
  order_key: null,
  branch_id: id,
  op,
  status,
});
const calls = (d: ReturnType<typeof decidePhaseTwo>) =>
  d.kind === 'deliver' ? d.groups.map((g) => g.map((b) => `${b.branch_id} ${b.op}`)) : d;

describe('decidePhaseTwo, TCC', () => {
  const branches = [
    row('01', 'cancel'),
    row('01', 'confirm'),
    row('02', 'cancel'),
    row('02', 'confirm', 'succeed'),
    row('03', 'cancel'),
    row('03', 'confirm'),
  ];

  it('confirms the pending branches, last registered first, one at a time, then succeeds', () => {
    const d = decidePhaseTwo('tcc', { status: 'submitted', options: {}, ageMs: 0, branches }, 35);
    expect(calls(d)).toEqual([['03 confirm'], ['01 confirm']]);
    expect(d.kind === 'deliver' && d.end).toBe('succeed');
  });

  it('cancels every branch when aborting, then fails', () => {
    const d = decidePhaseTwo('tcc', { status: 'aborting', options: {}, ageMs: 0, branches }, 35);
    expect(calls(d)).toEqual([['03 cancel'], ['02 cancel'], ['01 cancel']]);
    expect(d.kind === 'deliver' && d.end).toBe('failed');
  });

  it('waits for a prepared TCC until timeout_to_fail by the store clock, then rolls it back', () => {
    expect(decidePhaseTwo('tcc', { status: 'prepared', options: { timeout_to_fail: 10 }, ageMs: 4_000, branches }, 35)).toEqual({
      kind: 'wait',
      delay: 6,
    });
    expect(decidePhaseTwo('tcc', { status: 'prepared', options: { timeout_to_fail: 10 }, ageMs: 10_000, branches }, 35)).toEqual({
      kind: 'rollback',
      reason: 'Timeout after 10 seconds',
    });
    // On the coordinator's default, DTM names the transaction's own option: 0.
    expect(decidePhaseTwo('tcc', { status: 'prepared', options: {}, ageMs: 35_000, branches }, 35)).toEqual({
      kind: 'rollback',
      reason: 'Timeout after 0 seconds',
    });
  });
});

describe('decidePhaseTwo, XA', () => {
  const branches = [
    row('01', 'rollback'),
    row('01', 'commit', 'succeed'),
    row('02', 'rollback', 'succeed'),
    row('02', 'commit'),
    row('03', 'rollback'),
    row('03', 'commit'),
  ];

  it('commits the pending branches in registration order, one at a time, then succeeds', () => {
    const d = decidePhaseTwo('xa', { status: 'submitted', options: {}, ageMs: 0, branches }, 35);
    expect(calls(d)).toEqual([['02 commit'], ['03 commit']]);
    expect(d.kind === 'deliver' && d.end).toBe('succeed');
  });

  it('rolls back the pending branches in registration order when aborting, then fails', () => {
    const d = decidePhaseTwo('xa', { status: 'aborting', options: {}, ageMs: 0, branches }, 35);
    expect(calls(d)).toEqual([['01 rollback'], ['03 rollback']]);
    expect(d.kind === 'deliver' && d.end).toBe('failed');
  });

  it('rolls back a prepared XA after the coordinator default timeout_to_fail, not before', () => {
    expect(decidePhaseTwo('xa', { status: 'prepared', options: {}, ageMs: 34_000, branches }, 35)).toEqual({ kind: 'wait', delay: 1 });
    expect(decidePhaseTwo('xa', { status: 'prepared', options: {}, ageMs: 35_000, branches }, 35)).toEqual({
      kind: 'rollback',
      reason: 'Timeout after 0 seconds',
    });
  });

  it('finishes at once when no branch was registered', () => {
    expect(decidePhaseTwo('xa', { status: 'aborting', options: {}, ageMs: 0, branches: [] }, 35)).toEqual({
      kind: 'deliver',
      groups: [],
      end: 'failed',
    });
  });
});
