/**
 * The executor of the types whose branches run in order, two-phase messages, TCC and XA: one pass
 * over a transaction this node holds the lease of. It asks decideMsg (msg-decide.ts) or
 * decidePhaseTwo (phase-two-decide.ts) what to do and does it: the check-back of a dangling
 * prepare, the rollback of a TCC or XA whose time ran out, then the calls of the branches still
 * pending. A branch call is started only when it can end (its timeout) before the lease does, so
 * no branch is ever called by two nodes at once. Neither a
 * message's delivery nor a phase-two call is undone, so attempts are counted with their
 * results, which settle group-commits.
 */
import type { BackoffPolicy } from '../../schemas/backoff.js';
import type { DtmOutcome } from '../../schemas/dtm.js';
import type { BranchMeta } from '../../schemas/db/tables.js';
import type { GroupCommit } from '../store/group-commit.js';
import {
  pendingBranches,
  promoteToSubmitted,
  waitingOrderKeys,
  settle,
  type BranchRow,
  type Settlement,
  type TransRow,
} from '../store/transactions.js';
import { moveToAborting } from '../store/tcc.js';
import { sendAlert } from './alert.js';
import { batched } from './batches.js';
import { leaseSeconds, type EngineContext } from './context.js';
import { Lease } from './lease.js';
import { checkBackVerdict, decideMsg, msgRetry } from './msg-decide.js';
import { decidePhaseTwo, isPhaseTwoType } from './phase-two-decide.js';
import { publishBranch } from './publish.js';

export interface PassResult {
  status: 'prepared' | 'submitted' | 'aborting' | 'succeed' | 'failed';
  reason?: string;
}

/** Seconds a keyed message waits before it looks again whether the messages before it are out. */
const orderWait = 0.05;

/** How far a delivery got: all branches, or up to a failure, a lease running short, or a message to wait for. */
type Delivered =
  | { kind: 'done' | 'release' | 'after-earlier'; succeeded: Settlement['succeeded'] }
  | { kind: 'failed'; succeeded: Settlement['succeeded']; outcome: DtmOutcome; failed: NonNullable<Settlement['failed']> };

export class MsgProcessor {
  private readonly settles: GroupCommit<Settlement, boolean>;

  constructor(private readonly ctx: EngineContext) {
    this.settles = batched(ctx, 'settle', async (items: Settlement[]) => {
      const applied = await settle(ctx.database, ctx.nodeId, items);
      return items.map((s) => applied.has(s.gid));
    });
  }

  /**
   * Runs one pass. `startedAt` (performance.now()) was taken before the lease was written, so
   * the local deadline is never later than the lease in the store.
   */
  async run(trans: TransRow, branches: BranchRow[], startedAt: number, lease: number): Promise<PassResult> {
    try {
      return await this.pass(trans, branches, startedAt, lease);
    } catch (err) {
      // The store failed mid-pass: the lease runs out and another pass (here or elsewhere) resumes.
      this.ctx.logger.error({ err, gid: trans.gid, trans_type: trans.trans_type }, 'message pass failed');
      return { status: trans.status as PassResult['status'], reason: (err as Error).message };
    }
  }

