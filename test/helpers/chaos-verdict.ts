/**
 * The chaos run's verdict: from what the clients were told, the coordinators' store and the
 * service's effects, the counts that must all be 0. A message's truth is its sender's commit (the
 * 'local' effect): committed means its branches must be delivered exactly once, whatever the
 * clients heard; not committed means nothing of it may be delivered.
 */
import type { ChaosEffect } from './chaos-service.js';

export const chaosKinds = ['msg', 'msg-abort', 'prepared-success', 'prepared-failure', 'saga-ok', 'saga-fail', 'saga-timeout'] as const;
export type ChaosKind = (typeof chaosKinds)[number];

/** What the client did and heard for one transaction. */
export interface ClientRecord {
  kind: ChaosKind;
  /** The coordinator answered 200 to the call that hands the transaction over (submit; prepare for prepared-only and aborted ones). */
  acknowledged: boolean;
}

export interface ChaosVerdict {
  transactions: number;
  acknowledged: number;
  /** Accepted work not delivered: a committed message or a succeeded saga missing a branch effect, or an acknowledged gid missing from the store. */
  lost: number;
  /** A branch effect of a message whose sender did not commit (aborted, or checked back FAILURE). */
  wronglyDelivered: number;
  /** Effects written more than once for one (gid, branch, op): the barrier let a duplicate through. */
  duplicateEffects: number;
  /** Action effects of sagas that ended failed without a compensation effect on the same branch. */
  uncompensated: number;
  /** Transactions in the store that are not succeed or failed. */
  notFinal: number;
  /** Final, but not the end this kind must reach (a saga-ok that failed, a saga that compensated and succeeded...). */
  wrongEnd: number;
  /** Final statuses by kind, e.g. { 'saga-timeout': { failed: 130 } }. */
  ends: Record<string, Record<string, number>>;
  /** Up to 20 gids with what went wrong, for the report. */
  examples: string[];
}

const sagaSteps = ['01', '02', '03'];
const msgBranches = ['01', '02'];
const sagaEnd: Record<string, string> = { 'saga-ok': 'succeed', 'saga-fail': 'failed', 'saga-timeout': 'failed' };

export function chaosVerdict(clients: Map<string, ClientRecord>, store: Map<string, string>, effects: ChaosEffect[]): ChaosVerdict {
  const byGid = new Map<string, Map<string, number>>();
  let duplicateEffects = 0;
  for (const e of effects) {
    if (e.n > 1) duplicateEffects += e.n - 1;
    let of = byGid.get(e.gid);
    if (of === undefined) byGid.set(e.gid, (of = new Map()));
    of.set(`${e.branch_id} ${e.op}`, e.n);
  }
  const v: ChaosVerdict = {
    transactions: clients.size,
    acknowledged: 0,
    lost: 0,
    wronglyDelivered: 0,
    duplicateEffects,
    uncompensated: 0,
    notFinal: 0,
    wrongEnd: 0,
    ends: {},
    examples: [],
  };
  const example = (gid: string, what: string) => {
    if (v.examples.length < 20) v.examples.push(`${gid}: ${what}`);
  };
  for (const [gid, client] of clients) {
    const status = store.get(gid);
    const effect = (branch: string, op: string) => byGid.get(gid)?.get(`${branch} ${op}`) ?? 0;
    if (client.acknowledged) v.acknowledged++;
    const ends = (v.ends[client.kind] ??= {});
    ends[status ?? 'absent'] = (ends[status ?? 'absent'] ?? 0) + 1;
    if (status !== undefined && status !== 'succeed' && status !== 'failed') {
      v.notFinal++;
      example(gid, `${client.kind} is ${status}`);
    }
    if (client.acknowledged && status === undefined) {
      v.lost++;
      example(gid, `${client.kind} acknowledged but not in the store`);
      continue;
    }
    if (client.kind.startsWith('saga')) {
      if (status === undefined) continue; // never accepted: the client gave up before any node took it
      const actions = sagaSteps.filter((b) => effect(b, 'action') > 0);
      const compensations = sagaSteps.filter((b) => effect(b, 'compensate') > 0);
      if (status === 'succeed' && client.kind === 'saga-ok' && actions.length < sagaSteps.length) {
        v.lost++;
        example(gid, `succeeded with ${actions.length} of ${sagaSteps.length} action effects`);
      }
      if (status === 'succeed' && compensations.length > 0) {
        v.wrongEnd++;
        example(gid, `succeeded but compensated ${compensations.join(',')}`);
      } else if ((status === 'succeed' || status === 'failed') && status !== sagaEnd[client.kind]) {
        v.wrongEnd++;
        example(gid, `${client.kind} ended ${status}`);
      }
      if (status === 'failed') {
        const missing = actions.filter((b) => effect(b, 'compensate') === 0);
        v.uncompensated += missing.length;
        if (missing.length > 0) example(gid, `${client.kind} failed with actions ${missing.join(',')} not compensated`);
      }
      continue;
    }
    const committed = effect('00', 'local') > 0;
    const delivered = msgBranches.filter((b) => effect(b, 'action') > 0);
    if (committed && delivered.length < msgBranches.length) {
      v.lost++;
      example(gid, `${client.kind} committed, ${status ?? 'absent'}, ${delivered.length} of ${msgBranches.length} branches delivered`);
    }
    if (!committed && delivered.length > 0) {
      v.wronglyDelivered++;
      example(gid, `${client.kind} not committed, ${status ?? 'absent'}, but branches ${delivered.join(',')} delivered`);
    }
    const expected = committed ? 'succeed' : 'failed';
    if ((status === 'succeed' || status === 'failed') && status !== expected) {
      v.wrongEnd++;
      example(gid, `${client.kind} ${committed ? 'committed' : 'not committed'} but ended ${status}`);
    }
  }
  return v;
}
