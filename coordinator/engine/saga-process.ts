/**
 * The performers of a saga's decisions (saga-decide.ts), run by the executor's pass loop over a
 * saga this node holds the lease of: HTTP calls and command messages for broker steps, each
 * attempt written before it leaves, each result recorded, until the saga ends or has to wait: for
 * a reply, a retry time, or a step it depends on. Then the lease is given back with the saga due
 * when the first wait ends; a reply that arrives earlier claims the saga and starts the next pass
 * (recordReplies).
 */
import type { Logger } from 'pino';
import type { StoredOptions } from '../../schemas/db/tables.js';
import { commandHeaders } from '../../schemas/saga.js';
import { payloadBytes } from '../../schemas/payload-bytes.js';
import {
  moveSaga,
  sagaBranches,
  settleSaga,
  claimSaga,
  updateSagaBranches,
  type SagaBranchRow,
  type SagaSettle,
  type SagaSettlement,
} from '../store/sagas.js';
import type { TransRow } from '../store/transactions.js';
import { sendAlert } from './alert.js';
import type { EngineContext } from './context.js';
import { LeaseLost, leaseLost, type Executor, type Pass, type PassPlan, type PassResult } from './executor.js';
import { BranchWrites } from './saga-writes.js';
import {
  afterAnswer,
  afterFailure,
  attemptUpdate,
  decideSaga,
  isBrokerUrl,
  stepPolicy,
  type FailureVerdict,
  type SagaDecision,
  type SagaView,
} from './saga-decide.js';

type SagaPassResult = PassResult;

export class SagaProcessor {
  private readonly waiters = new Map<string, Set<(result: SagaPassResult) => void>>();

  private readonly ctx: EngineContext;

  constructor(private readonly executor: Executor) {
    this.ctx = executor.ctx;
  }

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

  /**
   * Runs passes over a claimed saga until it ends or waits; a reply that came mid-pass gets one more
   * pass at once. `branches`: the saga's branches when the caller has them as stored (a saga just
   * inserted, or claimed by the statement that recorded a reply), so the first pass need not read
   * them again.
   */
  async run(trans: TransRow, startedAt: number, lease: number, branches?: SagaBranchRow[]): Promise<SagaPassResult> {
    let row = trans;
    let started = startedAt;
    let known = branches;
    for (;;) {
      const passed = row;
      const given = known;
      known = undefined;
      const outcome: SagaPassResult & { poked?: boolean } = await this.executor.run('saga', passed, started, lease, (pass) =>
        this.plan(passed, pass, given),
      );
      if (!outcome.poked) return outcome;
      started = performance.now();
      const again = await claimSaga(this.ctx.database, this.ctx.nodeId, row.gid, lease);
      if (!again) return outcome;
      row = again;
    }
  }

