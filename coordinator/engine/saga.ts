/**
 * Saga: submit as the API calls it, the operator's redrive, and replies of broker steps. A
 * submitted saga is stored in one statement (group-committed with others) and its first pass runs
 * at once in this process; the scheduler only picks up sagas that wait (retries, reply timeouts)
 * or whose node died.
 */
import type { TransRequest } from '../../schemas/dtm.js';
import type { BranchMeta } from '../../schemas/db/tables.js';
import { ConcordError } from '../../schemas/errors.js';
import { sagaCustomDataSchema, sagaStepPolicySchema, type SagaReply } from '../../schemas/saga.js';
import { parseJson } from '../../schemas/trans-checks.js';
import { newSagaBranches, recordReplies, redriveSaga, settleSagas, type SagaBranchRow } from '../store/sagas.js';
import type { GroupCommit } from '../store/group-commit.js';
import {
  findTransactions,
  firstPerGid,
  insertTransactions,
  type NewBranch,
  type NewTransaction,
  type TransRow,
} from '../store/transactions.js';
import { again, batched, inRounds } from './batches.js';
import { leaseSeconds, type EngineContext } from './context.js';
import { contended, throwUnlessSucceeded } from './outcome.js';
import { branchMeta, conflictOf, contentHash, storedOptions, protocolOf } from './request.js';
import { isBrokerUrl } from '../../schemas/broker-messages.js';
import type { SagaProcessor } from './saga-process.js';
import { recordOperatorAction } from './operator.js';

/** A reply recorded or not; the saga it claimed, and what is left of the pass made with it (passInClaim). */
type ReplyOutcome = { recorded: boolean; claimed?: TransRow; branches?: SagaBranchRow[]; afterCommit?: (() => Promise<void>) | undefined };

type SubmitOutcome = { created: TransRow; branches: SagaBranchRow[] } | { existing: TransRow } | { error: ConcordError };

export class SagaEngine {
  private readonly submits: GroupCommit<NewTransaction, SubmitOutcome>;
  /**
   * Replies read together (a batch of the reply topic) are recorded in one statement, and the
   * passes of the sagas it claimed that call nothing are made in the same store transaction.
   */
  private readonly replies: GroupCommit<SagaReply, ReplyOutcome>;

  constructor(
    private readonly ctx: EngineContext,
    private readonly processor: SagaProcessor,
  ) {
    this.submits = batched(ctx, 'saga', (items: NewTransaction[]) =>
      inRounds(
        items,
        (open) => this.submitRound(open),
        (t) => ({ error: contended(t.gid) }),
      ),
    );
    const lease = leaseSeconds(ctx.config, ctx.config.requestTimeout);
    this.replies = batched(ctx, 'reply', (items: SagaReply[]) =>
      ctx.database.transaction(async (tx) => {
        const answers: ReplyOutcome[] = await recordReplies(tx, ctx.nodeId, lease, items);
        const passes = answers.map((a) => (a.claimed && a.branches ? this.processor.passInClaim(a.claimed, a.branches) : undefined));
        const settled = await settleSagas(
          tx,
          ctx.nodeId,
          passes.flatMap((pass) => (pass ? [pass.settle] : [])),
        );
        passes.forEach((pass, i) => {
          const answer = answers[i]!;
          if (pass && settled.has(pass.settle.gid)) answer.afterCommit = pass.afterCommit;
          else if (pass) answer.branches = undefined; // changed by passInClaim: run() reads them again
        });
        return answers;
      }),
    );
  }

  /** Stores the saga and starts it; with wait_result, answers once it ended (or waitResultTimeout passed). */
  async submit(req: TransRequest): Promise<void> {
    const trans = this.toTransaction(req);
    const startedAt = performance.now();
    const outcome = await this.submits.run(trans);
    if ('error' in outcome) throw outcome.error;
    const waitMs = this.ctx.config.waitResultTimeout * 1000;
    if ('existing' in outcome) {
      // The same saga sent again: it is already under way (or done).
      if (!req.wait_result) return;
      const status = outcome.existing.status;
      if (status === 'succeed' || status === 'failed' || status === 'needs_attention')
        return throwUnlessSucceeded(`saga ${req.gid}`, { status });
      return throwUnlessSucceeded(`saga ${req.gid}`, await this.processor.waitForEnd(req.gid, waitMs));
    }
    // Registered before the pass starts, so that an end within the first pass is not missed.
    const ended = req.wait_result ? this.processor.waitForEnd(req.gid, waitMs) : undefined;
    void this.ctx.inFlight.track(this.processor.run(outcome.created, startedAt, trans.dueIn, outcome.branches));
    if (ended) throwUnlessSucceeded(`saga ${req.gid}`, await ended);
  }

