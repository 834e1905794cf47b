/** The alert webhook: told when a transaction keeps failing, or a saga needs an operator. */
import type { EngineContext } from './context.js';

export interface Alert {
  gid: string;
  status: string;
  /** The branch id that keeps failing ('00' for a check-back). */
  branch: string;
  error: string;
  retry_count: number;
}

/** POSTs the alert to the configured webhook (fire and forget: an alert never holds up a pass). */
export function sendAlert(ctx: EngineContext, alert: Alert): void {
  const { alertWebhook } = ctx.config;
  if (!alertWebhook) return;
  fetch(alertWebhook, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(alert),
    signal: AbortSignal.timeout(5_000),
  }).catch((err: unknown) => ctx.logger.warn({ err, gid: alert.gid }, 'alert webhook failed'));
}
