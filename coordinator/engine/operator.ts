/** Counts stop here: "10000+" tells an operator enough, and counting further would scan millions of rows. */
export const countCap = 10_000;

/**
 * The admin UI's engine side (docs/admin-ui.md): counts per status, and operator actions besides
 * the saga redrive: retry a transaction now, or stop one for good. Each action, the redrives
 * included, is recorded (operator_actions: who, when, detail) and logged with who did it, the
 * name of the operator's token; a force-stop also writes who, when and why into the
 * transaction's rollback_reason, where GET /query shows it.
 */
import type { GlobalStatus } from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import type { OperatorSubject } from '../../schemas/db/tables.js';
import { forceStop, listActions, recordAction, retryNow, type RecordedAction } from '../store/operator-actions.js';
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

/** Actions listed per subject: a transaction with more has a story the log tells better. */
const historyLimit = 200;

export interface OperatorAction {
  subjectKind: OperatorSubject;
  subject: string;
  action: string;
  /** The operator token's name. */
  operator: string;
  /** The reason given, or what came of it. */
  detail?: string;
}

/**
 * Records an operator action that succeeded and logs it: `log` first (gid and trans_type when on a
 * transaction), then by, action and detail.
 */
export async function recordOperatorAction(
  ctx: Pick<EngineContext, 'database' | 'logger'>,
  action: OperatorAction,
  log: Record<string, unknown>,
  message: string,
): Promise<void> {
  const detail = action.detail ?? '';
  await recordAction(ctx.database, { ...action, detail });
  ctx.logger.info({ ...log, by: action.operator, action: action.action, ...(detail === '' ? {} : { detail }) }, message);
}

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

  /** Records an action that succeeded, and logs it. */
  record(action: OperatorAction, log: Record<string, unknown>, message: string): Promise<void> {
    return recordOperatorAction(this.ctx, action, log, message);
  }

  /** The recorded actions on one subject, newest first. */
  history(subjectKind: OperatorSubject, subject: string): Promise<RecordedAction[]> {
    return listActions(this.ctx.database, subjectKind, subject, historyLimit);
  }

  /** Transactions per status, each count capped at countCap. */
  counts(): Promise<Record<GlobalStatus, number>> {
    return countByStatus(this.ctx.database, countCap);
  }

  async retryNow(gid: string, by: string): Promise<void> {
    const result = await retryNow(this.ctx.database, gid);
    if (result.done) {
      await this.record(
        { subjectKind: 'transaction', subject: gid, action: 'retry-now', operator: by },
        { gid, trans_type: result.transType },
        'transaction due now, by an operator',
      );
      return;
    }
    if (result.status === undefined) throw new ConcordError('NOT_FOUND', `no transaction with gid ${gid}`, { field: 'gid' });
    if (!['prepared', 'submitted', 'aborting'].includes(result.status))
      throw new ConcordError('INVALID_STATE', `current status '${result.status}': only an unfinished transaction can be retried`);
    throw new ConcordError('INVALID_STATE', `${result.owner ?? 'a coordinator'} is running a pass on this transaction now`);
  }

  async forceStop(gid: string, reason: string, by: string): Promise<void> {
    const at = new Date().toISOString();
    const result = await forceStop(this.ctx.database, gid, `force-stopped by ${by} at ${at}: ${reason}`);
    if (result.done) {
      await this.record(
        { subjectKind: 'transaction', subject: gid, action: 'force-stop', operator: by, detail: reason },
        { gid, trans_type: result.transType },
        'transaction force-stopped by an operator',
      );
      return;
    }
    if (result.status === undefined) throw new ConcordError('NOT_FOUND', `no transaction with gid ${gid}`, { field: 'gid' });
    throw new ConcordError('INVALID_STATE', `current status '${result.status}': the transaction has finished already`);
  }
}
