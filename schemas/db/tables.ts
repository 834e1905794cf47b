/**
 * The coordinator's store: the same tables on PGlite and Postgres. Change a table here, then run
 * `npm run generate` to write the next migration; committed migrations are never edited.
 * Columns follow DTM's trans_global / trans_branch_op so its tools feel at home.
 */
import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  index,
  integer,
  jsonb,
  pgSequence,
  pgTable,
  real,
  text,
  timestamp,
  uniqueIndex,
  varchar,
  type PgTable,
} from 'drizzle-orm/pg-core';
import { parkedMessageStates } from '../consumer-parked.js';
import { branchStatuses, globalStatuses } from '../dtm.js';

const time = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** Options a transaction keeps for later retries (the flattened DTM options that matter after submit). */
export interface StoredOptions {
  timeout_to_fail?: number;
  request_timeout?: number;
  retry_interval?: number;
  branch_headers?: Record<string, string>;
  concurrent?: boolean;
  delay?: number;
  /** Saga: step i (0-based) starts after the steps listed for it succeeded (implies concurrent). */
  orders?: Record<string, number[]>;
  /** Saga: DTM's retry_limit (an action runs at most retry_limit + 1 times). */
  retry_limit?: number;
}

/** What a broker branch carries besides its payload (from the step's "key" and "headers"). */
export interface BranchMeta {
  key?: string;
  headers?: Record<string, string>;
  /** Saga broker step: the command type the participant dispatches on. */
  command?: string;
  /** Saga step: seconds per call, or to wait for a broker step's reply. */
  timeout?: number;
  /** Saga step: runs before giving up (action: roll back; compensation: needs attention). */
  maxAttempts?: number;
  /** Saga step: first retry delay in seconds. */
  backoff?: number;
  /** Saga compensation: its attempts when an operator last redrove the saga (maxAttempts count from here). */
  redriveBase?: number;
}

export const transSubmitSeq = pgSequence('trans_submit_seq');

export const transGlobal = pgTable(
  'trans_global',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    gid: varchar('gid', { length: 128 }).notNull(),
    transType: varchar('trans_type', { length: 45 }).notNull(),
    status: varchar('status', { length: 45, enum: globalStatuses }).notNull(),
    queryPrepared: varchar('query_prepared', { length: 1024 }).notNull().default(''),
    protocol: varchar('protocol', { length: 45 }).notNull().default('http'),
    options: jsonb('options').$type<StoredOptions>().notNull().default({}),
    customData: varchar('custom_data', { length: 1024 }).notNull().default(''),
    /** sha256 of the steps and payloads: a re-sent prepare or submit must match it. */
    contentHash: varchar('content_hash', { length: 64 }).notNull(),
    /** Current retry delay in seconds; doubles per failure up to the configured cap. */
    nextCronInterval: real('next_cron_interval').notNull(),
    /** When the transaction is next due; while a node works on it, the end of that node's lease. */
    nextCronTime: time('next_cron_time'),
    /** The node holding the lease, '' when none. */
    owner: varchar('owner', { length: 128 }).notNull().default(''),
    retryCount: integer('retry_count').notNull().default(0),
    /** Order of submission, from trans_submit_seq: keyed broker messages are delivered in this order. */
    submitSeq: bigint('submit_seq', { mode: 'number' }),
    rollbackReason: text('rollback_reason').notNull().default(''),
    /** Why a saga needs an operator (status needs_attention): the compensation that keeps failing. */
    attentionReason: text('attention_reason').notNull().default(''),
    /** A saga step's reply arrived while a node held the lease: that node runs another pass at once. */
    poked: boolean('poked').notNull().default(false),
    result: text('result').notNull().default(''),
    createTime: time('create_time').notNull().defaultNow(),
    updateTime: time('update_time').notNull().defaultNow(),
    finishTime: time('finish_time'),
    rollbackTime: time('rollback_time'),
  },
  (t) => [
    uniqueIndex('trans_global_gid_uniq').on(t.gid),
    // The scheduler's scan: only unfinished rows, by due time.
    index('trans_global_due_idx')
      .on(t.nextCronTime)
      .where(sql`${t.status} in ('prepared', 'submitted', 'aborting')`),
    // GET /all: newest first (id desc) within a status, a type or a create_time range.
    index('trans_global_status_idx').on(t.status, t.id),
    index('trans_global_type_idx').on(t.transType, t.id),
    index('trans_global_create_idx').on(t.createTime),
    // Retention: finished rows by age (coordinator/store/retention.ts uses the same expression).
    index('trans_global_finished_idx')
      .on(sql`coalesce(${t.finishTime}, ${t.updateTime})`)
      .where(sql`${t.status} in ('succeed', 'failed')`),
  ],
);

export const transBranchOp = pgTable(
  'trans_branch_op',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    gid: varchar('gid', { length: 128 }).notNull(),
    url: varchar('url', { length: 1024 }).notNull(),
    /** The payload as sent (DTM calls it bin_data and returns it base64). */
    data: text('data').notNull().default(''),
    /** Per-branch delivery details: the broker message key and extra headers. */
    meta: jsonb('meta').$type<BranchMeta>().notNull().default({}),
    /** Destination and key of a keyed broker branch: such branches are delivered in submit order. */
    orderKey: text('order_key'),
    branchId: varchar('branch_id', { length: 128 }).notNull(),
    op: varchar('op', { length: 45 }).notNull(),
    status: varchar('status', { length: 45, enum: branchStatuses }).notNull(),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    /** What the branch answered on success (a saga participant's reply result). */
    result: text('result'),
    /** Saga broker step: its command is out and the reply is expected by then. */
    replyDue: time('reply_due'),
    /** Saga step: failed, and is run again at this time (or given up on, by its policy). */
    retryAt: time('retry_at'),
    createTime: time('create_time').notNull().defaultNow(),
    updateTime: time('update_time').notNull().defaultNow(),
    finishTime: time('finish_time'),
    rollbackTime: time('rollback_time'),
  },
  (t) => [
    uniqueIndex('trans_branch_op_uniq').on(t.gid, t.branchId, t.op),
    // The ordering check: pending branches of one destination and key.
    index('trans_branch_op_order_idx')
      .on(t.orderKey)
      .where(sql`${t.orderKey} is not null and ${t.status} = 'prepared'`),
  ],
);

