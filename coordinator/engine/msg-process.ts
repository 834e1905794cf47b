/**
 * The performers of the decisions of the types whose branches run in order, two-phase messages,
 * TCC and XA, run by the executor's pass loop over a transaction this node holds the lease of.
 * decideMsg (msg-decide.ts) or decidePhaseTwo (phase-two-decide.ts) decides; these do it: the
 * check-back of a dangling prepare, the rollback of a TCC or XA whose time ran out, then the calls
 * of the branches still pending. A branch call is started only when it can end (its timeout)
 * before the lease does, so no branch is ever called by two nodes at once. Neither a message's
 * delivery nor a phase-two call is undone, so attempts are counted with their results, which
 * settle group-commits.
 */
import type { DtmOutcome } from '../../schemas/dtm.js';
import { payloadBytes } from '../../schemas/payload-bytes.js';
import { promoteToSubmitted, waitingOrderKeys, type BranchRow, type Settlement, type TransRow } from '../store/transactions.js';
import { moveToAborting } from '../store/tcc.js';
import type { GroupCommit } from '../store/group-commit.js';
import { batched } from './batches.js';
import { leaseSeconds, type EngineContext } from './context.js';
import { leaseLost, type Executor, type Pass, type PassPlan, type PassResult } from './executor.js';
import type { Lease } from './lease.js';
import { checkBackVerdict, decideMsg, type MsgDecision, type MsgView } from './msg-decide.js';
import { decidePhaseTwo, isPhaseTwoType } from './phase-two-decide.js';

/** Seconds a keyed message waits before it looks again whether the messages before it are out. */
const orderWait = 0.05;

/** How far a delivery got: all branches, or up to a failure, a lease running short, or a message to wait for. */
type Delivered =
  | { kind: 'done' | 'release' | 'after-earlier'; succeeded: Settlement['succeeded'] }
  | { kind: 'failed'; succeeded: Settlement['succeeded']; outcome: DtmOutcome; failed: NonNullable<Settlement['failed']> };

export class MsgProcessor {
  private readonly ctx: EngineContext;
  /** Whether keyed branches must wait for earlier messages: one statement for the deliveries of many passes. */
  private readonly orderChecks: GroupCommit<{ seq: number; orderKeys: string[] }, Set<string>>;

  constructor(private readonly executor: Executor) {
    this.ctx = executor.ctx;
    this.orderChecks = batched(this.ctx, 'order', (items: { seq: number; orderKeys: string[] }[]) =>
      waitingOrderKeys(this.ctx.database, items),
    );
  }

  /**
   * Runs one pass. `startedAt` (performance.now()) was taken before the lease was written, so
   * the local deadline is never later than the lease in the store.
   */
  run(trans: TransRow, branches: BranchRow[], startedAt: number, lease: number): Promise<PassResult> {
    return this.executor.run('message', trans, startedAt, lease, (pass) => this.plan(trans, branches, pass));
  }

  private plan(trans: TransRow, pending: BranchRow[], { log, lease, timeout, policy }: Pass): PassPlan<MsgDecision> {
    const { config, database, nodeId } = this.ctx;
    let status = trans.status as MsgView['status'];
    let seq = trans.submit_seq;
    let branches = pending;
    const finish = (s: Omit<Settlement, 'gid'>) => this.executor.settle(trans, status, s, log);
    const retryLater = (outcome: DtmOutcome, succeeded: Settlement['succeeded'], failed: Settlement['failed'], reason: string) =>
      this.executor.retryLater(trans, log, { status, outcome, policy, reason, succeeded, failed });
    /** Gives the lease back with the row due after `delay`, without counting a failure. */
    const release = (succeeded: Settlement['succeeded'] = [], delay = 0) =>
      finish({ succeeded, status, interval: trans.next_cron_interval, delay, retried: false });
    const type = trans.trans_type;

    return {
      decide: (ageMs) => {
        const view = { status, options: trans.options, ageMs, branches };
        return isPhaseTwoType(type) ? decidePhaseTwo(type, view, config.timeoutToFail) : decideMsg(view);
      },
      perform: {
        wait: (next) => release([], next.delay),
        deliver: async (next) => {
          const sent = await this.deliver(trans, next.groups, seq, lease, timeout);
          if (sent.kind === 'release') return release(sent.succeeded);
          // An earlier message with the same key is still pending: wait for it, without counting a failure.
          if (sent.kind === 'after-earlier') return release(sent.succeeded, orderWait);
          if (sent.kind === 'failed') return retryLater(sent.outcome, sent.succeeded, sent.failed, sent.failed.error);
          return finish({ succeeded: sent.succeeded, status: next.end, interval: policy.base, delay: 0, retried: false });
        },
        rollback: async (next) => {
          if (!(await moveToAborting(database, trans.gid, nodeId, next.reason))) return leaseLost(status);
          log.info({ reason: next.reason }, 'transaction rolls back');
          status = 'aborting';
          return undefined;
        },
        'check-back': async () => {
          if (!(await lease.fits(timeout))) return release();
          const answer = await this.executor.call(trans, { url: trans.query_prepared, branchId: '00', op: 'msg', payload: '', timeout });
          const verdict = checkBackVerdict(answer.outcome);
          if (verdict === 'failed') {
            const reason = `query_prepared answered FAILURE: ${answer.detail}`;
            return finish({ succeeded: [], status: 'failed', interval: trans.next_cron_interval, delay: 0, retried: false, reason });
          }
          if (verdict === 'retry') return retryLater(answer.outcome, [], undefined, `query_prepared: ${answer.detail}`);
          const before = performance.now();
          const longer = leaseSeconds(config, timeout);
          const [marked] = await promoteToSubmitted(
            database,
            [{ gid: trans.gid, transType: trans.trans_type, contentHash: '' }],
            nodeId,
            longer,
          );
          if (!marked) return leaseLost('prepared');
          seq = marked.trans.submit_seq;
          lease.renewed(before, longer);
          status = 'submitted';
          log.info('check-back found the local transaction committed');
          branches = marked.branches;
          return undefined;
        },
      },
      giveBack: () => release(),
    };
  }

  /** Delivers the groups in order, until one does not get through, the lease runs short, or an earlier message goes first. */
  private async deliver(trans: TransRow, groups: BranchRow[][], seq: number | null, lease: Lease, timeout: number): Promise<Delivered> {
    const succeeded: Settlement['succeeded'] = [];
    for (const group of groups) {
      if (!(await lease.fits(timeout))) return { kind: 'release', succeeded };
      const keys = group.flatMap((b) => (b.order_key ? [b.order_key] : []));
      if (seq !== null && keys.length > 0 && (await this.orderChecks.run({ seq, orderKeys: keys })).size > 0) {
        return { kind: 'after-earlier', succeeded };
      }
      const answers = await Promise.all(
        group.map((b) =>
          // DTM calls XA's phase two by POST, with or without data.
          this.executor.call(trans, {
            url: b.url,
            branchId: b.branch_id,
            op: b.op,
            payload: payloadBytes(trans.protocol, b.data),
            timeout,
            meta: b.meta,
            post: trans.trans_type === 'xa',
          }),
        ),
      );
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
}