  /** Reads the saga's branches and returns its decide function and the performers of its decisions. */
  private async plan(
    trans: TransRow,
    { log, lease }: Pass,
    given: SagaBranchRow[] | undefined,
  ): Promise<PassPlan<SagaDecision, SagaPassResult & { poked?: boolean }>> {
    const { config, database, nodeId } = this.ctx;
    const options: StoredOptions = trans.options;
    const branches = given ?? (await sagaBranches(database, trans.gid));
    for (const b of branches) if (isBrokerUrl(b.url)) this.ctx.replies.listen(b.url);
    let status = trans.status as SagaView['status'];
    let rollbackReason = '';

    const writes = new BranchWrites();

    const finish = async (s: SagaSettlement, reason?: string): Promise<SagaPassResult & { poked?: boolean }> => {
      const { applied, poked } = await settleSaga(database, nodeId, trans.gid, s, writes.take());
      if (!applied) return leaseLost(status);
      return { ...this.settled(trans, s, reason, log), poked };
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
      writes.write(b, verdict.update);
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

    /**
     * Writes the next attempt of each branch (with everything pending) in one statement before any
     * of them runs: an action that may have run is then always compensated on rollback, and even
     * the quickest reply to a command finds its attempt.
     */
    const recordAttempts = async (toRun: SagaBranchRow[]): Promise<void> => {
      for (const b of toRun) writes.write(b, attemptUpdate(b, options, config));
      if (!(await updateSagaBranches(database, nodeId, trans.gid, writes.take()))) throw new LeaseLost();
    };

    /** One run of a branch whose attempt is recorded: an HTTP call, or the publication of its command (the reply comes later). */
    const runBranch = async (b: SagaBranchRow): Promise<SagaPassResult | undefined> => {
      if (isBrokerUrl(b.url)) {
        const answer = await this.publishCommand(trans, b);
        if (answer.outcome === 'SUCCESS') return undefined;
        const detail = `command not published: ${answer.detail}`;
        return apply(b, afterFailure(b, 'ERROR', detail, options, config), detail);
      }
      const answer = await this.executor.call(trans, {
        url: b.url,
        branchId: b.branch_id,
        op: b.op,
        payload: payloadBytes(trans.protocol, b.data),
        meta: b.meta,
        timeout: stepPolicy(b, options, config).timeout,
      });
      return apply(b, afterAnswer(b, answer, options, config), answer.detail);
    };

    return {
      decide: (ageMs) => decideSaga({ status, options, ageMs, branches }, config),
      perform: {
        rollback: async (next) => {
          // With the branch states so far: which actions were tried decides what is compensated.
          if (!(await moveSaga(database, nodeId, trans.gid, 'aborting', next.reason, writes.take()))) {
            throw new LeaseLost();
          }
          log.info({ reason: next.reason }, 'saga rolls back');
          status = 'aborting';
          rollbackReason = next.reason;
          return undefined;
        },
        finish: (next) =>
          next.status === 'succeed'
            ? finish({ status: 'succeed', delay: 0 })
            : finish({ status: 'failed', delay: 0 }, rollbackReason || undefined),
        advance: async (next) => {
          // No reply in time, or a reply that reported a failure: the step's policy decides.
          for (const { branch, detail } of next.overdue) {
            const ended = await apply(branch, afterFailure(branch, 'ERROR', detail, options, config), detail);
            if (ended) return ended;
          }
          const changed = next.overdue.length > 0;
          const toRun = next.run;
          if (onlyCommands(next)) {
            const { s, changes } = this.commandsSettle(trans, status, next, writes);
            const { applied, poked } = await settleSaga(database, nodeId, trans.gid, s, changes);
            if (!applied) return leaseLost(status);
            await this.publishCommands(trans, toRun, log);
            return { status, poked };
          }
          if (toRun.length > 0) {
            // Every call must end before the lease does; the attempts are written before any call leaves.
            const longest = Math.max(
              ...toRun.map((b) => (isBrokerUrl(b.url) ? config.requestTimeout : stepPolicy(b, options, config).timeout)),
            );
            if (!(await lease.fits(longest))) throw new LeaseLost();
            await recordAttempts(toRun);
            return (await Promise.all(toRun.map(runBranch))).find((r) => r !== undefined);
          }
          if (changed) return undefined;
          // Nothing to do before the first wait ends (a reply may end it sooner).
          const delay = next.waits.length > 0 ? Math.max(0, Math.min(...next.waits)) : (options.retry_interval ?? config.retryInterval);
          return finish({ status, delay });
        },
      },
      giveBack: () => finish({ status, delay: 0 }),
    };
  }

  /**
   * The pass of a saga that a reply's statement claimed (`branches` as that statement returned
   * them), when it calls nothing: the next steps' commands (broker steps only) with their attempts
   * written and the lease given back, or the saga's end. Answers the settle, for the reply's own
   * store transaction (a Kafka step then costs one commit, its reply recorded with the next
   * step's attempt, instead of two), and what to do once that committed: send the commands (each
   * attempt is durable before its command leaves) or tell the end. Undefined when the saga needs
   * a full pass (an HTTP step, an overdue reply, a rollback): run() makes it.
   */
  passInClaim(trans: TransRow, branches: SagaBranchRow[]): { settle: SagaSettle; afterCommit: () => Promise<void> } | undefined {
    const { config, logger } = this.ctx;
    const status = trans.status as SagaView['status'];
    const next = decideSaga({ status, options: trans.options, ageMs: trans.age_ms, branches }, config);
    if (next.kind === 'rollback' || (next.kind === 'advance' && !onlyCommands(next))) return undefined;
    const log = logger.child({ gid: trans.gid, trans_type: trans.trans_type });
    if (next.kind === 'finish') {
      const s: SagaSettlement = { status: next.status, delay: 0 };
      return { settle: { gid: trans.gid, s, changes: [] }, afterCommit: async () => void this.settled(trans, s, undefined, log) };
    }
    for (const b of branches) if (isBrokerUrl(b.url)) this.ctx.replies.listen(b.url);
    return {
      settle: this.commandsSettle(trans, status, next, new BranchWrites()),
      afterCommit: () => this.publishCommands(trans, next.run, log),
    };
  }

  /** A pass's settlement went through: its end counted, logged and told to the submits waiting for it. */
  private settled(trans: TransRow, s: SagaSettlement, reason: string | undefined, log: Logger): SagaPassResult {
    const result: SagaPassResult = { status: s.status, ...(reason ? { reason } : {}) };
    if (s.status === 'succeed' || s.status === 'failed' || s.status === 'needs_attention') {
      this.executor.ended(trans, s.status, reason, log, s.status === 'needs_attention' ? 'saga needs attention' : 'saga finished');
      for (const notify of this.waiters.get(trans.gid) ?? []) notify(result);
    }
    return result;
  }

  /**
   * Only commands to send, and then the pass would wait: their attempts (with the pass's other
   * writes) and the lease given back go in one settle; then they leave (publishCommands), and
   * their replies claim the saga.
   */
  private commandsSettle(
    trans: TransRow,
    status: SagaView['status'],
    next: Extract<SagaDecision, { kind: 'advance' }>,
    writes: BranchWrites,
  ): SagaSettle {
    const { config } = this.ctx;
    for (const b of next.run) writes.write(b, attemptUpdate(b, trans.options, config));
    const delay = Math.min(...next.waits, ...next.run.map((b) => stepPolicy(b, trans.options, config).timeout));
    return { gid: trans.gid, s: { status, delay }, changes: writes.take() };
  }

  /** Sends the commands whose attempts are written; one that cannot be published is sent again once its reply is overdue. */
  private async publishCommands(trans: TransRow, toRun: SagaBranchRow[], log: Logger): Promise<void> {
    await Promise.all(
      toRun.map(async (b) => {
        const answer = await this.publishCommand(trans, b);
        if (answer.outcome !== 'SUCCESS') {
          log.warn(
            { branchId: b.branch_id, op: b.op, detail: answer.detail },
            'command not published; sent again once its reply is overdue',
          );
        }
      }),
    );
  }

  /** Publishes the command of a broker branch's current attempt; its reply comes later, to the reply topic. */
  private publishCommand(trans: TransRow, b: SagaBranchRow) {
    return this.executor.call(trans, {
      url: b.url,
      branchId: b.branch_id,
      op: b.op,
      payload: payloadBytes(trans.protocol, b.data),
      meta: b.meta,
      headers: {
        [commandHeaders.messageId]: `${trans.gid}/${b.branch_id}/${b.op}`,
        [commandHeaders.op]: b.op,
        [commandHeaders.command]: b.meta.command ?? b.op,
        [commandHeaders.attempt]: String(b.attempts),
        [commandHeaders.replyTo]: this.ctx.replyTopic,
      },
      timeout: this.ctx.config.requestTimeout,
      key: b.meta.key ?? trans.gid,
      timed: false,
    });
  }
}

/** A decision that only sends commands (broker steps, nothing overdue): the pass then waits for their replies. */
function onlyCommands(next: Extract<SagaDecision, { kind: 'advance' }>): boolean {
  return next.overdue.length === 0 && next.run.length > 0 && next.run.every((b) => isBrokerUrl(b.url));
}
