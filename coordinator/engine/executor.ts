/**
 * What every pass does the same way, whatever the transaction's type: the one pass loop (`run`:
 * it holds the one Lease, asks the type's decide function what to do and hands each decision to
 * the type's performer for its kind, until one ends the pass), the one way to call a branch
 * through the relay, settle (one group commit for every type that settles with `settle`), counted
 * and logged ends, the alert webhook told of a transaction that keeps failing, and an error
 * thrown mid-pass turned into a defined end. msg-process.ts, saga-process.ts and
 * workflow-process.ts supply only their decisions' performers.
 */
import type { Logger } from 'pino';
import type { DeliveryResult } from '../../relay/publisher.js';
import type { BackoffPolicy } from '../../schemas/backoff.js';
import type { BranchMeta } from '../../schemas/db/tables.js';
import type { DtmOutcome, GlobalStatus } from '../../schemas/dtm.js';
import type { GroupCommit } from '../store/group-commit.js';
import { settle, type Settlement, type TransRow } from '../store/transactions.js';
import { sendAlert } from './alert.js';
import { traced } from './trace.js';
import { batched } from './batches.js';
import type { EngineContext } from './context.js';
import { Lease } from './lease.js';
import { msgRetry } from './msg-decide.js';

/** Where a pass left its transaction, and why when it did not end. */
export interface PassResult {
  status: GlobalStatus;
  reason?: string | undefined;
}

/** The lease went to another node mid-pass: stop at once, that node carries on. */
export class LeaseLost extends Error {
  constructor() {
    super('lease lost to another node');
  }
}

/** One call of a branch (or the publication of its command). */
export interface BranchCall {
  url: string;
  branchId: string;
  op: string;
  /** A branch's stored data goes through payloadBytes (schemas/payload-bytes.ts) first. */
  payload: string | Buffer;
  /** Seconds the call may take. */
  timeout: number;
  meta?: BranchMeta;
  /** Headers besides the transaction's branch_headers and the branch's own. */
  headers?: Record<string, string>;
  /** The broker message key (default: the branch's meta.key). */
  key?: string | undefined;
  /** Send a POST even without data (DTM calls XA's phase two so). */
  post?: boolean;
  /** The call answers (its duration is observed); false for a command whose reply comes later. */
  timed?: boolean;
}

/** What a pass's decide function answers: one of its type's decisions, told apart by `kind`. */
export interface Decision {
  kind: string;
}

/** Each decision's performer: the pass's end, or undefined to decide again. */
export type Performers<D extends Decision, R extends PassResult = PassResult> = {
  [K in D['kind']]: (decision: Extract<D, { kind: K }>) => Promise<R | undefined>;
};

/** What a type supplies to `run`: its decide function and the performers of its decisions. */
export interface PassPlan<D extends Decision, R extends PassResult = PassResult> {
  /** The next decision; `ageMs` is the store's age of the transaction at the claim plus the time this pass has run. */
  decide(ageMs: number): D;
  perform: Performers<D, R>;
  /** The end of a pass that made maxRounds decisions without ending: settle, due again at once. */
  giveBack(): Promise<R>;
}

/** What `run` gives a type's plan: the pass's log, its hold on the transaction, and the transaction's call timeout and backoff. */
export interface Pass {
  log: Logger;
  lease: Lease;
  /** Seconds a call may take: the transaction's request_timeout, else the configured one. */
  timeout: number;
  /** The transaction's retry_interval (else the configured one), doubled up to maxRetryInterval. */
  policy: BackoffPolicy;
}

/** Decisions in one pass at most: a pass never spins, whatever the branches answer. */
const maxRounds = 10_000;

/** A pass's end when its lease went to another node: the transaction is as `status`, that node carries on. */
export function leaseLost(status: GlobalStatus): PassResult {
  return { status, reason: new LeaseLost().message };
}

export class Executor {
  private readonly settles: GroupCommit<Settlement, boolean>;

  constructor(readonly ctx: EngineContext) {
    this.settles = batched(ctx, 'settle', async (items: Settlement[]) => {
      const applied = await settle(ctx.database, ctx.nodeId, items);
      return items.map((s) => applied.has(s.gid));
    });
  }

  /**
   * Runs one pass. An error thrown from it (the store failed, or LeaseLost) ends the pass with the
   * row as it was claimed: its lease runs out and another pass, here or on another node, resumes.
   */
  private async guarded<R extends PassResult>(what: string, trans: TransRow, pass: () => Promise<R>): Promise<R | PassResult> {
    try {
      return await pass();
    } catch (err) {
      if (!(err instanceof LeaseLost)) this.ctx.logger.error({ err, gid: trans.gid, trans_type: trans.trans_type }, `${what} pass failed`);
      return { status: trans.status, reason: (err as Error).message };
    }
  }

