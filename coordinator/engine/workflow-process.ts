/**
 * The performers of a workflow's decisions (workflow-decide.ts), run by the executor's pass loop
 * over a workflow this node holds the lease of. A resume calls the workflow's callback; the call
 * runs the workflow in the service, which submits its outcome itself. Whatever the answer, a
 * workflow still prepared afterwards is due again after a backoff (settle leaves a workflow the
 * client finished meanwhile alone: it is no longer prepared).
 */
import type { DtmOutcome } from '../../schemas/dtm.js';
import type { TransRow } from '../store/transactions.js';
import { leaseLost, type Executor, type Pass, type PassPlan, type PassResult } from './executor.js';
import { decideWorkflow, type WorkflowDecision } from './workflow-decide.js';

export class WorkflowProcessor {
  constructor(private readonly executor: Executor) {}

  run(trans: TransRow, startedAt: number, lease: number): Promise<PassResult> {
    return this.executor.run('workflow', trans, startedAt, lease, (pass) => this.plan(trans, pass));
  }

  private plan(trans: TransRow, { log, lease, timeout, policy }: Pass): PassPlan<WorkflowDecision> {
    const later = (outcome: DtmOutcome, reason: string) =>
      this.executor.retryLater(trans, log, { status: 'prepared', outcome, policy, reason });
    return {
      decide: () => decideWorkflow(trans),
      perform: {
        finished: () => Promise.resolve({ status: trans.status }),
        wait: (next) => later('ERROR', next.reason),
        resume: async (next) => {
          if (!(await lease.fits(timeout))) return leaseLost('prepared');
          log.info({ workflow: next.name }, 'resuming workflow');
          const answer = await this.executor.call(trans, { url: next.url, branchId: '00', op: next.name, payload: next.payload, timeout });
          // The run that answered submitted the outcome, unless it stopped early: then the row is still prepared.
          return later(answer.outcome, `resume answered ${answer.outcome}: ${answer.detail}`);
        },
      },
      // Every performer ends the pass.
      giveBack: () => later('ERROR', 'the pass did not end'),
    };
  }
}
