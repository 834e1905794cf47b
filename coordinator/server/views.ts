/** Store rows as DTM's query API shows them (snake_case, RFC 3339 times, payload in base64). */
import type { BranchView, TransactionView } from '../../schemas/dtm.js';
import type { TransBranchRow, TransGlobalRow } from '../../schemas/db/tables.js';

const time = (d: Date | null) => (d ? d.toISOString() : undefined);

export interface ViewOptions {
  /** Replace payloads and header values, which may carry personal data and credentials (docs/security.md). */
  redact?: boolean;
  /** The transaction came over gRPC: its branches' data is already the base64 of their bytes. */
  base64Data?: boolean;
}

/** What a caller without an operator token sees, when tokens are configured. */
export const redacted: ViewOptions = { redact: true };
const hidden = '[redacted]';

function shownOptions(options: TransGlobalRow['options'], { redact }: ViewOptions): string {
  const headers = options.branch_headers;
  if (!redact || headers === undefined) return JSON.stringify(options);
  return JSON.stringify({ ...options, branch_headers: Object.fromEntries(Object.keys(headers).map((k) => [k, hidden])) });
}

export function transactionView(t: TransGlobalRow, view: ViewOptions = {}): TransactionView {
  return {
    id: t.id,
    gid: t.gid,
    trans_type: t.transType,
    status: t.status,
    query_prepared: t.queryPrepared || undefined,
    protocol: t.protocol,
    create_time: t.createTime.toISOString(),
    update_time: t.updateTime.toISOString(),
    finish_time: time(t.finishTime),
    rollback_time: time(t.rollbackTime),
    options: shownOptions(t.options, view),
    custom_data: t.customData || undefined,
    rollback_reason: t.rollbackReason || undefined,
    attention_reason: t.attentionReason || undefined,
    result: t.result || undefined,
    next_cron_interval: t.nextCronInterval,
    next_cron_time: time(t.nextCronTime),
    owner: t.owner || undefined,
    retry_count: t.retryCount,
  };
}

export function branchView(b: TransBranchRow, view: ViewOptions = {}): BranchView {
  return {
    id: b.id,
    gid: b.gid,
    url: b.url,
    bin_data: view.redact ? '' : view.base64Data ? b.data : Buffer.from(b.data).toString('base64'),
    branch_id: b.branchId,
    op: b.op,
    status: b.status,
    create_time: b.createTime.toISOString(),
    update_time: b.updateTime.toISOString(),
    finish_time: time(b.finishTime),
    attempts: b.attempts,
    last_error: b.lastError ?? undefined,
    next_retry_time: b.status === 'prepared' ? time(b.retryAt) : undefined,
    result: b.result ?? undefined,
  };
}
