/**
 * One pass over a saga this node holds the lease of. Each round looks at the steps, runs what may
 * run now (HTTP calls; command messages for broker steps), records each result as it comes, and
 * goes on until the saga ends or has to wait: for a reply, a retry time, or a step it depends on.
 * Then the lease is given back with the saga due when the first wait ends; a reply that arrives
 * earlier claims the saga and starts the next pass (recordReply).
 *
 * Forward: actions in order (or, concurrent, each once the steps it depends on succeeded). An
 * action's FAILURE, its attempts running out, or timeout_to_fail turn the saga to aborting.
 * Backward: the compensation of every step whose action was tried, last step first (concurrent:
 * a step's compensation after those of the steps that depended on it). A compensation is never
 * given up: when its attempts run out the saga goes to needs_attention until an operator redrives it.
 */
import { backoffInterval, jitter } from '../../schemas/backoff.js';
import type { DtmOutcome } from '../../schemas/dtm.js';
import { commandHeaders } from '../../schemas/saga.js';
import {
  moveSaga,
  sagaBranches,
  settleSaga,
  claimSaga,
  updateSagaBranches,
  type BranchChange,
  type BranchUpdate,
  type SagaBranchRow,
  type SagaSettlement,
} from '../store/sagas.js';
import { extendLease, type TransRow } from '../store/transactions.js';
import { sendAlert } from './alert.js';
import { leaseSeconds, type EngineContext } from './context.js';

export type SagaStatus = SagaSettlement['status'];

export interface SagaPassResult {
  status: SagaStatus;
  reason?: string;
}

interface Step {
  index: number;
  action: SagaBranchRow;
  compensate: SagaBranchRow;
}

/** Time kept between the end of the last possible call and the end of the lease. */
const leaseMarginMs = 1_000;
/** Rounds in one pass at most: a pass never spins, whatever the steps answer. */
const maxRounds = 10_000;

/** The lease went to another node mid-pass: stop at once, that node carries on. */
class LeaseLost extends Error {}

export function isBrokerUrl(url: string): boolean {
  return /^(kafka|rabbitmq):/i.test(url);
}

export class SagaProcessor {
  private readonly waiters = new Map<string, Set<(result: SagaPassResult) => void>>();

  constructor(private readonly ctx: EngineContext) {}

