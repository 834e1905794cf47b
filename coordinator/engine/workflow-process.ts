/**
 * One pass over a workflow this node holds the lease of: decideWorkflow says whether to call the
 * workflow's callback; the call runs the workflow in the service, which submits its outcome
 * itself. Whatever the answer, a workflow still prepared afterwards is due again after a backoff
 * (settle leaves a workflow the client finished meanwhile alone: it is no longer prepared).
 */
import type { BackoffPolicy } from '../../schemas/backoff.js';
import type { GroupCommit } from '../store/group-commit.js';
import { settle, type Settlement, type TransRow } from '../store/transactions.js';
import { sendAlert } from './alert.js';
import { batched } from './batches.js';
import type { EngineContext } from './context.js';
import { Lease } from './lease.js';
import { msgRetry } from './msg-decide.js';
import type { PassResult } from './msg-process.js';
import { publishBranch } from './publish.js';
import { decideWorkflow } from './workflow-decide.js';

export class WorkflowProcessor {
  private readonly settles: GroupCommit<Settlement, boolean>;

  constructor(private readonly ctx: EngineContext) {
    this.settles = batched(ctx, 'settle', async (items: Settlement[]) => {
      const applied = await settle(ctx.database, ctx.nodeId, items);
      return items.map((s) => applied.has(s.gid));
    });
  }

  async run(trans: TransRow, startedAt: number, lease: number): Promise<PassResult> {
    try {
      return await this.pass(trans, startedAt, lease);
    } catch (err) {
      // The store failed mid-pass: the lease runs out and another pass resumes.
      this.ctx.logger.error({ err, gid: trans.gid }, 'workflow pass failed');
      return { status: 'prepared', reason: (err as Error).message };
    }
  }

  private async pass(trans: TransRow, startedAt: number, leaseFor: number): Promise<PassResult> {
    const { config } = this.ctx;
    const log = this.ctx.logger.child({ gid: trans.gid, trans_type: 'workflow' });
    const policy: BackoffPolicy = { base: trans.options.retry_interval ?? config.retryInterval, cap: config.maxRetryInterval };
    const later = async (outcome: Parameters<typeof msgRetry>[0], reason: string): Promise<PassResult> => {
      const retry = msgRetry(outcome, trans.next_cron_interval, policy);
      const applied = await this.settles.run({ gid: trans.gid, succeeded: [], status: 'prepared', ...retry, reason: '' });
      if (applied) log.warn({ outcome, reason, retryIn: retry.interval }, 'workflow not finished; will resume again');
      if (applied && trans.retry_count + 1 >= config.alertRetryLimit) {
        sendAlert(this.ctx, {
          kind: 'retries',
          gid: trans.gid,
          trans_type: 'workflow',
          status: trans.status,
          branch: '00',
          error: reason,
          retry_count: trans.retry_count + 1,
        });
      }
      return { status: 'prepared', reason };
    };

    const next = decideWorkflow(trans);
    if (next.kind === 'finished') return { status: trans.status as PassResult['status'] };
    if (next.kind === 'wait') return later('ERROR', next.reason);
    const timeout = trans.options.request_timeout ?? config.requestTimeout;
    if (!(await new Lease(this.ctx, trans.gid, startedAt, leaseFor).fits(timeout))) {
      return { status: 'prepared', reason: 'lease lost to another node' };
    }
    log.info({ workflow: next.name }, 'resuming workflow');
    const answer = await publishBranch(this.ctx, {
      url: next.url,
      params: { gid: trans.gid, trans_type: 'workflow', branch_id: '00', op: next.name },
      payload: next.payload,
      headers: { ...trans.options.branch_headers },
      timeoutMs: timeout * 1000,
      timed: true,
    });
    // The run that answered submitted the outcome, unless it stopped early: then the row is still prepared.
    return later(answer.outcome, `resume answered ${answer.outcome}: ${answer.detail}`);
  }
}
