/** One round of retention: finished transactions past config retention go, counted in the metrics. */
import { deleteExpired, type Deleted } from '../store/retention.js';
import type { EngineContext } from './context.js';

/** Deletes one batch (config retentionBatch) of expired transactions with their branches. */
export async function deleteExpiredBatch(ctx: Pick<EngineContext, 'config' | 'database' | 'metrics'>): Promise<Deleted> {
  const { config, database, metrics } = ctx;
  const deleted = await deleteExpired(database, config.retention, config.retentionBatch);
  metrics.retentionDeleted.inc({ table: 'trans_global' }, deleted.transactions);
  metrics.retentionDeleted.inc({ table: 'trans_branch_op' }, deleted.branches);
  return deleted;
}