  /**
   * Resolves with the saga's end (succeed, failed or needs_attention) as seen by a pass on this
   * node, or undefined after `timeoutMs`. Register before the pass starts, or its end can be missed.
   */
  waitForEnd(gid: string, timeoutMs: number): Promise<SagaPassResult | undefined> {
    return new Promise((resolve) => {
      const set = this.waiters.get(gid) ?? new Set();
      const done = (result: SagaPassResult | undefined) => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0 && this.waiters.get(gid) === set) this.waiters.delete(gid);
        resolve(result);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      set.add(done);
      this.waiters.set(gid, set);
    });
  }

  /** Runs passes over a claimed saga until it ends or waits; a reply that came mid-pass gets one more pass at once. */
  async run(trans: TransRow, startedAt: number, lease: number): Promise<SagaPassResult> {
    let row = trans;
    let started = startedAt;
    for (;;) {
      let outcome: SagaPassResult & { poked?: boolean };
      try {
        outcome = await this.pass(row, started, lease);
      } catch (err) {
        if (!(err instanceof LeaseLost)) this.ctx.logger.error({ err, gid: row.gid }, 'saga pass failed');
        // The store failed or the lease moved: the lease runs out and another pass resumes.
        return { status: row.status as SagaStatus, reason: (err as Error).message };
      }
      if (!outcome.poked) return outcome;
      started = performance.now();
      const again = await claimSaga(this.ctx.database, this.ctx.nodeId, row.gid, lease);
      if (!again) return outcome;
      row = again;
    }
  }

  private async pass(trans: TransRow, startedAt: number, lease: number): Promise<SagaPassResult & { poked?: boolean }> {
    const { config, database, nodeId } = this.ctx;
    const log = this.ctx.logger.child({ gid: trans.gid });
    const options = trans.options;
    const branches = await sagaBranches(database, trans.gid);
    for (const b of branches) if (isBrokerUrl(b.url)) this.ctx.replies.listen(b.url);
    const steps = toSteps(branches);
    const orders = options.orders ?? {};
    const concurrent = options.concurrent === true || options.orders !== undefined;
    let status = trans.status as 'submitted' | 'aborting';
    let rollbackReason = '';
    let deadline = startedAt + lease * 1000 - leaseMarginMs;

    /** Makes sure a call of `timeout` seconds ends before the lease does, lengthening the lease if needed. */
    const fits = async (timeout: number): Promise<void> => {
      if (performance.now() + timeout * 1000 <= deadline) return;
      const before = performance.now();
      const longer = leaseSeconds(config, timeout);
      if (!(await extendLease(database, trans.gid, nodeId, longer))) throw new LeaseLost('lease lost to another node');
      deadline = before + longer * 1000 - leaseMarginMs;
    };

    /**
     * Branch states not written yet. Every attempt is written before its call or command leaves
     * (recordAttempts), so a node that dies mid-call leaves the step marked as tried and a rollback
     * compensates it. Results of HTTP calls wait for the next statement the pass makes anyway (the
     * next round's attempts, the status change, the end of the pass): if this node dies first, the
     * calls are made again and the participant's barrier absorbs them.
     */
    const pending = new Map<string, BranchChange>();
    const takePending = () => {
      const changes = [...pending.values()];
      pending.clear();
      return changes;
    };
    const write = (branch: SagaBranchRow, update: BranchUpdate): void => {
      branch.status = update.status;
      branch.attempts = update.attempts;
      branch.last_error = update.lastError;
      branch.reply_due_in = update.replyIn;
      branch.retry_in = update.retryIn;
      pending.set(`${branch.branch_id}/${branch.op}`, { branch_id: branch.branch_id, op: branch.op, update });
    };

    const finish = async (s: SagaSettlement, reason?: string): Promise<SagaPassResult & { poked?: boolean }> => {
      const { applied, poked } = await settleSaga(database, nodeId, trans.gid, s, takePending());
      if (!applied) return { status, reason: 'lease lost to another node' };
      const result: SagaPassResult = { status: s.status, ...(reason ? { reason } : {}) };
      if (s.status === 'succeed' || s.status === 'failed' || s.status === 'needs_attention') {
        this.ctx.metrics.transactions.inc({ trans_type: 'saga', status: s.status });
        log.info({ status: s.status, reason }, s.status === 'needs_attention' ? 'saga needs attention' : 'saga finished');
        for (const notify of this.waiters.get(trans.gid) ?? []) notify(result);
      }
      return { ...result, poked };
    };

    const policyOf = (b: SagaBranchRow) => {
      const retryLimit = options.retry_limit;
      const max =
        b.meta.maxAttempts ?? (b.op === 'compensate' ? config.compensateAttempts : retryLimit ? retryLimit + 1 : Number.POSITIVE_INFINITY);
      const base = b.meta.backoff ?? options.retry_interval ?? config.retryInterval;
      const timeout = b.meta.timeout ?? (isBrokerUrl(b.url) ? config.replyTimeout : (options.request_timeout ?? config.requestTimeout));
      return {
        max,
        used: b.attempts - (b.meta.redriveBase ?? 0),
        base,
        timeout,
        byRetryLimit: b.meta.maxAttempts === undefined && !!retryLimit,
      };
    };

    /**
     * After a run that did not succeed: another run later (backoff), or, attempts spent, the
     * action fails (the saga rolls back) or the compensation needs an operator.
     */
    const afterFailure = async (b: SagaBranchRow, outcome: DtmOutcome, detail: string): Promise<SagaPassResult | undefined> => {
      const p = policyOf(b);
      const where = `step ${b.branch_id} ${b.op}`;
      if (p.used < p.max) {
        const retryIn =
          outcome === 'ONGOING' ? p.base : jitter(backoffInterval({ base: p.base, cap: config.maxRetryInterval }, p.used - 1));
        log.warn({ branchId: b.branch_id, op: b.op, outcome, detail, attempts: b.attempts, retryIn }, 'saga step will retry');
        if (p.used >= config.alertRetryLimit) {
          sendAlert(this.ctx, { gid: trans.gid, status, branch: b.branch_id, error: detail, retry_count: p.used });
        }
        write(b, { status: 'prepared', attempts: b.attempts, lastError: detail, replyIn: null, retryIn });
        return undefined;
      }
      if (b.op === 'action') {
        const error = p.byRetryLimit
          ? `RetryCount is greater than RetryLimit, RetryLimit: ${options.retry_limit}; last: ${detail}`
          : `${where} gave up after ${p.used} attempts: ${detail}`;
        write(b, { status: 'failed', attempts: b.attempts, lastError: error, replyIn: null, retryIn: null });
        return undefined;
      }
      const attention = `${where} failed ${p.used} times: ${detail}`;
      write(b, { status: 'prepared', attempts: b.attempts, lastError: detail, replyIn: null, retryIn: null });
      sendAlert(this.ctx, { gid: trans.gid, status: 'needs_attention', branch: b.branch_id, error: attention, retry_count: p.used });
      return finish({ status: 'needs_attention', delay: 0, attention }, attention);
    };

    /** Publishes the command of a broker branch's current attempt. */
    const publishCommand = async (b: SagaBranchRow) => {
      const answer = await this.ctx.relay.publish({
        url: b.url,
        params: { gid: trans.gid, trans_type: 'saga', branch_id: b.branch_id, op: b.op },
        payload: b.data,
        headers: {
          ...options.branch_headers,
          ...b.meta.headers,
          [commandHeaders.messageId]: `${trans.gid}/${b.branch_id}/${b.op}`,
          [commandHeaders.op]: b.op,
          [commandHeaders.command]: b.meta.command ?? b.op,
          [commandHeaders.attempt]: String(b.attempts),
          [commandHeaders.replyTo]: this.ctx.replyTopic,
        },
        timeoutMs: config.requestTimeout * 1000,
        key: b.meta.key ?? trans.gid,
      });
      this.ctx.metrics.branchCalls.inc({ op: b.op, outcome: answer.outcome });
      return answer;
    };

    /**
     * Writes the next attempt of each branch (with everything pending) in one statement before any
     * of them runs: an action that may have run is then always compensated on rollback, and even
     * the quickest reply to a command finds its attempt.
     */
    const recordAttempts = async (toRun: SagaBranchRow[]): Promise<void> => {
      for (const b of toRun) {
        const replyIn = isBrokerUrl(b.url) ? policyOf(b).timeout : null;
        write(b, { status: 'prepared', attempts: b.attempts + 1, lastError: b.last_error, replyIn, retryIn: null });
      }
      if (!(await updateSagaBranches(database, nodeId, trans.gid, takePending()))) throw new LeaseLost('lease lost to another node');
    };

    /** One run of a branch whose attempt is recorded: an HTTP call, or the publication of its command (the reply comes later). */
    const runBranch = async (b: SagaBranchRow): Promise<SagaPassResult | undefined> => {
      const p = policyOf(b);
      const attempts = b.attempts;
      const broker = isBrokerUrl(b.url);
      const started = performance.now();
      const params = { gid: trans.gid, trans_type: 'saga', branch_id: b.branch_id, op: b.op };
      const headers = { ...options.branch_headers, ...b.meta.headers };
      if (broker) {
        const answer = await publishCommand(b);
        if (answer.outcome === 'SUCCESS') return undefined;
        return afterFailure(b, 'ERROR', `command not published: ${answer.detail}`);
      }
      const answer =
        b.url === ''
          ? { outcome: 'SUCCESS' as const, detail: 'no URL' }
          : await this.ctx.relay.publish({ url: b.url, params, payload: b.data, headers, timeoutMs: p.timeout * 1000 });
      this.ctx.metrics.branchCalls.inc({ op: b.op, outcome: answer.outcome });
      this.ctx.metrics.branchSeconds.observe({ op: b.op }, (performance.now() - started) / 1000);
      if (answer.outcome === 'SUCCESS') {
        write(b, { status: 'succeed', attempts, lastError: null, replyIn: null, retryIn: null });
        return undefined;
      }
      if (answer.outcome === 'FAILURE' && b.op === 'action') {
        const error = `${b.url} answered FAILURE: ${answer.detail}`;
        write(b, { status: 'failed', attempts, lastError: error, replyIn: null, retryIn: null });
        return undefined;
      }
      return afterFailure(b, answer.outcome, answer.detail);
    };

    for (let round = 0; round < maxRounds; round++) {
      let candidates: SagaBranchRow[];
      if (status === 'submitted') {
        const failed = steps.find((s) => s.action.status === 'failed');
        const ttf = options.timeout_to_fail;
        const timedOut = ttf !== undefined && ttf > 0 && Date.now() - trans.create_ms >= ttf * 1000;
        if (failed || timedOut) {
          const reason = failed ? (failed.action.last_error ?? `step ${failed.action.branch_id} failed`) : `Timeout after ${ttf} seconds`;
          // With the branch states so far: which actions were tried decides what is compensated.
          if (!(await moveSaga(database, nodeId, trans.gid, 'aborting', reason, takePending()))) {
            throw new LeaseLost('lease lost to another node');
          }
          log.info({ reason }, 'saga rolls back');
          status = 'aborting';
          rollbackReason = reason;
          continue;
        }
        if (steps.every((s) => s.action.status === 'succeed')) return finish({ status: 'succeed', delay: 0 });
        candidates = runnableActions(steps, concurrent, orders);
      } else {
        const pending = steps.filter((s) => tried(s.action) && s.compensate.status === 'prepared');
        if (pending.length === 0) return finish({ status: 'failed', delay: 0 }, rollbackReason || undefined);
        candidates = runnableCompensations(pending, concurrent, orders);
      }

      const waits: number[] = [];
      const toRun: SagaBranchRow[] = [];
      let changed = false;
      for (const b of candidates) {
        const p = policyOf(b);
        if (b.reply_due_in !== null && b.reply_due_in > 0) {
          waits.push(b.reply_due_in);
        } else if (b.reply_due_in !== null || (b.retry_in === null && b.last_error !== null && p.used > 0)) {
          // No reply in time, or a reply that reported a failure: the step's policy decides.
          const detail = b.reply_due_in !== null ? `no reply within ${p.timeout} s` : b.last_error!;
          const ended = await afterFailure(b, 'ERROR', detail);
          if (ended) return ended;
          changed = true;
        } else if (b.retry_in !== null && b.retry_in > 0) {
          waits.push(b.retry_in);
        } else {
          toRun.push(b);
        }
      }
      if (toRun.length > 0 && !changed && toRun.every((b) => isBrokerUrl(b.url))) {
        // Only commands to send, and then the pass would wait: their attempts are written and the
        // lease given back in one statement, then they leave, and their replies claim the saga. A
        // command that cannot be published is retried when its reply is overdue.
        for (const b of toRun) {
          write(b, {
            status: 'prepared',
            attempts: b.attempts + 1,
            lastError: b.last_error,
            replyIn: policyOf(b).timeout,
            retryIn: null,
          });
        }
        const delay = Math.min(...waits, ...toRun.map((b) => policyOf(b).timeout));
        const { applied, poked } = await settleSaga(database, nodeId, trans.gid, { status, delay }, takePending());
        if (!applied) return { status, reason: 'lease lost to another node' };
        await Promise.all(
          toRun.map(async (b) => {
            const answer = await publishCommand(b);
            if (answer.outcome !== 'SUCCESS') {
              log.warn(
                { branchId: b.branch_id, op: b.op, detail: answer.detail },
                'command not published; sent again once its reply is overdue',
              );
            }
          }),
        );
        return { status, poked };
      }
      if (toRun.length > 0) {
        // Every call must end before the lease does; the attempts are written before any call leaves.
        await fits(Math.max(...toRun.map((b) => (isBrokerUrl(b.url) ? config.requestTimeout : policyOf(b).timeout))));
        await recordAttempts(toRun);
        const ended = (await Promise.all(toRun.map(runBranch))).find((r) => r !== undefined);
        if (ended) return ended;
        changed = true;
      }
      if (!changed) {
        // Nothing to do before the first wait ends (a reply may end it sooner).
        const delay = waits.length > 0 ? Math.max(0, Math.min(...waits)) : (options.retry_interval ?? config.retryInterval);
        return finish({ status, delay });
      }
    }
    return finish({ status, delay: 0 });
  }
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
