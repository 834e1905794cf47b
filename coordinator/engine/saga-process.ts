/**
 * The executor of sagas: one pass over a saga this node holds the lease of. It asks decideSaga
 * (saga-decide.ts) what to do, does it (HTTP calls; command messages for broker steps), records
 * each result, and asks again, until the saga ends or has to wait: for a reply, a retry time, or a
 * step it depends on. Then the lease is given back with the saga due when the first wait ends; a
 * reply that arrives earlier claims the saga and starts the next pass (recordReply).
 */
import type { StoredOptions } from '../../schemas/db/tables.js';
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
import type { TransRow } from '../store/transactions.js';
import { sendAlert } from './alert.js';
import type { EngineContext } from './context.js';
import { Lease } from './lease.js';
import { publishBranch } from './publish.js';
import { afterAnswer, afterFailure, attemptUpdate, decideSaga, isBrokerUrl, stepPolicy, type FailureVerdict } from './saga-decide.js';

export type SagaStatus = SagaSettlement['status'];

export interface SagaPassResult {
  status: SagaStatus;
  reason?: string;
}

/** Rounds in one pass at most: a pass never spins, whatever the steps answer. */
const maxRounds = 10_000;

/** The lease went to another node mid-pass: stop at once, that node carries on. */
class LeaseLost extends Error {}

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
        if (!(err instanceof LeaseLost)) this.ctx.logger.error({ err, gid: row.gid, trans_type: 'saga' }, 'saga pass failed');
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

  private async pass(trans: TransRow, startedAt: number, leaseFor: number): Promise<SagaPassResult & { poked?: boolean }> {
    const { config, database, nodeId } = this.ctx;
    const log = this.ctx.logger.child({ gid: trans.gid, trans_type: 'saga' });
    const options: StoredOptions = trans.options;
    const branches = await sagaBranches(database, trans.gid);
    for (const b of branches) if (isBrokerUrl(b.url)) this.ctx.replies.listen(b.url);
    let status = trans.status as 'submitted' | 'aborting';
    let rollbackReason = '';
    const lease = new Lease(this.ctx, trans.gid, startedAt, leaseFor);

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

    /** Applies a failure verdict; the saga's end when a compensation needs an operator. */
    const apply = async (b: SagaBranchRow, verdict: FailureVerdict, detail: string): Promise<SagaPassResult | undefined> => {
      const used = stepPolicy(b, options, config).used;
      if (verdict.retry) {
        log.warn({ branchId: b.branch_id, op: b.op, detail, attempts: b.attempts, retryIn: verdict.retry.retryIn }, 'saga step will retry');
        if (verdict.retry.alert) {
          sendAlert(this.ctx, {
            kind: 'retries',
            gid: trans.gid,
            trans_type: 'saga',
            status,
            branch: b.branch_id,
            error: detail,
            retry_count: used,
          });
        }
      }
      write(b, verdict.update);
      if (!verdict.attention) return undefined;
      sendAlert(this.ctx, {
        kind: 'needs_attention',
        gid: trans.gid,
        trans_type: 'saga',
        status: 'needs_attention',
        branch: b.branch_id,
        error: verdict.attention,
        retry_count: used,
      });
      return finish({ status: 'needs_attention', delay: 0, attention: verdict.attention }, verdict.attention);
    };

    /** Publishes the command of a broker branch's current attempt. */
    const publishCommand = (b: SagaBranchRow) =>
      publishBranch(this.ctx, {
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
        timed: false,
      });

    /**
     * Writes the next attempt of each branch (with everything pending) in one statement before any
     * of them runs: an action that may have run is then always compensated on rollback, and even
     * the quickest reply to a command finds its attempt.
     */
    const recordAttempts = async (toRun: SagaBranchRow[]): Promise<void> => {
      for (const b of toRun) write(b, attemptUpdate(b, options, config));
      if (!(await updateSagaBranches(database, nodeId, trans.gid, takePending()))) throw new LeaseLost('lease lost to another node');
    };

    /** One run of a branch whose attempt is recorded: an HTTP call, or the publication of its command (the reply comes later). */
    const runBranch = async (b: SagaBranchRow): Promise<SagaPassResult | undefined> => {
      if (isBrokerUrl(b.url)) {
        const answer = await publishCommand(b);
        if (answer.outcome === 'SUCCESS') return undefined;
        const detail = `command not published: ${answer.detail}`;
        return apply(b, afterFailure(b, 'ERROR', detail, options, config), detail);
      }
      const answer = await publishBranch(this.ctx, {
        url: b.url,
        params: { gid: trans.gid, trans_type: 'saga', branch_id: b.branch_id, op: b.op },
        payload: b.data,
        headers: { ...options.branch_headers, ...b.meta.headers },
        timeoutMs: stepPolicy(b, options, config).timeout * 1000,
        timed: true,
      });
      return apply(b, afterAnswer(b, answer, options, config), answer.detail);
    };

    for (let round = 0; round < maxRounds; round++) {
      // The store's age of the saga at the claim, plus the time this pass has run since.
      const ageMs = trans.age_ms + (performance.now() - startedAt);
      const next = decideSaga({ status, options, ageMs, branches }, config);
      if (next.kind === 'rollback') {
        // With the branch states so far: which actions were tried decides what is compensated.
        if (!(await moveSaga(database, nodeId, trans.gid, 'aborting', next.reason, takePending()))) {
          throw new LeaseLost('lease lost to another node');
        }
        log.info({ reason: next.reason }, 'saga rolls back');
        status = 'aborting';
        rollbackReason = next.reason;
        continue;
      }
      if (next.kind === 'finish') {
        return next.status === 'succeed'
          ? finish({ status: 'succeed', delay: 0 })
          : finish({ status: 'failed', delay: 0 }, rollbackReason || undefined);
      }

      // No reply in time, or a reply that reported a failure: the step's policy decides.
      for (const { branch, detail } of next.overdue) {
        const ended = await apply(branch, afterFailure(branch, 'ERROR', detail, options, config), detail);
        if (ended) return ended;
      }
      const changed = next.overdue.length > 0;
      const toRun = next.run;
      if (toRun.length > 0 && !changed && toRun.every((b) => isBrokerUrl(b.url))) {
        // Only commands to send, and then the pass would wait: their attempts are written and the
        // lease given back in one statement, then they leave, and their replies claim the saga. A
        // command that cannot be published is retried when its reply is overdue.
        for (const b of toRun) write(b, attemptUpdate(b, options, config));
        const delay = Math.min(...next.waits, ...toRun.map((b) => stepPolicy(b, options, config).timeout));
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
        const longest = Math.max(
          ...toRun.map((b) => (isBrokerUrl(b.url) ? config.requestTimeout : stepPolicy(b, options, config).timeout)),
        );
        if (!(await lease.fits(longest))) throw new LeaseLost('lease lost to another node');
        await recordAttempts(toRun);
        const ended = (await Promise.all(toRun.map(runBranch))).find((r) => r !== undefined);
        if (ended) return ended;
      } else if (!changed) {
        // Nothing to do before the first wait ends (a reply may end it sooner).
        const delay = next.waits.length > 0 ? Math.max(0, Math.min(...next.waits)) : (options.retry_interval ?? config.retryInterval);
        return finish({ status, delay });
      }
    }
    return finish({ status, delay: 0 });
  }
}
