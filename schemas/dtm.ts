/**
 * DTM's HTTP wire formats (see docs/protocol.md). DTM's clients send nulls for unset fields and
 * extra keys we do not use; both are accepted. Types derive from these schemas.
 */
import { z } from 'zod';
import { maxCallSeconds, maxDurationSeconds } from './durations.js';
import { checkTransRequest } from './trans-checks.js';

/** DTM treats JSON null as "unset"; so do we. */
const optional = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === null ? undefined : v), schema.optional());

const seconds = (what: string, max = maxDurationSeconds) => optional(z.number().int().min(0).max(max).describe(what));
const count = (what: string) => optional(z.number().int().min(0).max(1_000_000).describe(what));

export const transTypes = ['msg', 'saga', 'tcc', 'xa', 'workflow'] as const;
export const transTypeSchema = z.enum(transTypes);
export type TransType = z.infer<typeof transTypeSchema>;

/** DTM's statuses, and needs_attention: a saga whose compensation kept failing, waiting for an operator's redrive. */
export const globalStatuses = ['prepared', 'submitted', 'aborting', 'succeed', 'failed', 'needs_attention'] as const;
export type GlobalStatus = (typeof globalStatuses)[number];
/** A transaction in one of these has work left: the scheduler claims it when due. */
export const unfinishedStatuses = ['prepared', 'submitted', 'aborting'] as const satisfies readonly GlobalStatus[];
export type UnfinishedStatus = (typeof unfinishedStatuses)[number];
/** How a transaction ends (a saga may also stop at needs_attention). */
export type FinalStatus = Extract<GlobalStatus, 'succeed' | 'failed'>;
export const branchStatuses = ['prepared', 'succeed', 'failed'] as const;
export type BranchStatus = (typeof branchStatuses)[number];

export const gidSchema = z
  .string()
  .min(1, 'gid must not be empty')
  .max(128, 'gid is longer than 128 characters')
  .regex(/^[^\s;]+$/, 'gid must not contain whitespace or ";"')
  .describe('Global transaction id, unique per transaction (GET /newGid makes one).');

/** Options that DTM flattens into the transaction body. */
export const transOptionsShape = {
  wait_result: optional(z.boolean().describe('Answer submit only after the branches ran.')),
  timeout_to_fail: seconds('A prepared message older than this is checked back (seconds; default from config).'),
  request_timeout: seconds('Timeout of each branch call (seconds; default from config).', maxCallSeconds),
  retry_interval: seconds('Base retry interval (seconds; default from config).'),
  branch_headers: optional(
    z.record(z.string(), z.string()).describe('Headers added to every branch call (no hop-by-hop or framing headers, Latin-1 values).'),
  ),
  concurrent: optional(z.boolean().describe('Call the branches of a message in parallel.')),
  retry_limit: count('Saga: runs of an action after its first before the saga rolls back.'),
  retry_count: count('Saga: ignored (DTM keeps it in memory).'),
  passthrough_headers: optional(z.array(z.string()).describe('Ignored, as by DTM since 1.16.')),
};

/** Body of POST prepare / submit / abort. */
export const transRequestSchema = z
  .object({
    gid: gidSchema,
    trans_type: transTypeSchema,
    steps: optional(z.array(z.record(z.string(), z.string())).max(1000).describe('One object per step: msg {"action": url}.')),
    payloads: optional(z.array(z.string()).max(1000).describe('One raw request body per step.')),
    query_prepared: optional(
      z
        .string()
        .max(1024)
        .describe('Check-back URL of a two-phase message: http:// or https://, or gRPC host:port/package.Service/Method.'),
    ),
    custom_data: optional(z.string().max(1024).describe('JSON text; msg: {"delay": seconds}.')),
    protocol: optional(z.string().describe('"" or "http"; JSON-RPC is not served, and gRPC clients use the gRPC API (docs/grpc.md).')),
    rollback_reason: optional(z.string().max(1024)),
    req_extra: optional(z.record(z.string(), z.string()).describe('Workflow submit: status, rollback_reason and result (base64).')),
    ...transOptionsShape,
  })
  .superRefine((req, ctx) => {
    const steps = req.steps ?? [];
    const payloads = req.payloads ?? [];
    if (payloads.length > 0 && payloads.length !== steps.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['payloads'],
        message: `payloads has ${payloads.length} entries but steps has ${steps.length}; give one payload per step`,
      });
    }
    if (req.protocol !== undefined && req.protocol !== '' && req.protocol !== 'http') {
      ctx.addIssue({
        code: 'custom',
        path: ['protocol'],
        message: `protocol "${req.protocol}" is not served over HTTP; use http (DTM's gRPC clients use the gRPC API, docs/grpc.md)`,
      });
    }
    checkTransRequest(req, (path, message) => ctx.addIssue({ code: 'custom', path, message }));
  })
  // `example`, not `examples`: zod drops examples from the input schema of fields it preprocesses.
  .meta({
    example: {
      gid: 'transfer-7f3a',
      trans_type: 'msg',
      steps: [{ action: 'http://localhost:8081/api/busi/TransIn' }],
      payloads: ['{"amount":30}'],
      query_prepared: 'http://localhost:8081/api/busi/QueryPrepared',
    },
  });
export type TransRequest = z.infer<typeof transRequestSchema>;

export const gidQuerySchema = z.object({ gid: gidSchema });
export const gidBodySchema = z.object({ gid: gidSchema });

