/**
 * What a saga does next, decided from its rows and the store's time alone (no I/O): the executor
 * (saga-process.ts) performs the decision, writes what it changed, and asks again.
 *
 * Forward: actions in order (or, concurrent, each once the steps it depends on succeeded). An
 * action's FAILURE, its attempts running out, or timeout_to_fail turn the saga to aborting.
 * Backward: the compensation of every step whose action was tried, last step first (concurrent:
 * a step's compensation after those of the steps that depended on it). A compensation is never
 * given up: when its attempts run out the saga goes to needs_attention until an operator redrives it.
 */
import { backoffInterval, jitter } from '../../schemas/backoff.js';
import type { Config } from '../../schemas/config.js';
import type { StoredOptions } from '../../schemas/db/tables.js';
import type { DtmOutcome } from '../../schemas/dtm.js';
import { isBrokerUrl } from '../../schemas/broker-messages.js';
import type { BranchUpdate, SagaBranchRow } from '../store/sagas.js';

export type SagaConfig = Pick<
  Config,
  'compensateAttempts' | 'retryInterval' | 'requestTimeout' | 'replyTimeout' | 'maxRetryInterval' | 'alertRetryLimit'
>;

/** What the decision reads: the saga's status, options and age (store clock), and its branch rows. */
export interface SagaView {
  status: 'submitted' | 'aborting';
  options: StoredOptions;
  /** Milliseconds since the saga was created, by the store's clock. */
  ageMs: number;
  branches: SagaBranchRow[];
}

export type SagaDecision =
  /** Turn to aborting: an action failed or timeout_to_fail passed. */
  | { kind: 'rollback'; reason: string }
  | { kind: 'finish'; status: 'succeed' | 'failed' }
  /**
   * Branches to settle first (no reply in time, or a reply that reported a failure: their policy
   * decides), branches to run now, and the waits (seconds) of the others.
   */
  | { kind: 'advance'; overdue: { branch: SagaBranchRow; detail: string }[]; run: SagaBranchRow[]; waits: number[] };

/** Re-exported for saga-process.ts, which takes it from here (schemas/broker-messages.ts defines it). */
export { isBrokerUrl };

export function decideSaga(view: SagaView, config: SagaConfig): SagaDecision {
  const { options } = view;
  const steps = toSteps(view.branches);
  const orders = options.orders ?? {};
  const concurrent = options.concurrent === true || options.orders !== undefined;
  let candidates: SagaBranchRow[];
  if (view.status === 'submitted') {
    const failed = steps.find((s) => s.action.status === 'failed');
    if (failed) return { kind: 'rollback', reason: failed.action.last_error ?? `step ${failed.action.branch_id} failed` };
    const ttf = options.timeout_to_fail;
    if (ttf !== undefined && ttf > 0 && view.ageMs >= ttf * 1000) return { kind: 'rollback', reason: `Timeout after ${ttf} seconds` };
    if (steps.every((s) => s.action.status === 'succeed')) return { kind: 'finish', status: 'succeed' };
    candidates = runnableActions(steps, concurrent, orders);
  } else {
    const pending = steps.filter((s) => tried(s.action) && s.compensate.status === 'prepared');
    if (pending.length === 0) return { kind: 'finish', status: 'failed' };
    candidates = runnableCompensations(pending, concurrent, orders);
  }
  const decision = {
    kind: 'advance' as const,
    overdue: [] as { branch: SagaBranchRow; detail: string }[],
    run: [] as SagaBranchRow[],
    waits: [] as number[],
  };
  for (const b of candidates) {
    const p = stepPolicy(b, options, config);
    if (b.reply_due_in !== null && b.reply_due_in > 0) decision.waits.push(b.reply_due_in);
    else if (b.reply_due_in !== null) decision.overdue.push({ branch: b, detail: `no reply within ${p.timeout} s` });
    else if (b.retry_in === null && b.last_error !== null && p.used > 0) decision.overdue.push({ branch: b, detail: b.last_error });
    else if (b.retry_in !== null && b.retry_in > 0) decision.waits.push(b.retry_in);
    else decision.run.push(b);
  }
  return decision;
}

/** A step branch's retry policy: attempts allowed and used, first backoff, call or reply timeout. */
export function stepPolicy(b: SagaBranchRow, options: StoredOptions, config: SagaConfig) {
  const retryLimit = options.retry_limit;
  const max =
    b.meta.maxAttempts ?? (b.op === 'compensate' ? config.compensateAttempts : retryLimit ? retryLimit + 1 : Number.POSITIVE_INFINITY);
  return {
    max,
    used: b.attempts - (b.meta.redriveBase ?? 0),
    base: b.meta.backoff ?? options.retry_interval ?? config.retryInterval,
    timeout: b.meta.timeout ?? (isBrokerUrl(b.url) ? config.replyTimeout : (options.request_timeout ?? config.requestTimeout)),
    byRetryLimit: b.meta.maxAttempts === undefined && !!retryLimit,
  };
}

