/**
 * One pass over a message this node holds the lease of: the check-back of a dangling prepare, then
 * delivery of the branches still pending. A branch call is started only when it can end (its
 * timeout) before the lease does, so no branch is ever called by two nodes at once.
 */
import { doubled, jitter, type BackoffPolicy } from '../../schemas/backoff.js';
import type { DtmOutcome } from '../../schemas/dtm.js';
import type { BranchMeta } from '../../schemas/db/tables.js';
import { GroupCommit } from '../store/group-commit.js';
import {
  extendLease,
  pendingBranches,
  promoteToSubmitted,
  waitingOrderKeys,
  settle,
  type BranchRow,
  type Settlement,
  type TransRow,
} from '../store/transactions.js';
import { sendAlert } from './alert.js';
import { leaseSeconds, type EngineContext } from './context.js';

export interface PassResult {
  status: 'prepared' | 'submitted' | 'succeed' | 'failed';
  reason?: string;
}

/** Seconds a keyed message waits before it looks again whether the messages before it are out. */
const orderWait = 0.05;

/** Time kept between the end of the last possible call and the end of the lease. */
const leaseMarginMs = 1_000;

export class MsgProcessor {
  private readonly settles: GroupCommit<Settlement, boolean>;

  constructor(private readonly ctx: EngineContext) {
    this.settles = new GroupCommit(
      async (items) => {
        const applied = await settle(ctx.database, ctx.nodeId, items);
        return items.map((s) => applied.has(s.gid));
      },
      {
        maxBatch: 256,
        concurrency: 2,
        onBatch: (size, seconds) => {
          ctx.metrics.batchSize.observe({ kind: 'settle' }, size);
          ctx.metrics.batchSeconds.observe({ kind: 'settle' }, seconds);
        },
      },
    );
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
      this.ctx.logger.error({ err, gid: trans.gid }, 'message pass failed');
      return { status: trans.status as PassResult['status'], reason: (err as Error).message };
    }
  }

  private async pass(trans: TransRow, pending: BranchRow[], startedAt: number, lease: number): Promise<PassResult> {
    const { config, database, nodeId } = this.ctx;
    const log = this.ctx.logger.child({ gid: trans.gid });
    const timeout = trans.options.request_timeout ?? config.requestTimeout;
    const policy: BackoffPolicy = { base: trans.options.retry_interval ?? config.retryInterval, cap: config.maxRetryInterval };
    let deadline = startedAt + lease * 1000 - leaseMarginMs;
    let status = trans.status as 'prepared' | 'submitted';
    let seq = trans.submit_seq;
    const fits = async (): Promise<boolean> => {
      if (performance.now() + timeout * 1000 <= deadline) return true;
      const before = performance.now();
      const longer = leaseSeconds(this.ctx.config, timeout);
      if (!(await extendLease(database, trans.gid, nodeId, longer))) return false;
      deadline = before + longer * 1000 - leaseMarginMs;
      return true;
    };
    const finish = async (s: Omit<Settlement, 'gid'>): Promise<PassResult> => {
      const applied = await this.settles.run({ gid: trans.gid, ...s });
      if (!applied) return { status, reason: 'lease lost to another node' };
      if (s.status === 'succeed' || s.status === 'failed') {
        this.ctx.metrics.transactions.inc({ trans_type: trans.trans_type, status: s.status });
        log.info({ status: s.status, reason: s.reason }, 'transaction finished');
      }
      return { status: s.status, reason: s.reason };
    };
    const retryLater = (
      outcome: DtmOutcome,
      status: 'prepared' | 'submitted',
      succeeded: Settlement['succeeded'],
      failed: Settlement['failed'],
      reason: string,
    ) => {
      // ONGOING asks to be called again at the same pace; anything else backs off.
      const interval = outcome === 'ONGOING' ? trans.next_cron_interval : doubled(policy, trans.next_cron_interval);
      log.warn({ outcome, branchId: failed?.branchId ?? '00', reason, retryIn: interval }, 'will retry');
      this.alert(trans, failed?.branchId ?? '00', reason);
      return finish({ succeeded, failed, status, interval, delay: jitter(interval), retried: outcome !== 'ONGOING' });
    };
    /** Gives the lease back with the row due at once: the pass ran out of lease time. */
    const release = (succeeded: Settlement['succeeded'] = []) =>
      finish({ succeeded, status, interval: trans.next_cron_interval, delay: 0, retried: false });

    let branches = pending;
    if (trans.status === 'prepared') {
      if (!(await fits())) return release();
      const answer = await this.call(trans, trans.query_prepared, '00', 'msg', '', timeout);
      if (answer.outcome === 'FAILURE') {
        const reason = `query_prepared answered FAILURE: ${answer.detail}`;
        return finish({ succeeded: [], status: 'failed', interval: trans.next_cron_interval, delay: 0, retried: false, reason });
      }
      if (answer.outcome !== 'SUCCESS') return retryLater(answer.outcome, 'prepared', [], undefined, `query_prepared: ${answer.detail}`);
      const before = performance.now();
      const marked = await promoteToSubmitted(
        database,
        [{ gid: trans.gid, transType: trans.trans_type, contentHash: '' }],
        nodeId,
        leaseSeconds(this.ctx.config, timeout),
      );
      if (marked.length === 0) return { status: 'prepared', reason: 'lease lost to another node' };
      seq = marked[0]?.submit_seq ?? null;
      deadline = before + leaseSeconds(this.ctx.config, timeout) * 1000 - leaseMarginMs;
      status = 'submitted';
      log.info('check-back found the local transaction committed');
      branches = (await pendingBranches(database, [trans.gid])).get(trans.gid) ?? [];
    }

    const delayEnd = trans.create_ms + (trans.options.delay ?? 0) * 1000;
    if (delayEnd > Date.now()) {
      return finish({
        succeeded: [],
        status: 'submitted',
        interval: trans.next_cron_interval,
        delay: (delayEnd - Date.now()) / 1000,
        retried: false,
      });
    }

    const succeeded: Settlement['succeeded'] = [];
    const calls = trans.options.concurrent ? [branches] : branches.map((b) => [b]);
    for (const group of calls) {
      if (!(await fits())) return release(succeeded);
      const keys = group.flatMap((b) => (b.order_key ? [b.order_key] : []));
      if (seq !== null && keys.length > 0 && (await waitingOrderKeys(database, seq, keys)).size > 0) {
        // An earlier message with the same key is still pending: wait for it, without counting a failure.
        return finish({ succeeded, status, interval: trans.next_cron_interval, delay: orderWait, retried: false });
      }
      const answers = await Promise.all(group.map((b) => this.call(trans, b.url, b.branch_id, b.op, b.data, timeout, b.meta)));
      let failed: { branch: BranchRow; outcome: DtmOutcome; detail: string } | undefined;
      group.forEach((branch, i) => {
        const answer = answers[i]!;
        if (answer.outcome === 'SUCCESS') succeeded.push({ branchId: branch.branch_id, op: branch.op });
        else failed ??= { branch, ...answer };
      });
      if (failed) {
        const { branch, outcome, detail } = failed;
        return retryLater(outcome, 'submitted', succeeded, { branchId: branch.branch_id, op: branch.op, error: detail }, detail);
      }
    }
    return finish({ succeeded, status: 'succeed', interval: policy.base, delay: 0, retried: false });
  }

  private async call(trans: TransRow, url: string, branchId: string, op: string, payload: string, timeout: number, meta: BranchMeta = {}) {
    if (url === '') return { outcome: 'SUCCESS' as const, detail: 'empty URL' };
    const started = performance.now();
    const answer = await this.ctx.relay.publish({
      url,
      params: { gid: trans.gid, trans_type: trans.trans_type, branch_id: branchId, op },
      payload,
      headers: { ...trans.options.branch_headers, ...meta.headers },
      timeoutMs: timeout * 1000,
      key: meta.key,
    });
    this.ctx.metrics.branchCalls.inc({ op, outcome: answer.outcome });
    this.ctx.metrics.branchSeconds.observe({ op }, (performance.now() - started) / 1000);
    return answer;
  }

  /** Tells the alert webhook that a transaction keeps failing. */
  private alert(trans: TransRow, branchId: string, error: string): void {
    if (trans.retry_count + 1 < this.ctx.config.alertRetryLimit) return;
    sendAlert(this.ctx, { gid: trans.gid, status: trans.status, branch: branchId, error, retry_count: trans.retry_count + 1 });
  }
}
