/**
 * The alert webhook (config alertWebhook): told when a transaction keeps failing or needs an
 * operator, and when a condition of the whole coordinator starts or ends (health-watch.ts). The
 * body is documented in docs/operations.md#alerts; fields are only ever added.
 */
import type { Logger } from 'pino';
import type { Config } from '../../schemas/config.js';
import type { Metrics } from '../metrics.js';

/** About one transaction: retries past alertRetryLimit, or a saga in needs_attention. */
export interface TransactionAlert {
  kind: 'retries' | 'needs_attention';
  gid: string;
  trans_type: string;
  status: string;
  /** The branch id that keeps failing ('00' for a check-back). */
  branch: string;
  error: string;
  retry_count: number;
}

/** About the coordinator: sent when the condition begins (resolved: false) and, except `parked`, when it ends. */
export interface ConditionAlert {
  kind: 'stalled' | 'broker_down' | 'drain_lag' | 'parked';
  resolved: boolean;
  /** What it is about: "delivery", "kafka/orders", an outbox name. */
  subject: string;
  message: string;
}

export type Alert = TransactionAlert | ConditionAlert;

export interface AlertSender {
  readonly config: Pick<Config, 'alertWebhook'>;
  readonly logger: Logger;
  readonly nodeId: string;
  readonly metrics: Pick<Metrics, 'alerts'>;
}

/** Counts the alert and POSTs it, with this node and the time, to the webhook (fire and forget: an alert never holds up a pass). */
export function sendAlert(ctx: AlertSender, alert: Alert): void {
  ctx.metrics.alerts.inc({ kind: alert.kind });
  const { alertWebhook } = ctx.config;
  if (!alertWebhook) return;
  fetch(alertWebhook, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...alert, node: ctx.nodeId, time: new Date().toISOString() }),
    signal: AbortSignal.timeout(5_000),
  }).catch((err: unknown) => ctx.logger.warn({ err, kind: alert.kind }, 'alert webhook failed'));
}
