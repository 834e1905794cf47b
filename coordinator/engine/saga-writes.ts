/**
 * A saga pass's branch states not written yet. Every attempt is written before its call or command
 * leaves (the pass's recordAttempts), so a node that dies mid-call leaves the step marked as tried
 * and a rollback compensates it. Results of HTTP calls wait for the next statement the pass makes
 * anyway (the next round's attempts, the status change, the end of the pass): if this node dies
 * first, the calls are made again and the participant's barrier absorbs them.
 */
import type { BranchChange, BranchUpdate, SagaBranchRow } from '../store/sagas.js';

export class BranchWrites {
  private readonly pending = new Map<string, BranchChange>();

  /** Applies `update` to the row the pass decides from, and keeps it for the next statement. */
  write(branch: SagaBranchRow, update: BranchUpdate): void {
    branch.status = update.status;
    branch.attempts = update.attempts;
    branch.last_error = update.lastError;
    branch.reply_due_in = update.replyIn;
    branch.retry_in = update.retryIn;
    this.pending.set(`${branch.branch_id}/${branch.op}`, { branch_id: branch.branch_id, op: branch.op, update });
  }

  /** The changes kept so far, for the statement about to run; they are forgotten here. */
  take(): BranchChange[] {
    const changes = [...this.pending.values()];
    this.pending.clear();
    return changes;
  }
}
