/**
 * Workflows as the API calls them (DTM's protocol): prepareWorkflow creates the workflow, or
 * returns it with its recorded progress so a run replays finished steps; registerBranch records
 * each step's outcome; submit ends the workflow as its client reports (req_extra). The code runs
 * in the service; the scheduler resumes a workflow left prepared through workflow-process.ts.
 */
import type { TransRequest } from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import { parseJson } from '../../schemas/trans-checks.js';
import { workflowCustomDataSchema, workflowOutcomeSchema, type WorkflowRegistration, type WorkflowReply } from '../../schemas/workflow.js';
import type { GroupCommit } from '../store/group-commit.js';
import { finishWorkflow, findWorkflow, recordProgress, type NewProgress, type Recorded } from '../store/workflow.js';
import { insertTransactions } from '../store/transactions.js';
import { again, batched, inRounds } from './batches.js';
import type { EngineContext } from './context.js';
import { contended } from './outcome.js';
import { contentHash, storedOptions, protocolOf } from './request.js';
import { firstResumeIn } from './workflow-decide.js';

export class WorkflowEngine {
  /** Progress records of concurrent requests share a store transaction; one step twice in a batch waits for the next. */
  private readonly records: GroupCommit<NewProgress, Recorded | ConcordError>;

  constructor(private readonly ctx: EngineContext) {
    this.records = batched(ctx, 'workflow-record', (items: NewProgress[]) =>
      inRounds<NewProgress, Recorded | ConcordError>(
        items,
        async (round) => {
          const first = new Set<number>();
          const seen = new Set<string>();
          round.forEach((item, i) => {
            const key = JSON.stringify([item.gid, item.branch_id, item.op]);
            if (!seen.has(key)) first.add(i);
            seen.add(key);
          });
          const written = await recordProgress(
            ctx.database,
            round.filter((_, i) => first.has(i)),
          );
          return round.map((_, i) => (first.has(i) ? (written.shift() ?? again) : again));
        },
        (item) => contended(item.gid),
      ),
    );
  }

  /** Creates the workflow (prepared) unless its gid exists; answers it with its progress records. */
  async prepare(req: TransRequest): Promise<WorkflowReply> {
    const { config, database } = this.ctx;
    const custom = workflowCustomDataSchema.safeParse(parseJson(req.custom_data ?? ''));
    if (!custom.success) {
      const issue = custom.error.issues[0];
      const where = issue?.path.length ? `.${issue.path.join('.')}` : '';
      throw new ConcordError('INVALID_REQUEST', `custom_data${where}: ${issue?.message ?? 'must be {"name", "data"}'}`, {
        field: 'custom_data',
      });
    }
    const callback = req.query_prepared ?? '';
    const problem = callback === '' ? undefined : this.ctx.relay.problem(callback);
    if (problem) throw new ConcordError('INVALID_REQUEST', problem, { field: 'query_prepared' });
    const options = storedOptions(req);
    const created = await insertTransactions(database, [
      {
        gid: req.gid,
        transType: 'workflow',
        status: 'prepared',
        queryPrepared: callback,
        protocol: protocolOf(req),
        options,
        customData: req.custom_data ?? '',
        contentHash: contentHash(req),
        interval: options.retry_interval ?? config.retryInterval,
        dueIn: firstResumeIn(options, config.retryInterval),
        owner: '',
        branches: [],
      },
    ]);
    // A new workflow has no record yet: answer without reading it back.
    if (created.has(req.gid)) return { transaction: { gid: req.gid, status: 'prepared', rollback_reason: '', result: '' }, progresses: [] };
    const found = await findWorkflow(database, req.gid);
    if (!found) throw new ConcordError('CONTENDED', `gid ${req.gid} was removed while it was prepared; send it again`, { field: 'gid' });
    if (found.trans.trans_type !== 'workflow') {
      throw new ConcordError('GID_CONFLICT', `gid ${req.gid} is a ${found.trans.trans_type} transaction, not workflow`, {
        field: 'trans_type',
      });
    }
    const { trans } = found;
    return {
      transaction: { gid: trans.gid, status: trans.status, rollback_reason: trans.rollback_reason, result: trans.result },
      progresses: found.progresses.map((p) => ({
        branch_id: p.branch_id,
        op: p.op,
        status: p.status,
        bin_data: Buffer.from(p.data).toString('base64'),
      })),
    };
  }

  /** Records a step's outcome; the same record sent again is accepted, another one for the same step refused. */
  async registerBranch(reg: WorkflowRegistration): Promise<void> {
    const outcome = await this.records.run({
      gid: reg.gid,
      branch_id: reg.branch_id,
      op: reg.op,
      status: reg.status,
      data: reg.data ?? '',
    });
    if (outcome instanceof ConcordError) throw outcome;
    if (outcome.kind === 'recorded' || (outcome.kind === 'repeated' && outcome.same)) return;
    if (outcome.kind === 'repeated') {
      // Two runs of one workflow at once (the client, and a resume): the first record wins.
      throw new ConcordError('GID_CONFLICT', `step ${reg.branch_id} ${reg.op} of ${reg.gid} is recorded with another outcome`, {
        field: 'branch_id',
      });
    }
    if (outcome.status === null) throw new ConcordError('NOT_FOUND', `no transaction with gid ${reg.gid}`, { field: 'gid' });
    if (outcome.transType !== 'workflow') {
      throw new ConcordError('GID_CONFLICT', `gid ${reg.gid} is a ${outcome.transType} transaction, not workflow`, { field: 'trans_type' });
    }
    throw new ConcordError('INVALID_STATE', `current status '${outcome.status}', cannot record a step`);
  }

  /** Ends the workflow as the client reports it in req_extra; the same end sent again is accepted. */
  async submit(req: TransRequest): Promise<void> {
    const parsed = workflowOutcomeSchema.safeParse(req.req_extra ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ConcordError('INVALID_REQUEST', issue?.message ?? 'req_extra is invalid', {
        field: ['req_extra', ...(issue?.path ?? [])].join('.'),
      });
    }
    const outcome = parsed.data;
    const reason = outcome.rollback_reason ?? '';
    const ended = await finishWorkflow(this.ctx.database, req.gid, { status: outcome.status, reason, result: outcome.result ?? '' });
    if (ended) {
      this.ctx.metrics.transactions.inc({ trans_type: 'workflow', status: outcome.status });
      this.ctx.logger.info({ gid: req.gid, status: outcome.status, reason: reason || undefined }, 'transaction finished');
      return;
    }
    const found = await findWorkflow(this.ctx.database, req.gid);
    if (!found) throw new ConcordError('NOT_FOUND', `no transaction with gid ${req.gid}`, { field: 'gid' });
    if (found.trans.trans_type !== 'workflow') {
      throw new ConcordError('GID_CONFLICT', `gid ${req.gid} is a ${found.trans.trans_type} transaction, not workflow`, {
        field: 'trans_type',
      });
    }
    if (found.trans.status === outcome.status) return;
    throw new ConcordError('INVALID_STATE', `current status '${found.trans.status}', cannot end as '${outcome.status}'`);
  }
}