export type TransGlobalRow = typeof transGlobal.$inferSelect;
export type TransBranchRow = typeof transBranchOp.$inferSelect;

/**
 * A table's row as raw SQL returns it: keyed by column name (trans_type, not transType), typed as
 * drizzle infers each column. The engine's hot paths select with the `sql` tag and read these.
 */
export type SqlRow<T extends PgTable> = {
  [K in keyof T['_']['columns'] as T['_']['columns'][K]['_']['name']]: T['$inferSelect'][K & keyof T['$inferSelect']];
};
export type TransGlobalSqlRow = SqlRow<typeof transGlobal>;
export type TransBranchSqlRow = SqlRow<typeof transBranchOp>;

/** One subscriber of a topic: where messages sent to topic://<name> go. */
export interface Subscriber {
  url: string;
  remark: string;
}

/** DTM's key-value table; category "topics" maps a topic name to its subscribers. */
export const kv = pgTable(
  'kv',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    cat: varchar('cat', { length: 45 }).notNull(),
    k: varchar('k', { length: 128 }).notNull(),
    v: jsonb('v').$type<Subscriber[]>().notNull(),
    version: bigint('version', { mode: 'number' }).notNull().default(1),
    createTime: time('create_time').notNull().defaultNow(),
    updateTime: time('update_time').notNull().defaultNow(),
  },
  (t) => [uniqueIndex('kv_cat_k_uniq').on(t.cat, t.k)],
);

/**
 * The migrations applied to this store, each with its mark from schemas/db/migrations/marks.json.
 * A node that finds migrations it does not know refuses to start only if one of them is breaking,
 * so old and new nodes run side by side through a rolling deploy of compatible changes.
 */
export const concordMigrations = pgTable('concord_migrations', {
  tag: varchar('tag', { length: 128 }).primaryKey(),
  breaking: boolean('breaking').notNull(),
  appliedBy: varchar('applied_by', { length: 64 }).notNull(),
  appliedAt: time('applied_at').notNull().defaultNow(),
});

/** What an operator action was done on: a transaction (subject: its gid), an outbox (its name), a parked consumer message (consumer/message id). */
export const operatorSubjects = ['transaction', 'outbox', 'consumer-message'] as const;
export type OperatorSubject = (typeof operatorSubjects)[number];

/** Who did which operator action (admin UI and API) on what, when and why: the history the admin UI shows. */
export const operatorActions = pgTable(
  'operator_actions',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    subjectKind: varchar('subject_kind', { length: 45, enum: operatorSubjects }).notNull(),
    subject: varchar('subject', { length: 1024 }).notNull(),
    /** redrive, retry-now, force-stop, outbox-redrive, consumer-redrive. */
    action: varchar('action', { length: 45 }).notNull(),
    /** The operator token's name (config operatorTokens). */
    operator: varchar('operator', { length: 64 }).notNull(),
    /** The reason given (force-stop), or what came of it (an outbox redrive's counts). */
    detail: text('detail').notNull().default(''),
    at: time('at').notNull().defaultNow(),
  },
  (t) => [index('operator_actions_subject_idx').on(t.subjectKind, t.subject, t.id)],
);

/**
 * Messages the consumer SDK parked in the service's own database (its concord_parked table), as
 * each consumer reports them (docs/consumers.md#parked-messages-in-the-admin-ui). The payload stays
 * in the service; the coordinator keeps what an operator needs to decide, and the redrive request.
 */
export const parkedMessages = pgTable(
  'parked_messages',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    consumer: varchar('consumer', { length: 200 }).notNull(),
    messageId: varchar('message_id', { length: 512 }).notNull(),
    /** Where it came from: kafka:<topic>/<partition>/<offset> or rabbitmq:<queue>. */
    source: varchar('source', { length: 1024 }).notNull(),
    error: text('error').notNull(),
    attempts: integer('attempts').notNull(),
    /** The consumer's clock (its database's), as are last_failure and listed_at. */
    firstFailure: time('first_failure').notNull(),
    lastFailure: time('last_failure').notNull(),
    state: varchar('state', { length: 20, enum: parkedMessageStates }).notNull().default('parked'),
    /** The operator who asked for the last redrive, and when (the coordinator's clock). */
    redriveBy: varchar('redrive_by', { length: 64 }),
    redriveAt: time('redrive_at'),
    /** When the consumer listed its parked store for the report that last changed this row: an older report changes nothing. */
    listedAt: time('listed_at').notNull(),
    /** When a report first missed it (state redriven or cleared). */
    resolvedAt: time('resolved_at'),
    reportedAt: time('reported_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('parked_messages_uniq').on(t.consumer, t.messageId),
    // The admin UI's list: newest first, within a state.
    index('parked_messages_state_idx').on(t.state, t.id),
  ],
);
