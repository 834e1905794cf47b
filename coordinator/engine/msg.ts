/**
 * Two-phase message: prepare, submit and abort as the API calls them. Prepares and submits are
 * group-committed; a submitted message is delivered at once in this process, and the scheduler
 * only handles retries, delays and check-backs.
 */
import type { TransRequest } from '../../schemas/dtm.js';
import { msgCustomDataSchema, parseJson } from '../../schemas/trans-checks.js';
import type { BranchMeta } from '../../schemas/db/tables.js';
import { subscribersOf } from '../store/topics.js';
import { ConcordError } from '../../schemas/errors.js';
import type { GroupCommit } from '../store/group-commit.js';
import {
  failPrepared,
  findTransactions,
  firstPerGid,
  insertNewGids,
  insertTransactions,
  promoteToSubmitted,
  type BranchRow,
  type NewBranch,
  type NewTransaction,
  type TransRow,
} from '../store/transactions.js';
import { again, batched, inRounds } from './batches.js';
import { leaseSeconds, type EngineContext } from './context.js';
import { contended, throwUnlessSucceeded } from './outcome.js';
import { branchMeta, conflictOf, contentHash, storedOptions, protocolOf } from './request.js';
import { isBrokerUrl } from '../../schemas/broker-messages.js';
import type { MsgProcessor } from './msg-process.js';

type PrepareOutcome = { ok: true } | { error: ConcordError };
/** `deliver`: this node holds the lease (from `startedAt`, local clock, for `lease` seconds) and delivers now. */
type SubmitOutcome =
  { ok: true; deliver?: { trans: TransRow; branches: BranchRow[]; startedAt: number; lease: number } } | { error: ConcordError };

export class MsgEngine {
  private readonly prepares: GroupCommit<NewTransaction, PrepareOutcome>;
  private readonly submits: GroupCommit<{ trans: NewTransaction; hasSteps: boolean }, SubmitOutcome>;

  constructor(
    private readonly ctx: EngineContext,
    private readonly processor: MsgProcessor,
  ) {
    this.prepares = batched(ctx, 'prepare', (items: NewTransaction[]) =>
      inRounds(
        items,
        (open) => this.prepareRound(open),
        (t) => ({ error: contended(t.gid) }),
      ),
    );
    this.submits = batched(ctx, 'submit', (items: { trans: NewTransaction; hasSteps: boolean }[]) =>
      inRounds(
        items,
        (open) => this.submitRound(open),
        (i) => ({ error: contended(i.trans.gid) }),
      ),
    );
  }

  async prepare(req: TransRequest): Promise<void> {
    const outcome = await this.prepares.run(await this.toTransaction(req, 'prepared'));
    if ('error' in outcome) throw outcome.error;
  }

  /** Submits; with wait_result, answers only after one delivery pass. */
  async submit(req: TransRequest): Promise<void> {
    const hasSteps = (req.steps ?? []).length > 0;
    const trans = await this.toTransaction(req, 'submitted', hasSteps);
    const outcome = await this.submits.run({ trans, hasSteps });
    if ('error' in outcome) throw outcome.error;
    if (!outcome.deliver) {
      if (req.wait_result) throw new ConcordError('TRANSACTION_ONGOING', `transaction ${req.gid} is not finished yet`);
      return;
    }
    const { trans: row, branches, startedAt, lease } = outcome.deliver;
    const pass = this.ctx.inFlight.track(this.processor.run(row, branches, startedAt, lease));
    if (req.wait_result) throwUnlessSucceeded(`transaction ${req.gid}`, await pass);
  }

  async abort(req: TransRequest): Promise<void> {
    if (await failPrepared(this.ctx.database, req.gid, req.rollback_reason ?? 'aborted by the caller')) {
      this.ctx.metrics.transactions.inc({ trans_type: 'msg', status: 'failed' });
      return;
    }
    const existing = (await findTransactions(this.ctx.database, [req.gid])).get(req.gid);
    if (!existing) throw new ConcordError('NOT_FOUND', `no transaction with gid ${req.gid}`, { field: 'gid' });
    if (existing.status === 'failed') return; // aborting twice is idempotent
    throw new ConcordError('INVALID_STATE', `current status '${existing.status}', cannot abort`);
  }

