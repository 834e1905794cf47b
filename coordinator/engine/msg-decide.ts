/**
 * What a two-phase message does next, decided from its rows and the store's time alone (no I/O);
 * msg-process.ts performs it. A prepared message is checked back (query_prepared); a submitted one
 * waits out its delay, then its pending branches are delivered, one after another or (concurrent)
 * all at once.
 */
import { doubled, jitter, type BackoffPolicy } from '../../schemas/backoff.js';
import type { StoredOptions } from '../../schemas/db/tables.js';
import type { DtmOutcome, FinalStatus, UnfinishedStatus } from '../../schemas/dtm.js';
import type { BranchRow } from '../store/transactions.js';

/** What a decision of a type whose branches run in order (msg, tcc) reads. */
export interface MsgView {
  status: UnfinishedStatus;
  options: StoredOptions;
  /** Milliseconds since the message was created, by the store's clock. */
  ageMs: number;
  /** The branches still pending, in creation order. */
  branches: BranchRow[];
}

export type MsgDecision =
  | { kind: 'check-back' }
  /** Due again in `delay` seconds (the message's delay has not passed). */
  | { kind: 'wait'; delay: number }
  /** Deliver these groups in order, the branches of one group at once; then the transaction ends as `end`. */
  | { kind: 'deliver'; groups: BranchRow[][]; end: FinalStatus }
  /** Turn to aborting (its time ran out), then decide again. */
  | { kind: 'rollback'; reason: string };

export function decideMsg(view: MsgView): MsgDecision {
  if (view.status === 'prepared') return { kind: 'check-back' };
  const delayLeftMs = (view.options.delay ?? 0) * 1000 - view.ageMs;
  if (delayLeftMs > 0) return { kind: 'wait', delay: delayLeftMs / 1000 };
  return { kind: 'deliver', groups: view.options.concurrent ? [view.branches] : view.branches.map((b) => [b]), end: 'succeed' };
}

/** What the answer of query_prepared means: the local transaction rolled back, committed, or is not known yet. */
export function checkBackVerdict(outcome: DtmOutcome): 'failed' | 'committed' | 'retry' {
  return outcome === 'FAILURE' ? 'failed' : outcome === 'SUCCESS' ? 'committed' : 'retry';
}

/** When a message that did not get through is due again: ONGOING asks for the same pace, anything else backs off. */
export function msgRetry(
  outcome: DtmOutcome,
  currentInterval: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): { interval: number; delay: number; retried: boolean } {
  const interval = outcome === 'ONGOING' ? currentInterval : doubled(policy, currentInterval);
  return { interval, delay: jitter(interval, random), retried: outcome !== 'ONGOING' };
}
