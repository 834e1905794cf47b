/**
 * The chaos run's verdict (test/helpers/chaos-verdict.ts) on hand-made outcomes: each defect it
 * exists to find is counted, and the outcomes a correct coordinator may produce are not.
 */
import { expect, it } from 'vitest';
import type { ChaosEffect } from './helpers/chaos-service.js';
import { chaosVerdict, type ChaosKind, type ClientRecord } from './helpers/chaos-verdict.js';

interface Case {
  kind: ChaosKind;
  acknowledged?: boolean;
  status?: string;
  /** "branch op" of each effect row, e.g. '01 action'; a repeated entry is a duplicate row. */
  effects?: string[];
}

function verdict(cases: Record<string, Case>) {
  const clients = new Map<string, ClientRecord>();
  const store = new Map<string, string>();
  const rows = new Map<string, ChaosEffect>();
  for (const [gid, c] of Object.entries(cases)) {
    clients.set(gid, { kind: c.kind, acknowledged: c.acknowledged ?? true });
    if (c.status !== undefined) store.set(gid, c.status);
    for (const effect of c.effects ?? []) {
      const [branch_id = '', op = ''] = effect.split(' ');
      const row = rows.get(`${gid} ${effect}`) ?? { gid, branch_id, op, n: 0 };
      row.n++;
      rows.set(`${gid} ${effect}`, row);
    }
  }
  return chaosVerdict(clients, store, [...rows.values()]);
}

const delivered = ['00 local', '01 action', '02 action'];
const saga = (...steps: string[]) => steps;

it('finds nothing in outcomes a correct coordinator produces', () => {
  const v = verdict({
    m: { kind: 'msg', status: 'succeed', effects: delivered },
    // The check-back came before the sender's commit: rightly failed, nothing delivered.
    late: { kind: 'prepared-success', status: 'failed' },
    pf: { kind: 'prepared-failure', status: 'failed' },
    ab: { kind: 'msg-abort', status: 'failed' },
    ok: { kind: 'saga-ok', status: 'succeed', effects: saga('01 action', '02 action', '03 action') },
    f: { kind: 'saga-fail', status: 'failed', effects: saga('01 action', '02 action', '02 compensate', '01 compensate') },
    // A compensation whose action never ran leaves no row (the barrier absorbed it).
    t: { kind: 'saga-timeout', status: 'failed', effects: saga('01 action', '01 compensate') },
    // Never acknowledged and never stored: the client gave up before any node took it.
    gone: { kind: 'saga-ok', acknowledged: false },
  });
  expect(v).toMatchObject({ transactions: 8, acknowledged: 7, lost: 0, wronglyDelivered: 0, duplicateEffects: 0, uncompensated: 0 });
  expect(v).toMatchObject({ notFinal: 0, wrongEnd: 0, examples: [] });
});

it('counts each defect', () => {
  const v = verdict({
    lostBranch: { kind: 'msg', status: 'succeed', effects: ['00 local', '01 action'] },
    lostRow: { kind: 'prepared-failure', acknowledged: true },
    wrong: { kind: 'prepared-failure', status: 'failed', effects: ['01 action'] },
    dup: { kind: 'msg', status: 'succeed', effects: [...delivered, '02 action', '02 action'] },
    uncompensated: { kind: 'saga-timeout', status: 'failed', effects: saga('01 action', '02 action', '01 compensate') },
    stuck: { kind: 'saga-ok', status: 'aborting', effects: saga('01 action') },
    backwards: { kind: 'saga-ok', status: 'failed', effects: saga('01 action', '01 compensate') },
    // Delivered, but the store says failed although the sender committed.
    contradicted: { kind: 'msg', status: 'failed', effects: delivered },
  });
  expect(v).toMatchObject({ lost: 2, wronglyDelivered: 1, duplicateEffects: 2, uncompensated: 1, notFinal: 1, wrongEnd: 2 });
  expect(v.examples).toContain('uncompensated: saga-timeout failed with actions 02 not compensated');
  expect(v.ends['saga-ok']).toEqual({ aborting: 1, failed: 1 });
});