  private async pass(trans: TransRow, pending: BranchRow[], startedAt: number, leaseFor: number): Promise<PassResult> {
    const { config, database, nodeId } = this.ctx;
    const log = this.ctx.logger.child({ gid: trans.gid, trans_type: trans.trans_type });
    const timeout = trans.options.request_timeout ?? config.requestTimeout;
    const policy: BackoffPolicy = { base: trans.options.retry_interval ?? config.retryInterval, cap: config.maxRetryInterval };
    const lease = new Lease(this.ctx, trans.gid, startedAt, leaseFor);
    let status = trans.status as 'prepared' | 'submitted' | 'aborting';
    let seq = trans.submit_seq;
    const finish = async (s: Omit<Settlement, 'gid'>): Promise<PassResult> => {
      const applied = await this.settles.run({ gid: trans.gid, ...s });
      if (!applied) return { status, reason: 'lease lost to another node' };
      if (s.status === 'succeed' || s.status === 'failed') {
        this.ctx.metrics.transactions.inc({ trans_type: trans.trans_type, status: s.status });
        log.info({ status: s.status, reason: s.reason }, 'transaction finished');
      }
      return { status: s.status, reason: s.reason };
    };
    const retryLater = (outcome: DtmOutcome, succeeded: Settlement['succeeded'], failed: Settlement['failed'], reason: string) => {
      const retry = msgRetry(outcome, trans.next_cron_interval, policy);
      log.warn({ outcome, branchId: failed?.branchId ?? '00', reason, retryIn: retry.interval }, 'will retry');
      this.alert(trans, failed?.branchId ?? '00', reason);
      return finish({ succeeded, failed, status, ...retry });
    };
    /** Gives the lease back with the row due at once: the pass ran out of lease time. */
    const release = (succeeded: Settlement['succeeded'] = []) =>
      finish({ succeeded, status, interval: trans.next_cron_interval, delay: 0, retried: false });

    let branches = pending;
    for (;;) {
      // The store's age of the message at the claim, plus the time this pass has run since.
      const ageMs = trans.age_ms + (performance.now() - startedAt);
      const view = { status, options: trans.options, ageMs, branches };
      const type = trans.trans_type;
      const next = isPhaseTwoType(type) ? decidePhaseTwo(type, view, config.timeoutToFail) : decideMsg(view);
      if (next.kind === 'wait') {
        return finish({ succeeded: [], status, interval: trans.next_cron_interval, delay: next.delay, retried: false });
      }
      if (next.kind === 'deliver') {
        const sent = await this.deliver(trans, next.groups, seq, lease, timeout);
        if (sent.kind === 'release') return release(sent.succeeded);
        if (sent.kind === 'after-earlier') {
          // An earlier message with the same key is still pending: wait for it, without counting a failure.
          return finish({ succeeded: sent.succeeded, status, interval: trans.next_cron_interval, delay: orderWait, retried: false });
        }
        if (sent.kind === 'failed') return retryLater(sent.outcome, sent.succeeded, sent.failed, sent.failed.error);
        return finish({ succeeded: sent.succeeded, status: next.end, interval: policy.base, delay: 0, retried: false });
      }
      if (next.kind === 'rollback') {
        if (!(await moveToAborting(database, trans.gid, nodeId, next.reason))) return { status, reason: 'lease lost to another node' };
        log.info({ reason: next.reason }, 'transaction rolls back');
        status = 'aborting';
        continue;
      }

      if (!(await lease.fits(timeout))) return release();
      const answer = await this.call(trans, trans.query_prepared, '00', 'msg', '', timeout);
      const verdict = checkBackVerdict(answer.outcome);
      if (verdict === 'failed') {
        const reason = `query_prepared answered FAILURE: ${answer.detail}`;
        return finish({ succeeded: [], status: 'failed', interval: trans.next_cron_interval, delay: 0, retried: false, reason });
      }
      if (verdict === 'retry') return retryLater(answer.outcome, [], undefined, `query_prepared: ${answer.detail}`);
      const before = performance.now();
      const longer = leaseSeconds(config, timeout);
      const marked = await promoteToSubmitted(database, [{ gid: trans.gid, transType: trans.trans_type, contentHash: '' }], nodeId, longer);
      if (marked.length === 0) return { status: 'prepared', reason: 'lease lost to another node' };
      seq = marked[0]?.submit_seq ?? null;
      lease.renewed(before, longer);
      status = 'submitted';
      log.info('check-back found the local transaction committed');
      branches = (await pendingBranches(database, [trans.gid])).get(trans.gid) ?? [];
    }
  }

  /** Delivers the groups in order, until one does not get through, the lease runs short, or an earlier message goes first. */
  private async deliver(trans: TransRow, groups: BranchRow[][], seq: number | null, lease: Lease, timeout: number): Promise<Delivered> {
    const succeeded: Settlement['succeeded'] = [];
    for (const group of groups) {
      if (!(await lease.fits(timeout))) return { kind: 'release', succeeded };
      const keys = group.flatMap((b) => (b.order_key ? [b.order_key] : []));
      if (seq !== null && keys.length > 0 && (await waitingOrderKeys(this.ctx.database, seq, keys)).size > 0) {
        return { kind: 'after-earlier', succeeded };
      }
      const answers = await Promise.all(group.map((b) => this.call(trans, b.url, b.branch_id, b.op, b.data, timeout, b.meta)));
      let failed: Extract<Delivered, { kind: 'failed' }> | undefined;
      group.forEach((branch, i) => {
        const { outcome, detail } = answers[i]!;
        if (outcome === 'SUCCESS') succeeded.push({ branchId: branch.branch_id, op: branch.op });
        else failed ??= { kind: 'failed', succeeded, outcome, failed: { branchId: branch.branch_id, op: branch.op, error: detail } };
      });
      if (failed) return failed;
    }
    return { kind: 'done', succeeded };
  }

  private call(trans: TransRow, url: string, branchId: string, op: string, payload: string, timeout: number, meta: BranchMeta = {}) {
    return publishBranch(this.ctx, {
      url,
      params: { gid: trans.gid, trans_type: trans.trans_type, branch_id: branchId, op },
      payload,
      headers: { ...trans.options.branch_headers, ...meta.headers },
      timeoutMs: timeout * 1000,
      key: meta.key,
      // DTM calls XA's phase two by POST, with or without data.
      post: trans.trans_type === 'xa',
      timed: true,
    });
  }

  /** Tells the alert webhook that a transaction keeps failing. */
  private alert(trans: TransRow, branchId: string, error: string): void {
    if (trans.retry_count + 1 < this.ctx.config.alertRetryLimit) return;
    sendAlert(this.ctx, {
      kind: 'retries',
      gid: trans.gid,
      trans_type: trans.trans_type,
      status: trans.status,
      branch: branchId,
      error,
      retry_count: trans.retry_count + 1,
    });
  }
}
