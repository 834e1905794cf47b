/** Prometheus metrics of one coordinator, served at /api/metrics. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'concord_' });
  const seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
  return {
    registry,
    requests: new Counter({
      name: 'concord_http_requests_total',
      help: 'API requests by route and status code.',
      labelNames: ['route', 'status'] as const,
      registers: [registry],
    }),
    requestSeconds: new Histogram({
      name: 'concord_http_request_seconds',
      help: 'API request duration.',
      labelNames: ['route'] as const,
      buckets: seconds,
      registers: [registry],
    }),
    transactions: new Counter({
      name: 'concord_transactions_finished_total',
      help: 'Transactions that reached a final status.',
      labelNames: ['trans_type', 'status'] as const,
      registers: [registry],
    }),
    branchCalls: new Counter({
      name: 'concord_branch_calls_total',
      help: 'Branch and check-back calls by outcome (SUCCESS, FAILURE, ONGOING, ERROR).',
      labelNames: ['op', 'outcome'] as const,
      registers: [registry],
    }),
    branchSeconds: new Histogram({
      name: 'concord_branch_call_seconds',
      help: 'Branch call duration.',
      labelNames: ['op'] as const,
      buckets: seconds,
      registers: [registry],
    }),
    batchSize: new Histogram({
      name: 'concord_store_batch_size',
      help: 'Requests written per store transaction (group commit).',
      labelNames: ['kind'] as const,
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers: [registry],
    }),
    batchSeconds: new Histogram({
      name: 'concord_store_batch_seconds',
      help: 'Duration of one group-commit store transaction.',
      labelNames: ['kind'] as const,
      buckets: seconds,
      registers: [registry],
    }),
    sagaReplies: new Counter({
      name: 'concord_saga_replies_total',
      help: 'Saga participant replies read, by outcome; recorded="false" for duplicates and stale attempts.',
      labelNames: ['outcome', 'recorded'] as const,
      registers: [registry],
    }),
    retentionDeleted: new Counter({
      name: 'concord_retention_deleted_total',
      help: 'Rows of finished transactions deleted by retention, by table (trans_global, trans_branch_op).',
      labelNames: ['table'] as const,
      registers: [registry],
    }),
    claimed: new Counter({
      name: 'concord_scheduler_claimed_total',
      help: 'Due transactions claimed by this node for retry or check-back.',
      registers: [registry],
    }),
    outboxPublished: new Counter({
      name: 'concord_outbox_published_total',
      help: 'Outbox rows this node published, by outbox (config outboxes).',
      labelNames: ['outbox'] as const,
      registers: [registry],
    }),
    outboxParked: new Counter({
      name: 'concord_outbox_parked_total',
      help: 'Outbox rows this node parked (undeliverable as they are), by outbox.',
      labelNames: ['outbox'] as const,
      registers: [registry],
    }),
    outboxLag: new Gauge({
      name: 'concord_outbox_lag_seconds',
      help: 'Age of the oldest pending row of each outbox (0 when none is pending; needs createdAtColumn).',
      labelNames: ['outbox'] as const,
      registers: [registry],
    }),
    outboxSlotRetained: new Gauge({
      name: 'concord_outbox_slot_retained_bytes',
      help: 'WAL kept on disk by the replication slot of each outbox (read=logical, or a slot left behind by it: drop it with concord outbox drop-slot).',
      labelNames: ['outbox'] as const,
      registers: [registry],
    }),
    outboxPartitionsHeld: new Gauge({
      name: 'concord_outbox_partitions_held',
      help: 'Parts of each outbox this node drains now.',
      labelNames: ['outbox'] as const,
      registers: [registry],
    }),
    dueOverdue: new Gauge({
      name: 'concord_due_overdue_seconds',
      help: 'Seconds the longest-waiting due transaction has waited past its due time without a coordinator claiming it (0: none).',
      registers: [registry],
    }),
    oldestFailing: new Gauge({
      name: 'concord_oldest_failing_seconds',
      help: 'Age of the oldest unfinished transaction whose last branch call or check-back failed (0: none).',
      registers: [registry],
    }),
    brokerUp: new Gauge({
      name: 'concord_broker_connection_up',
      help: 'Broker connections this node has opened: 1 up, 0 down (until it reconnects; tried every 5 s).',
      labelNames: ['kind', 'connection'] as const,
      registers: [registry],
    }),
    ready: new Gauge({
      name: 'concord_ready',
      help: '1 when readiness (/api/health) passes on this node, 0 when not.',
      registers: [registry],
    }),
    alerts: new Counter({
      name: 'concord_alerts_total',
      help: 'Alerts raised on this node, by kind (and POSTed to alertWebhook when it is set).',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
