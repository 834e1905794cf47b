/** TCC's decisions, from rows and the store's time alone: no store, no HTTP. */
import { describe, expect, it } from 'vitest';
import type { BranchRow } from '../coordinator/store/transactions.js';
import { decideTcc } from '../coordinator/engine/tcc-decide.js';

const row = (id: string, op: 'confirm' | 'cancel', status = 'prepared'): BranchRow => ({
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
const branches = [
  row('01', 'cancel'),
  row('01', 'confirm'),
  row('02', 'cancel'),
  row('02', 'confirm', 'succeed'),
  row('03', 'cancel'),
  row('03', 'confirm'),
];
const calls = (d: ReturnType<typeof decideTcc>) => (d.kind === 'deliver' ? d.groups.map((g) => g.map((b) => `${b.branch_id} ${b.op}`)) : d);

describe('decideTcc', () => {
  it('confirms the pending branches, last registered first, one at a time, then succeeds', () => {
    const d = decideTcc({ status: 'submitted', options: {}, ageMs: 0, branches }, 35);
    expect(calls(d)).toEqual([['03 confirm'], ['01 confirm']]);
    expect(d.kind === 'deliver' && d.end).toBe('succeed');
  });

  it('cancels every branch when aborting, then fails', () => {
    const d = decideTcc({ status: 'aborting', options: {}, ageMs: 0, branches }, 35);
    expect(calls(d)).toEqual([['03 cancel'], ['02 cancel'], ['01 cancel']]);
    expect(d.kind === 'deliver' && d.end).toBe('failed');
  });

  it('waits for a prepared TCC until timeout_to_fail by the store clock, then rolls it back', () => {
    expect(decideTcc({ status: 'prepared', options: { timeout_to_fail: 10 }, ageMs: 4_000, branches }, 35)).toEqual({
      kind: 'wait',
      delay: 6,
    });
    expect(decideTcc({ status: 'prepared', options: { timeout_to_fail: 10 }, ageMs: 10_000, branches }, 35)).toEqual({
      kind: 'rollback',
      reason: 'Timeout after 10 seconds',
    });
    // On the coordinator's default, DTM names the transaction's own option: 0.
    expect(decideTcc({ status: 'prepared', options: {}, ageMs: 35_000, branches }, 35)).toEqual({
      kind: 'rollback',
      reason: 'Timeout after 0 seconds',
    });
  });
});
