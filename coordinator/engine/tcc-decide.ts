/**
 * What a TCC transaction does next, decided from its rows and the store's time alone (no I/O);
 * msg-process.ts performs it like a message's delivery. The client called every Try and
 * registered each branch's Confirm and Cancel while the transaction was prepared. Submitted: every
 * Confirm, aborting: every Cancel, last registered first, one at a time, each retried until it
 * succeeds. A prepared transaction older than timeout_to_fail (its client vanished) aborts.
 */
import type { MsgDecision, MsgView } from './msg-decide.js';

export function decideTcc(view: MsgView, defaultTimeoutToFail: number): MsgDecision {
  if (view.status === 'prepared') {
    const ttf = view.options.timeout_to_fail ?? defaultTimeoutToFail;
    const leftMs = ttf * 1000 - view.ageMs;
    if (leftMs > 0) return { kind: 'wait', delay: leftMs / 1000 };
    // DTM names the transaction's own option, 0 when it relied on the default.
    return { kind: 'rollback', reason: `Timeout after ${view.options.timeout_to_fail ?? 0} seconds` };
  }
  const op = view.status === 'submitted' ? 'confirm' : 'cancel';
  const calls = view.branches.filter((b) => b.op === op && b.status === 'prepared').reverse();
  return { kind: 'deliver', groups: calls.map((b) => [b]), end: view.status === 'submitted' ? 'succeed' : 'failed' };
}