  /**
   * The stored form of a request: one branch per step, or per subscriber of a `topic://` step
   * (ids 01-01, 01-02… when a topic has several). Every destination is checked before anything is
   * stored. The content hash covers the request's steps, not the subscribers, so a subscription
   * changing between prepare and submit is no conflict.
   */
  private async toTransaction(req: TransRequest, status: 'prepared' | 'submitted', requireSteps = true): Promise<NewTransaction> {
    const steps = req.steps ?? [];
    if (requireSteps && steps.length === 0) {
      throw new ConcordError('INVALID_REQUEST', 'a message needs at least one step', { field: 'steps' });
    }
    const topics = steps.map((s) => s.action ?? '').filter((a) => a.startsWith('topic://'));
    const subscribers = await subscribersOf(this.ctx.database, [...new Set(topics.map((t) => t.slice('topic://'.length)))]);
    const branches = steps.flatMap((step, i): NewBranch[] => {
      const field = `steps.${i}`;
      const id = String(i + 1).padStart(2, '0');
      const data = req.payloads?.[i] ?? step.data ?? '';
      const meta = branchMeta(step);
      const action = step.action ?? '';
      if (!action.startsWith('topic://')) {
        const url = this.checked(action, `${field}.action`);
        return [{ branchId: id, op: 'action', url, data, meta, orderKey: orderKeyOf(url, meta) }];
      }
      const targets = subscribers.get(action.slice('topic://'.length)) ?? [];
      if (targets.length === 0)
        throw new ConcordError('INVALID_REQUEST', `topic "${action}" has no subscribers`, { field: `${field}.action` });
      return targets.map((t, j) => ({
        branchId: targets.length === 1 ? id : `${id}-${String(j + 1).padStart(2, '0')}`,
        op: 'action',
        url: this.checked(t.url, `${field}.action`),
        data,
        meta,
        orderKey: orderKeyOf(t.url, meta),
      }));
    });
    const delay = parseDelay(req.custom_data);
    const options = storedOptions(req, { concurrent: req.concurrent || undefined, delay: delay || undefined });
    const config = this.ctx.config;
    const lease = leaseSeconds(this.ctx.config, options.request_timeout ?? config.requestTimeout);
    const delivering = status === 'submitted' && delay === 0;
    return {
      gid: req.gid,
      transType: req.trans_type,
      status,
      queryPrepared: this.checked(req.query_prepared ?? '', 'query_prepared'),
      protocol: protocolOf(req),
      options,
      customData: req.custom_data ?? '',
      contentHash: contentHash(req),
      interval: options.retry_interval ?? config.retryInterval,
      // A prepared message is due for its check-back; a submitted one is leased to this node.
      dueIn: status === 'prepared' ? (options.timeout_to_fail ?? config.timeoutToFail) : delivering ? lease : delay,
      owner: delivering ? this.ctx.nodeId : '',
      branches,
    };
  }

  /** The destination URL, when the relay can ever deliver to it; a 400 naming the field otherwise. */
  private checked(url: string, field: string): string {
    const problem = url === '' ? undefined : this.ctx.relay.problem(url);
    if (problem) throw new ConcordError('INVALID_REQUEST', problem, { field });
    return url;
  }

