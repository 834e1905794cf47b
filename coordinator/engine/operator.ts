/** Counts stop here: "10000+" tells an operator enough, and counting further would scan millions of rows. */
export const countCap = 10_000;

/**
 * The admin UI's engine side (docs/admin-ui.md): counts per status, and operator actions besides
 * the saga redrive: retry a transaction now, or stop one for good. Each is logged with who did it; a force-stop also writes who, when and why into
 * the transaction's rollback_reason, where the UI and GET /query show it.
 */
import type { GlobalStatus } from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import { forceStop, retryNow } from '../store/operator-actions.js';
import { countByStatus } from '../store/queries.js';
import { listTopics } from '../store/topics.js';
import { brokerConnections } from '../../schemas/config.js';
import type { EngineContext } from './context.js';

/** Topics listed for the admin UI: enough to read, not a dump of a store with thousands. */
const topicLimit = 500;

export interface BrokerConnectionView {
  kind: 'kafka' | 'rabbitmq';
  name: string;
  state: 'up' | 'down' | 'unused';
  error?: string;
}

/** Who acted: tokens carry no names, so every operator token is "operator". */
export const operatorName = 'operator';

export class OperatorActions {
  constructor(private readonly ctx: Pick<EngineContext, 'database' | 'logger' | 'relay' | 'config'>) {}

  /**
   * The broker connections this coordinator is configured with and how each one is (up, down with
   * its error, or not used yet: connections are opened on first use), and the topics with their subscribers.
   */
  async brokers(): Promise<{
    connections: BrokerConnectionView[];
    topics: { name: string; subscribers: { url: string; remark: string }[] }[];
  }> {
    const configured = brokerConnections(this.ctx.config);
    const states = new Map(this.ctx.relay.connections().map((c) => [`${c.kind}:${c.name}`, c]));
    const connections: BrokerConnectionView[] = [];
    for (const kind of ['kafka', 'rabbitmq'] as const) {
      for (const name of Object.keys(configured[kind]).sort()) {
        const state = states.get(`${kind}:${name}`);
        connections.push({
          kind,
          name,
          state: state === undefined ? 'unused' : state.up ? 'up' : 'down',
          ...(state?.error === undefined ? {} : { error: state.error }),
        });
      }
    }
    return { connections, topics: await listTopics(this.ctx.database, topicLimit) };
  }

  /** Transactions per status, each count capped at countCap. */
  counts(): Promise<Record<GlobalStatus, number>> {
    return countByStatus(this.ctx.database, countCap);
  }

  async retryNow(gid: string): Promise<void> {
    const result = await retryNow(this.ctx.database, gid);
    if (result.done) {
      this.ctx.logger.info(
        { gid, trans_type: result.transType, by: operatorName, action: 'retry-now' },
        'transaction due now, by an operator',
      );
      return;
    }
    if (result.status === undefined) throw new ConcordError('NOT_FOUND', `no transaction with gid ${gid}`, { field: 'gid' });
    if (!['prepared', 'submitted', 'aborting'].includes(result.status))
      throw new ConcordError('INVALID_STATE', `current status '${result.status}': only an unfinished transaction can be retried`);
    throw new ConcordError('INVALID_STATE', `${result.owner ?? 'a coordinator'} is running a pass on this transaction now`);
  }

  async forceStop(gid: string, reason: string): Promise<void> {
    const at = new Date().toISOString();
    const result = await forceStop(this.ctx.database, gid, `force-stopped by ${operatorName} at ${at}: ${reason}`);
    if (result.done) {
      this.ctx.logger.warn(
        { gid, trans_type: result.transType, by: operatorName, action: 'force-stop', reason },
        'transaction force-stopped by an operator',
      );
      return;
    }
    if (result.status === undefined) throw new ConcordError('NOT_FOUND', `no transaction with gid ${gid}`, { field: 'gid' });
    throw new ConcordError('INVALID_STATE', `current status '${result.status}': the transaction has finished already`);
  }
}
