/** Store rows as DTM's query API shows them (snake_case, RFC 3339 times, payload in base64). */
import type { BranchView, TransactionView } from '../../schemas/dtm.js';
import type { TransBranchRow, TransGlobalRow } from '../../schemas/db/tables.js';

const time = (d: Date | null) => (d ? d.toISOString() : undefined);

export function transactionView(t: TransGlobalRow): TransactionView {
  return {
    id: t.id,
    gid: t.gid,
    trans_type: t.transType,
    status: t.status as TransactionView['status'],
    query_prepared: t.queryPrepared || undefined,
    protocol: t.protocol,
    create_time: t.createTime.toISOString(),
    update_time: t.updateTime.toISOString(),
    finish_time: time(t.finishTime),
    rollback_time: time(t.rollbackTime),
    options: JSON.stringify(t.options),
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

export function branchView(b: TransBranchRow): BranchView {
  return {
    id: b.id,
    gid: b.gid,
    url: b.url,
    bin_data: Buffer.from(b.data).toString('base64'),
    branch_id: b.branchId,
    op: b.op,
    status: b.status as BranchView['status'],
    create_time: b.createTime.toISOString(),
    update_time: b.updateTime.toISOString(),
    finish_time: time(b.finishTime),
    attempts: b.attempts,
    last_error: b.lastError ?? undefined,
    result: b.result ?? undefined,
  };
}
