/**
 * Parked consumer messages in the admin UI (docs/consumers.md#parked-messages-in-the-admin-ui):
 * consumers report what they parked in their own database, operators ask for redrives here, and
 * the consumers take those requests with the answer to their next report.
 */
import type { ParkedMessageState, ParkedMessageView, ParkedReport } from '../../schemas/consumer-parked.js';
import { ConcordError } from '../../schemas/errors.js';
import { applyParkedReport, listParkedMessages, requestParkedRedrive } from '../store/consumer-parked.js';
import { sendAlert } from './alert.js';
import type { EngineContext } from './context.js';
import { recordOperatorAction } from './operator.js';

const iso = (t: Date | string | null) => (t === null ? null : new Date(t).toISOString());

export class ConsumerParked {
  constructor(private readonly ctx: Pick<EngineContext, 'database' | 'logger' | 'config' | 'nodeId' | 'metrics'>) {}

  /**
   * A consumer's report; answers the redrives asked for. A message seen for the first time raises
   * the `parked` alert; resolved ones go after config retention, as finished transactions do.
   */
  async report(report: ParkedReport): Promise<{ redrive: string[] }> {
    const { redrive, fresh } = await applyParkedReport(this.ctx.database, report, this.ctx.config.retention);
    if (fresh.length > 0) {
      const first = report.parked.find((p) => p.messageId === fresh[0]);
      // The first ids name the problem; a report of hundreds would make one enormous line.
      this.ctx.logger.warn(
        { consumer: report.consumer, parked: fresh.length, messageIds: fresh.slice(0, 10) },
        'consumer reported parked messages',
      );
      sendAlert(this.ctx, {
        kind: 'parked',
        resolved: false,
        subject: `consumer ${report.consumer}`,
        message: `${fresh.length} message(s) parked by consumer ${report.consumer}; ${first?.messageId}: ${first?.error}`,
      });
    }
    return { redrive };
  }

  async list(filter: {
    consumer?: string | undefined;
    state?: ParkedMessageState | undefined;
    limit: number;
  }): Promise<ParkedMessageView[]> {
    return (await listParkedMessages(this.ctx.database, filter)).map((r) => ({
      consumer: r.consumer,
      messageId: r.message_id,
      source: r.source,
      error: r.error,
      attempts: r.attempts,
      firstFailure: iso(r.first_failure)!,
      lastFailure: iso(r.last_failure)!,
      state: r.state,
      redriveBy: r.redrive_by,
      redriveAt: iso(r.redrive_at),
      resolvedAt: iso(r.resolved_at),
      reportedAt: iso(r.reported_at)!,
    }));
  }

  /** Asks the consumer to run a parked message again; it takes the request with its next report. */
  async redrive(consumer: string, messageId: string, by: string): Promise<void> {
    const result = await requestParkedRedrive(this.ctx.database, consumer, messageId, by);
    if (result.done) {
      await recordOperatorAction(
        this.ctx,
        { subjectKind: 'consumer-message', subject: `${consumer}/${messageId}`, action: 'consumer-redrive', operator: by },
        { consumer, messageId },
        'parked consumer message redrive asked by an operator',
      );
      return;
    }
    if (result.state === undefined)
      throw new ConcordError('PARKED_MESSAGE_NOT_FOUND', `consumer ${consumer} reported no parked message ${messageId}`, {
        field: 'messageId',
      });
    throw new ConcordError(
      'INVALID_STATE',
      result.state === 'redrive'
        ? 'a redrive of this message is asked already: the consumer runs it with its next report'
        : `current state '${result.state}': only a parked message can be redriven`,
    );
  }
}