const topicName = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[^\s/]+$/, 'topic must not contain whitespace or "/"');
export const subscribeQuerySchema = z.object({
  topic: topicName,
  url: z
    .string()
    .min(1)
    .max(1024)
    .describe('http(s)://…, kafka://<connection>/<topic> or rabbitmq://<connection>/<exchange>/<routing key>'),
  remark: optional(z.string().max(256)),
});
export const unsubscribeQuerySchema = z.object({ topic: topicName, url: z.string().min(1).max(1024) });
export const topicParamsSchema = z.object({ topicName });

/** The last millisecond of year 9999: later ones overflow a Date (year 275760) or Postgres's ISO dates. */
const maxEpochMs = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

export const allQuerySchema = z.object({
  gid: optional(gidSchema),
  gidPrefix: optional(z.string().min(1).max(128).describe('Concord: only gids that start with this.')),
  destination: optional(
    z
      .string()
      .min(1)
      .max(1000)
      .describe('Concord: only transactions with a branch whose URL starts with this (http://billing, kafka://main/orders).'),
  ),
  position: optional(z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).describe('Return rows with id below this (paging).')),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  status: optional(z.enum(globalStatuses)),
  transType: optional(transTypeSchema),
  createTimeStart: optional(z.coerce.number().int().min(0).max(maxEpochMs).describe('Epoch milliseconds.')),
  createTimeEnd: optional(z.coerce.number().int().min(0).max(maxEpochMs).describe('Epoch milliseconds.')),
});

export const dtmResultSchema = z.object({ dtm_result: z.literal('SUCCESS') });
export const newGidReplySchema = z.object({ gid: z.string(), dtm_result: z.literal('SUCCESS') });

export const transactionViewSchema = z.object({
  id: z.number(),
  gid: z.string(),
  trans_type: z.string(),
  status: z.enum(globalStatuses),
  query_prepared: z.string().optional(),
  protocol: z.string(),
  create_time: z.string(),
  update_time: z.string(),
  finish_time: z.string().optional(),
  rollback_time: z.string().optional(),
  options: z.string(),
  custom_data: z.string().optional(),
  rollback_reason: z.string().optional(),
  attention_reason: z.string().optional().describe('needs_attention: the compensation that keeps failing, and why.'),
  result: z.string().optional(),
  next_cron_interval: z.number(),
  next_cron_time: z.string().optional(),
  owner: z.string().optional(),
  retry_count: z.number(),
});
export type TransactionView = z.infer<typeof transactionViewSchema>;

export const branchViewSchema = z.object({
  id: z.number(),
  gid: z.string(),
  url: z.string(),
  bin_data: z.string().describe('Base64 of the payload, as DTM returns it.'),
  branch_id: z.string(),
  op: z.string(),
  status: z.enum(branchStatuses),
  create_time: z.string(),
  update_time: z.string(),
  finish_time: z.string().optional(),
  attempts: z.number().describe('Calls made to this branch so far.'),
  last_error: z.string().optional().describe('Why the last call did not succeed.'),
  next_retry_time: z.string().optional().describe('Saga step: when the branch is called again after a failed call (its backoff).'),
  result: z.string().optional().describe("Saga broker step: the participant's result."),
});
export type BranchView = z.infer<typeof branchViewSchema>;

export const queryReplySchema = z.object({
  transaction: transactionViewSchema.nullable(),
  branches: z.array(branchViewSchema),
});

export const allReplySchema = z.object({
  transactions: z.array(transactionViewSchema).nullable(),
  next_position: z.string(),
});

export const errorReplySchema = z.object({
  code: z.string(),
  message: z.string(),
  field: z.string().optional(),
  dtm_result: z.enum(['FAILURE', 'ONGOING']).optional(),
});

/** Any JSON object: prepareWorkflow validates it itself, so that every error reaches DTM's client as a failed workflow. */
export const workflowBodySchema = z.looseObject({});

/** Query parameters DTM adds to every call of a branch or check-back URL. */
export const branchCallQuerySchema = z.object({
  gid: gidSchema,
  trans_type: transTypeSchema,
  branch_id: z.string().min(1).max(128),
  op: z.string().min(1).max(45),
});
export type BranchCallQuery = z.infer<typeof branchCallQuerySchema>;

export type DtmOutcome = 'SUCCESS' | 'FAILURE' | 'ONGOING' | 'ERROR';

/**
 * How DTM reads the answer of a branch or check-back call, in DTM's order: 425 or a body with
 * ONGOING, then 409 or a body with FAILURE, then anything but exactly 200 is an error to retry.
 */
export function classifyDtmAnswer(status: number, body: string): DtmOutcome {
  if (status === 425 || body.includes('ONGOING')) return 'ONGOING';
  if (status === 409 || body.includes('FAILURE')) return 'FAILURE';
  return status === 200 ? 'SUCCESS' : 'ERROR';
}

/** The gRPC status codes DTM gives meaning to (google.rpc.Code numbers). */
export const grpcCodes = { ok: 0, failedPrecondition: 9, aborted: 10 } as const;

/**
 * How DTM reads a gRPC branch's status: OK, Aborted is FAILURE (or ONGOING when its message is
 * exactly "ONGOING", as DTM before 1.10 answered), FailedPrecondition is ONGOING, anything else
 * (Unavailable, Internal, a deadline…) an error to retry.
 */
export function classifyGrpcStatus(code: number, message: string): DtmOutcome {
  if (code === grpcCodes.ok) return 'SUCCESS';
  if (code === grpcCodes.aborted) return message === 'ONGOING' ? 'ONGOING' : 'FAILURE';
  return code === grpcCodes.failedPrecondition ? 'ONGOING' : 'ERROR';
}
