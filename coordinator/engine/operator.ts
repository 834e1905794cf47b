/**
 * Operator actions besides the saga redrive (docs/admin-ui.md): retry a transaction now, or stop
 * one for good. Each is logged with who did it; a force-stop also writes who, when and why into
 * the transaction's rollback_reason, where the UI and GET /query show it.
 */
import type { Logger } from 'pino';
import { ConcordError } from '../../schemas/errors.js';
import type { Database } from '../store/database.js';
import { forceStop, retryNow } from '../store/operator-actions.js';

/** Who acted: tokens carry no names, so every operator token is "operator". */
export const operatorName = 'operator';

export class OperatorActions {
  constructor(
    private readonly database: Database,
    private readonly logger: Logger,
  ) {}

  async retryNow(gid: string): Promise<void> {
    const result = await retryNow(this.database, gid);
    if (result.done) {
      this.logger.info({ gid, by: operatorName, action: 'retry-now' }, 'transaction due now, by an operator');
      return;
    }
    if (result.status === undefined) throw new ConcordError('NOT_FOUND', `no transaction with gid ${gid}`, { field: 'gid' });
    if (!['prepared', 'submitted', 'aborting'].includes(result.status))
      throw new ConcordError('INVALID_STATE', `current status '${result.status}': only an unfinished transaction can be retried`);
    throw new ConcordError('INVALID_STATE', `${result.owner ?? 'a coordinator'} is running a pass on this transaction now`);
  }

  async forceStop(gid: string, reason: string): Promise<void> {
    const at = new Date().toISOString();
    const result = await forceStop(this.database, gid, `force-stopped by ${operatorName} at ${at}: ${reason}`);
    if (result.done) {
      this.logger.warn({ gid, by: operatorName, action: 'force-stop', reason }, 'transaction force-stopped by an operator');
      return;
    }
    if (result.status === undefined) throw new ConcordError('NOT_FOUND', `no transaction with gid ${gid}`, { field: 'gid' });
    throw new ConcordError('INVALID_STATE', `current status '${result.status}': the transaction has finished already`);
  }
}