  /**
   * One statement inserts the new ones; repeats are compared with what is stored. A gid whose row
   * was deleted (retention) between the two statements is prepared again.
   */
  private async prepareRound(items: NewTransaction[]): Promise<(PrepareOutcome | typeof again)[]> {
    const { database } = this.ctx;
    const created = await insertNewGids(database, items);
    const inserted = new Set(firstPerGid(items).filter((t) => created.has(t.gid)));
    const existing = await findTransactions(database, [...new Set(items.filter((t) => !inserted.has(t)).map((t) => t.gid))]);
    return items.map((item) => {
      if (inserted.has(item)) return { ok: true };
      const row = existing.get(item.gid);
      if (!row) return again;
      const conflict = conflictOf(row, item, true);
      if (conflict) return { error: conflict };
      if (row.status !== 'prepared') return { error: new ConcordError('INVALID_STATE', `current status '${row.status}', cannot prepare`) };
      return { ok: true };
    });
  }

  /**
   * The common cases take one statement each and no explicit transaction: promote the prepared
   * ones, insert the new ones. Only the rest (repeats, conflicts) is looked up to be answered. A
   * row that changed between the statements (prepared meanwhile, or deleted by retention) makes
   * its item run again.
   */
  private async submitRound(items: { trans: NewTransaction; hasSteps: boolean }[]): Promise<(SubmitOutcome | typeof again)[]> {
    const { database, nodeId } = this.ctx;
    const startedAt = performance.now();
    const lease = leaseSeconds(this.ctx.config, this.ctx.config.requestTimeout);
    const unique = firstPerGid(items.map((item) => ({ gid: item.trans.gid, ...item, item })));
    const promoted = new Map(
      (
        await promoteToSubmitted(
          database,
          unique.map(({ trans, hasSteps }) => ({
            gid: trans.gid,
            transType: trans.transType,
            contentHash: hasSteps ? trans.contentHash : '',
          })),
          nodeId,
          lease,
        )
      ).map((row) => [row.trans.gid, row]),
    );
    const toInsert = unique.filter((i) => !promoted.has(i.gid) && i.hasSteps).map((i) => i.trans);
    const created = await insertTransactions(database, toInsert);
    const existing = await findTransactions(
      database,
      unique.filter((i) => !promoted.has(i.gid) && !created.has(i.gid)).map((i) => i.gid),
    );
    const firsts = new Set(unique.map((u) => u.item));
    return items.map((item): SubmitOutcome | typeof again => {
      const { trans, hasSteps } = item;
      const isFirst = firsts.has(item);
      const row = promoted.get(trans.gid);
      if (row && isFirst) return { ok: true, deliver: { ...row, startedAt, lease } };
      const inserted = created.get(trans.gid);
      if (inserted && isFirst) {
        if (trans.owner === '') return { ok: true }; // delayed: the scheduler delivers it when due
        return { ok: true, deliver: { ...inserted, startedAt, lease: trans.dueIn } };
      }
      if (row || created.has(trans.gid)) return { ok: true }; // the same gid twice in one batch: the first does the work
      const stored = existing.get(trans.gid);
      if (!stored) {
        if (!hasSteps) return { error: new ConcordError('INVALID_REQUEST', 'a message needs at least one step', { field: 'steps' }) };
        return again;
      }
      const conflict = conflictOf(stored, trans, hasSteps);
      if (conflict) return { error: conflict };
      if (stored.status === 'submitted' || stored.status === 'succeed') return { ok: true };
      // Prepared but not promoted: another node holds it for its check-back, which delivers if the commit landed.
      if (stored.status === 'prepared' && stored.owner !== '') return { ok: true };
      if (stored.status === 'prepared') return again;
      return { error: new ConcordError('INVALID_STATE', `current status '${stored.status}', cannot submit`) };
    });
  }
}

/** Keyed messages to a broker keep their submit order; HTTP calls and unkeyed messages need none. */
function orderKeyOf(url: string, meta: BranchMeta): string | null {
  return meta.key !== undefined && isBrokerUrl(url) ? `${url}#${meta.key}` : null;
}

/** custom_data's delay; transRequestSchema checked it. */
function parseDelay(customData: string | undefined): number {
  return customData ? (msgCustomDataSchema.parse(parseJson(customData)).delay ?? 0) : 0;
}