/** The next attempt of a branch, written before it runs (a reply to a command is due within its timeout). */
export function attemptUpdate(b: SagaBranchRow, options: StoredOptions, config: SagaConfig): BranchUpdate {
  const replyIn = isBrokerUrl(b.url) ? stepPolicy(b, options, config).timeout : null;
  return { status: 'prepared', attempts: b.attempts + 1, lastError: b.last_error, replyIn, retryIn: null };
}

/** What becomes of a branch after a run that did not succeed. */
export interface FailureVerdict {
  update: BranchUpdate;
  /** Set when the branch will run again: its retry delay (s) and whether the alert threshold is reached. */
  retry?: { retryIn: number; alert: boolean };
  /** Set when a compensation used up its attempts: the saga needs an operator. */
  attention?: string;
}

/** After a run that did not succeed: another run later (backoff), or, attempts spent, the action fails or the compensation needs an operator. */
export function afterFailure(
  b: SagaBranchRow,
  outcome: DtmOutcome,
  detail: string,
  options: StoredOptions,
  config: SagaConfig,
  random: () => number = Math.random,
): FailureVerdict {
  const p = stepPolicy(b, options, config);
  const where = `step ${b.branch_id} ${b.op}`;
  if (p.used < p.max) {
    const retryIn =
      outcome === 'ONGOING' ? p.base : jitter(backoffInterval({ base: p.base, cap: config.maxRetryInterval }, p.used - 1), random);
    return {
      update: { status: 'prepared', attempts: b.attempts, lastError: detail, replyIn: null, retryIn },
      retry: { retryIn, alert: p.used >= config.alertRetryLimit },
    };
  }
  if (b.op === 'action') {
    const error = p.byRetryLimit
      ? `RetryCount is greater than RetryLimit, RetryLimit: ${options.retry_limit}; last: ${detail}`
      : `${where} gave up after ${p.used} attempts: ${detail}`;
    return { update: { status: 'failed', attempts: b.attempts, lastError: error, replyIn: null, retryIn: null } };
  }
  return {
    update: { status: 'prepared', attempts: b.attempts, lastError: detail, replyIn: null, retryIn: null },
    attention: `${where} failed ${p.used} times: ${detail}`,
  };
}

/** What an HTTP call's answer makes of its branch (its attempt already recorded). */
export function afterAnswer(
  b: SagaBranchRow,
  answer: { outcome: DtmOutcome; detail: string },
  options: StoredOptions,
  config: SagaConfig,
  random: () => number = Math.random,
): FailureVerdict {
  if (answer.outcome === 'SUCCESS')
    return { update: { status: 'succeed', attempts: b.attempts, lastError: null, replyIn: null, retryIn: null } };
  if (answer.outcome === 'FAILURE' && b.op === 'action') {
    const lastError = `${b.url} answered FAILURE: ${answer.detail}`;
    return { update: { status: 'failed', attempts: b.attempts, lastError, replyIn: null, retryIn: null } };
  }
  return afterFailure(b, answer.outcome, answer.detail, options, config, random);
}

interface Step {
  index: number;
  action: SagaBranchRow;
  compensate: SagaBranchRow;
}

/** Steps by index from their branch rows (branch ids 01, 02…; compensate and action each). */
function toSteps(rows: SagaBranchRow[]): Step[] {
  const byIndex = new Map<number, Partial<Step>>();
  for (const row of rows) {
    const index = Number(row.branch_id) - 1;
    const step = byIndex.get(index) ?? { index };
    step[row.op] = row;
    byIndex.set(index, step);
  }
  return [...byIndex.values()]
    .filter((s): s is Step => s.action !== undefined && s.compensate !== undefined)
    .sort((a, b) => a.index - b.index);
}

/** An action that may have had an effect: it answered, or a call or command went out. */
function tried(action: SagaBranchRow): boolean {
  return action.status !== 'prepared' || action.attempts > 0;
}

function runnableActions(steps: Step[], concurrent: boolean, orders: Record<string, number[]>): SagaBranchRow[] {
  if (!concurrent) {
    const next = steps.find((s) => s.action.status !== 'succeed');
    return next ? [next.action] : [];
  }
  const succeeded = (i: number) => steps[i]?.action.status === 'succeed';
  return steps.filter((s) => s.action.status === 'prepared' && (orders[String(s.index)] ?? []).every(succeeded)).map((s) => s.action);
}

/** Compensations in reverse: the last step first, or (concurrent) after those of the steps that depended on it. */
function runnableCompensations(pending: Step[], concurrent: boolean, orders: Record<string, number[]>): SagaBranchRow[] {
  if (!concurrent) return [pending[pending.length - 1]!.compensate];
  const open = new Set(pending.map((s) => s.index));
  const dependentsOpen = (j: number) => Object.entries(orders).some(([i, deps]) => open.has(Number(i)) && deps.includes(j));
  return pending.filter((s) => !dependentsOpen(s.index)).map((s) => s.compensate);
}
