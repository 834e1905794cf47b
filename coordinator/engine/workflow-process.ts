/**
 * One pass over a workflow this node holds the lease of: decideWorkflow says whether to call the
 * workflow's callback; the call runs the workflow in the service, which submits its outcome
 * itself. Whatever the answer, a workflow still prepared afterwards is due again after a backoff
 * (settle leaves a workflow the client finished meanwhile alone: it is no longer prepared).
 */
import type { BackoffPolicy } from '../../schemas/backoff.js';
import type { DtmOutcome } from '../../schemas/dtm.js';
import type { TransRow } from '../store/transactions.js';
import { leaseLost, type Executor, type PassResult } from './executor.js';
import { decideWorkflow } from './workflow-decide.js';

export class WorkflowProcessor {
  constructor(private readonly executor: Executor) {}

  run(trans: TransRow, startedAt: number, lease: number): Promise<PassResult> {
    return this.executor.guarded('workflow', trans, () => this.pass(trans, startedAt, lease));
  }

  private async pass(trans: TransRow, startedAt: number, leaseFor: number): Promise<PassResult> {
    const { config, logger } = this.executor.ctx;
    const log = logger.child({ gid: trans.gid, trans_type: 'workflow' });
    const policy: BackoffPolicy = { base: trans.options.retry_interval ?? config.retryInterval, cap: config.maxRetryInterval };
    const later = (outcome: DtmOutcome, reason: string) =>
      this.executor.retryLater(trans, log, { status: 'prepared', outcome, policy, reason });

    const next = decideWorkflow(trans);
    if (next.kind === 'finished') return { status: trans.status };
    if (next.kind === 'wait') return later('ERROR', next.reason);
    const timeout = trans.options.request_timeout ?? config.requestTimeout;
    if (!(await this.executor.lease(trans, startedAt, leaseFor).fits(timeout))) {
      return leaseLost('prepared');
    }
    log.info({ workflow: next.name }, 'resuming workflow');
    const answer = await this.executor.call(trans, { url: next.url, branchId: '00', op: next.name, payload: next.payload, timeout });
    // The run that answered submitted the outcome, unless it stopped early: then the row is still prepared.
    return later(answer.outcome, `resume answered ${answer.outcome}: ${answer.detail}`);
  }
}