  /** Puts a saga that needs attention back to compensating (an operator, `by`, fixed the cause). */
  async redrive(gid: string, by: string): Promise<void> {
    if (await redriveSaga(this.ctx.database, gid)) {
      await recordOperatorAction(
        this.ctx,
        { subjectKind: 'transaction', subject: gid, action: 'redrive', operator: by },
        { gid, trans_type: 'saga' },
        'saga redriven by an operator',
      );
      return;
    }
    const row = (await findTransactions(this.ctx.database, [gid])).get(gid);
    if (!row) throw new ConcordError('NOT_FOUND', `no transaction with gid ${gid}`, { field: 'gid' });
    throw new ConcordError('INVALID_STATE', `current status '${row.status}': only a saga in needs_attention can be redriven`);
  }

  /** A participant's reply: recorded (duplicates and stale attempts change nothing), then the saga advances here. */
  async onReply(reply: SagaReply): Promise<void> {
    const { config, logger } = this.ctx;
    const startedAt = performance.now();
    const lease = leaseSeconds(config, config.requestTimeout);
    const { recorded, claimed, branches, afterCommit } = await this.replies.run(reply);
    this.ctx.metrics.sagaReplies.inc({ outcome: reply.outcome, recorded: String(recorded) });
    logger.debug(
      { gid: reply.gid, trans_type: 'saga', branchId: reply.branch_id, op: reply.op, attempt: reply.attempt, recorded },
      'saga reply',
    );
    // The saga's pass was made with the reply (its commands leave now, or it ended), or is made now.
    if (afterCommit) void this.ctx.inFlight.track(afterCommit());
    else if (claimed) void this.ctx.inFlight.track(this.processor.run(claimed, startedAt, lease, branches));
  }

  /** The stored form: per step a compensate and an action branch (DTM's order), each with its policy. */
  private toTransaction(req: TransRequest): NewTransaction {
    const { config, relay, nodeId } = this.ctx;
    const steps = req.steps ?? [];
    if (steps.length === 0) throw new ConcordError('INVALID_REQUEST', 'a saga needs at least one step', { field: 'steps' });
    // transRequestSchema checked custom_data and each step's policy.
    const custom = req.custom_data ? sagaCustomDataSchema.parse(parseJson(req.custom_data)) : {};
    const orders = custom.orders;
    const branches = steps.flatMap((step, i): NewBranch[] => {
      const field = `steps.${i}`;
      const policy = sagaStepPolicySchema.parse(step);
      const shared = branchMeta(step);
      const branch = (op: 'action' | 'compensate', meta: BranchMeta): NewBranch => {
        const url = step[op] ?? '';
        const problem = url === '' ? undefined : relay.problem(url);
        if (problem) throw new ConcordError('INVALID_REQUEST', problem, { field: `${field}.${op}` });
        if (isBrokerUrl(url) && this.ctx.replyTopic === '') {
          throw new ConcordError('INVALID_REQUEST', 'broker steps need replies: the coordinator runs with replyTopic ""', {
            field: `${field}.${op}`,
          });
        }
        const data = req.payloads?.[i] ?? step.data ?? '';
        return {
          branchId: String(i + 1).padStart(2, '0'),
          op,
          url,
          data,
          meta: JSON.parse(JSON.stringify(meta)) as BranchMeta,
          orderKey: null,
        };
      };
      const common = { ...shared, timeout: policy.timeout, backoff: policy.backoff };
      const action = branch('action', { ...common, command: policy.command, maxAttempts: policy.attempts });
      return [branch('compensate', { ...common, command: policy.compensate_command, maxAttempts: policy.compensate_attempts }), action];
    });
    const options = storedOptions(req, {
      concurrent: custom.concurrent || orders !== undefined || undefined,
      orders,
      retry_limit: req.retry_limit || undefined,
    });
    const lease = leaseSeconds(config, options.request_timeout ?? config.requestTimeout);
    return {
      gid: req.gid,
      transType: 'saga',
      status: 'submitted',
      queryPrepared: '',
      protocol: protocolOf(req),
      options,
      customData: req.custom_data ?? '',
      contentHash: contentHash(req),
      interval: options.retry_interval ?? config.retryInterval,
      dueIn: lease,
      owner: nodeId,
      branches,
    };
  }

  /** Inserts the new sagas; a repeat is compared with the stored one, or, deleted meanwhile (retention), stored again. */
  private async submitRound(items: NewTransaction[]): Promise<(SubmitOutcome | typeof again)[]> {
    const { database } = this.ctx;
    const created = await insertTransactions(database, items);
    const firsts = new Set(firstPerGid(items).filter((t) => created.has(t.gid)));
    const existing = await findTransactions(database, [...new Set(items.filter((t) => !firsts.has(t)).map((t) => t.gid))]);
    return items.map((item): SubmitOutcome | typeof again => {
      const inserted = created.get(item.gid);
      if (inserted && firsts.has(item)) return { created: inserted.trans, branches: newSagaBranches(inserted.branches) };
      const row = existing.get(item.gid);
      if (!row) return again;
      const conflict = conflictOf(row, item, true);
      return conflict ? { error: conflict } : { existing: row };
    });
  }
}
