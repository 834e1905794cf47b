/**
 * What a TCC or XA transaction does next, decided from its rows and the store's time alone (no
 * I/O); msg-process.ts performs it like a message's delivery. While the transaction was prepared
 * the client ran each branch's first phase (a Try, or a local XA transaction left prepared) and
 * registered the branch's phase-two calls. Submitted: every commit op (TCC Confirm, XA commit);
 * aborting: every rollback op (TCC Cancel, XA rollback); one at a time, each retried until it
 * succeeds. A prepared transaction older than timeout_to_fail (its client vanished) aborts.
 */
import type { MsgDecision, MsgView } from './msg-decide.js';

/** Each type's phase-two ops, and the order DTM calls them in: TCC last registered first, XA in order. */
export const phaseTwoOps = {
  tcc: { commit: 'confirm', rollback: 'cancel', lastFirst: true },
  xa: { commit: 'commit', rollback: 'rollback', lastFirst: false },
} as const;
export type PhaseTwoType = keyof typeof phaseTwoOps;

export function isPhaseTwoType(transType: string): transType is PhaseTwoType {
  return Object.hasOwn(phaseTwoOps, transType);
}

export function decidePhaseTwo(type: PhaseTwoType, view: MsgView, defaultTimeoutToFail: number): MsgDecision {
  if (view.status === 'prepared') {
    const ttf = view.options.timeout_to_fail ?? defaultTimeoutToFail;
    const leftMs = ttf * 1000 - view.ageMs;
    if (leftMs > 0) return { kind: 'wait', delay: leftMs / 1000 };
    // DTM names the transaction's own option, 0 when it relied on the default.
    return { kind: 'rollback', reason: `Timeout after ${view.options.timeout_to_fail ?? 0} seconds` };
  }
  const ops = phaseTwoOps[type];
  const op = view.status === 'submitted' ? ops.commit : ops.rollback;
  const calls = view.branches.filter((b) => b.op === op && b.status === 'prepared');
  if (ops.lastFirst) calls.reverse();
  return { kind: 'deliver', groups: calls.map((b) => [b]), end: view.status === 'submitted' ? 'succeed' : 'failed' };
}
