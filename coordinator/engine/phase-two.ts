/**
 * TCC and XA as the API calls them: prepare, registerBranch (TCC: the client called the branch's
 * Try, or is about to; XA: the branch's local transaction is prepared), submit and abort. Submit
 * and abort lease the transaction to this node and run its second phase at once (msg-process.ts
 * with decidePhaseTwo); the scheduler retries what is left and aborts a prepared transaction whose
 * client vanished (timeout_to_fail). One engine serves one type.
 */
import type { TransRequest } from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import type { BranchRegistration } from '../../schemas/xa.js';
import { abortPrepared, registerBranches } from '../store/tcc.js';
import { findTransactions, insertTransactions, promoteToSubmitted, type StoredTransaction, type TransRow } from '../store/transactions.js';
import { leaseSeconds, type EngineContext } from './context.js';
import type { MsgProcessor } from './msg-process.js';
import { throwUnlessSucceeded } from './outcome.js';
import { phaseTwoOps, type PhaseTwoType } from './phase-two-decide.js';
import { contentHash, storedOptions, protocolOf } from './request.js';

export class PhaseTwoEngine {
  constructor(
    private readonly ctx: EngineContext,
    private readonly processor: MsgProcessor,
    readonly type: PhaseTwoType,
  ) {}

  /** Stores the prepared transaction; sent again, it is the same transaction. */
  async prepare(req: TransRequest): Promise<void> {
    const { config, database } = this.ctx;
    const options = storedOptions(req);
    const created = await insertTransactions(database, [
      {
        gid: req.gid,
        transType: this.type,
        status: 'prepared',
        queryPrepared: '',
        protocol: protocolOf(req),
        options,
        customData: req.custom_data ?? '',
        contentHash: contentHash(req),
        interval: options.retry_interval ?? config.retryInterval,
        // Due when its time runs out: a client that vanished before submit or abort gets its rollbacks.
        dueIn: options.timeout_to_fail ?? config.timeoutToFail,
        owner: '',
        branches: [],
      },
    ]);
    if (created.has(req.gid)) return;
    const row = await this.existing(req.gid);
    if (row.status !== 'prepared') throw new ConcordError('INVALID_STATE', `current status '${row.status}', cannot prepare`);
  }

  /**
   * Records a branch's phase-two calls as DTM stores them: TCC's Cancel and Confirm, XA's rollback
   * and commit (the same URL for both).
   */
  async registerBranch(reg: BranchRegistration): Promise<void> {
    const checked = (field: 'confirm' | 'cancel' | 'url', url: string) => {
      const problem = url === '' ? undefined : this.ctx.relay.problem(url);
      if (problem) throw new ConcordError('INVALID_REQUEST', problem, { field });
      return url;
    };
    const [rollbackUrl, commitUrl] =
      reg.trans_type === 'tcc' ? [checked('cancel', reg.cancel), checked('confirm', reg.confirm)] : [checked('url', reg.url), reg.url];
    const ops = phaseTwoOps[reg.trans_type];
    const branch = { branchId: reg.branch_id, data: reg.data ?? '', meta: {}, orderKey: null };
    const outcome = await registerBranches(this.ctx.database, reg.gid, reg.trans_type, [
      { ...branch, op: ops.rollback, url: rollbackUrl },
      { ...branch, op: ops.commit, url: commitUrl },
    ]);
    if (outcome.kind === 'registered' || (outcome.kind === 'repeated' && outcome.same)) return;
    if (outcome.kind === 'repeated') {
      throw new ConcordError('GID_CONFLICT', `branch ${reg.branch_id} of ${reg.gid} is registered with other URLs or data`, {
        field: 'branch_id',
      });
    }
    if (outcome.status === null) throw new ConcordError('NOT_FOUND', `no transaction with gid ${reg.gid}`, { field: 'gid' });
    if (outcome.transType !== reg.trans_type) {
      throw new ConcordError('GID_CONFLICT', `gid ${reg.gid} is a ${outcome.transType} transaction, not ${reg.trans_type}`, {
        field: 'trans_type',
      });
    }
    throw new ConcordError('INVALID_STATE', `current status '${outcome.status}', cannot register a branch`);
  }

  /** Commits every branch (TCC: Confirm); with wait_result, answers after that pass. */
  async submit(req: TransRequest): Promise<void> {
    const { config, database, nodeId } = this.ctx;
    const startedAt = performance.now();
    const lease = leaseSeconds(config, config.requestTimeout);
    const [promoted] = await promoteToSubmitted(database, [{ gid: req.gid, transType: this.type, contentHash: '' }], nodeId, lease);
    if (!promoted) {
      const stored = await this.existing(req.gid);
      if (stored.status === 'submitted' || stored.status === 'succeed') {
        if (req.wait_result && stored.status !== 'succeed')
          throw new ConcordError('TRANSACTION_ONGOING', `${this.type} ${req.gid} is not finished yet`);
        return;
      }
      // Prepared but held by another node: its time ran out and that node is aborting it.
      throw new ConcordError(
        'INVALID_STATE',
        `current status '${stored.status === 'prepared' ? 'aborting' : stored.status}', cannot submit`,
      );
    }
    await this.runNow(promoted, req, startedAt, lease);
  }

  /** Rolls back every branch (TCC: Cancel; a branch failed); aborting twice is the same abort. */
  async abort(req: TransRequest): Promise<void> {
    const { config, database, nodeId } = this.ctx;
    const startedAt = performance.now();
    const lease = leaseSeconds(config, config.requestTimeout);
    const reason = req.rollback_reason ?? 'aborted by the caller';
    const aborting = await abortPrepared(database, req.gid, this.type, nodeId, lease, reason);
    if (!aborting) {
      const stored = await this.existing(req.gid);
      if (stored.status === 'aborting' || stored.status === 'failed' || stored.status === 'prepared') return;
      throw new ConcordError('INVALID_STATE', `current status '${stored.status}', cannot abort`);
    }
    await this.runNow(aborting, req, startedAt, lease);
  }

  private async runNow({ trans: row, branches }: StoredTransaction, req: TransRequest, startedAt: number, lease: number): Promise<void> {
    const pass = this.ctx.inFlight.track(this.processor.run(row, branches, startedAt, lease));
    if (req.wait_result) {
      const end = await pass;
      // An aborted transaction ends failed, which is what the caller asked for.
      if (row.status === 'aborting' && end.status === 'failed') return;
      throwUnlessSucceeded(`${this.type} ${req.gid}`, end);
    }
  }

  private async existing(gid: string): Promise<TransRow> {
    const transType = this.type;
    const row = (await findTransactions(this.ctx.database, [gid])).get(gid);
    if (!row) throw new ConcordError('NOT_FOUND', `no transaction with gid ${gid}`, { field: 'gid' });
    if (row.trans_type !== transType) {
      throw new ConcordError('GID_CONFLICT', `gid ${gid} is a ${row.trans_type} transaction, not ${transType}`, { field: 'trans_type' });
    }
    return row;
  }
}