  /**
   * The one pass loop of every type: holds the lease of `trans` (`startedAt`, performance.now(),
   * was read before the store wrote a lease of `leaseFor` seconds), asks the plan's decide
   * function what to do, performs it, and decides again until a performer ends the pass. An
   * error thrown on the way ends the pass as `guarded` does.
   */
  run<D extends Decision, R extends PassResult>(
    what: string,
    trans: TransRow,
    startedAt: number,
    leaseFor: number,
    plan: (pass: Pass) => PassPlan<D, R> | Promise<PassPlan<D, R>>,
  ): Promise<R | PassResult> {
    return this.guarded(what, trans, async () => {
      const { config, logger } = this.ctx;
      const { options } = trans;
      const steps = await plan({
        log: logger.child({ gid: trans.gid, trans_type: trans.trans_type }),
        lease: this.lease(trans, startedAt, leaseFor),
        timeout: options.request_timeout ?? config.requestTimeout,
        policy: { base: options.retry_interval ?? config.retryInterval, cap: config.maxRetryInterval },
      });
      // Each performer takes only its kind, which dispatching by `kind` guarantees.
      const perform = steps.perform as unknown as Record<string, (d: D) => Promise<R | undefined>>;
      for (let round = 0; round < maxRounds; round++) {
        const next = steps.decide(trans.age_ms + (performance.now() - startedAt));
        const ended = await perform[next.kind]!(next);
        if (ended) return ended;
      }
      return steps.giveBack();
    });
  }

  /** The pass's hold on `trans`: `startedAt` (performance.now()) was read before the store wrote a lease of `seconds`. */
  private lease(trans: TransRow, startedAt: number, seconds: number): Lease {
    return new Lease(this.ctx, trans.gid, startedAt, seconds);
  }

  /** The one way a pass calls a branch or sends its command: through the relay, with the transaction's and the branch's headers, counted in the metrics. */
  async call(trans: TransRow, call: BranchCall): Promise<DeliveryResult> {
    // An empty URL is a step with nothing to call: it succeeds.
    if (call.url === '') return { outcome: 'SUCCESS', detail: 'no URL' };
    const { relay, metrics } = this.ctx;
    const started = performance.now();
    const delivery = {
      url: call.url,
      params: { gid: trans.gid, trans_type: trans.trans_type, branch_id: call.branchId, op: call.op },
      payload: call.payload,
      headers: { ...trans.options.branch_headers, ...call.meta?.headers, ...call.headers },
      timeoutMs: call.timeout * 1000,
      key: call.key ?? call.meta?.key,
      post: call.post,
    };
    // A span per delivery, continuing the trace stored with the transaction (trace.ts).
    const answer = await traced(delivery, (d) => relay.publish(d));
    metrics.branchCalls.inc({ op: call.op, outcome: answer.outcome });
    if (call.timed ?? true) metrics.branchSeconds.observe({ op: call.op }, (performance.now() - started) / 1000);
    return answer;
  }

  /**
   * Settles a pass of `trans` (group-committed with the passes of other transactions). `status`
   * is where the pass had it: what the pass answers when the lease was lost meanwhile.
   */
  async settle(trans: TransRow, status: GlobalStatus, s: Omit<Settlement, 'gid'>, log: Logger): Promise<PassResult> {
    if (!(await this.settles.run({ gid: trans.gid, ...s }))) return leaseLost(status);
    if (s.status === 'succeed' || s.status === 'failed') this.ended(trans, s.status, s.reason, log);
    return { status: s.status, reason: s.reason };
  }

  /**
   * Settles a pass whose call did not get through (`outcome`): the transaction stays `status`,
   * due again after the next backoff of `policy`, and the alert webhook hears of it once it kept
   * failing alertRetryLimit times.
   */
  async retryLater(
    trans: TransRow,
    log: Logger,
    r: {
      status: Settlement['status'];
      outcome: DtmOutcome;
      policy: BackoffPolicy;
      reason: string;
      succeeded?: Settlement['succeeded'];
      failed?: Settlement['failed'] | undefined;
    },
  ): Promise<PassResult> {
    const retry = msgRetry(r.outcome, trans.next_cron_interval, r.policy);
    const branchId = r.failed?.branchId ?? '00';
    log.warn({ outcome: r.outcome, branchId, reason: r.reason, retryIn: retry.interval }, 'will retry');
    this.alertIfRepeated(trans, branchId, r.reason);
    return this.settle(trans, r.status, { succeeded: r.succeeded ?? [], failed: r.failed, status: r.status, ...retry }, log);
  }

  /** Counts and logs a transaction's end. */
  ended(trans: TransRow, status: GlobalStatus, reason: string | undefined, log: Logger, message = 'transaction finished'): void {
    this.ctx.metrics.transactions.inc({ trans_type: trans.trans_type, status });
    log.info({ status, reason }, message);
  }

  /** Tells the alert webhook that a transaction keeps failing (its retries reached alertRetryLimit). */
  alertIfRepeated(trans: TransRow, branchId: string, error: string): void {
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
