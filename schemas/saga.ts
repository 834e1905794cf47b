/**
 * Saga formats beyond DTM's: the per-step policy keys, the concurrent layout in custom_data, and
 * the command / reply messages of steps that travel on Kafka or RabbitMQ (docs/sagas.md).
 *
 * A saga step is DTM's string map: {"action": url, "compensate": url}. A URL may be http(s)://,
 * kafka://<connection>/<topic> or rabbitmq://<connection>/<exchange>/<routing key>. Extra keys,
 * all optional and all strings (DTM's clients carry only strings):
 *   command, compensate_command   command type of a broker step's action / compensation
 *                                  (default "action" / "compensate")
 *   timeout                        seconds one call may take; for a broker step, seconds to wait
 *                                  for its reply
 *   attempts                       runs of the action before the saga rolls back (default: no
 *                                  limit, as DTM; retry_limit + 1 when the saga sets retry_limit)
 *   compensate_attempts            runs of the compensation before the saga needs attention
 *                                  (default: the coordinator's compensateAttempts)
 *   backoff                        first retry delay in seconds; doubles per failure up to the
 *                                  coordinator's maxRetryInterval, with jitter
 *   key, headers                   broker message key and extra headers (JSON text), as for msg
 */
import { z } from 'zod';
import { maxCallSeconds, maxDurationSeconds } from './durations.js';
import { textProblem } from './text.js';
import { brokerHeaders } from './broker-messages.js';

const number = (min: number, max: number) => z.coerce.number().min(min).max(max);

/** The policy keys of a step, parsed from their string form. */
export const sagaStepPolicySchema = z.object({
  command: z.string().min(1).max(128).optional(),
  compensate_command: z.string().min(1).max(128).optional(),
  timeout: number(0.01, maxCallSeconds).optional(),
  attempts: z.coerce.number().int().min(1).max(1_000_000).optional(),
  compensate_attempts: z.coerce.number().int().min(1).max(1_000_000).optional(),
  backoff: number(0.01, maxDurationSeconds).optional(),
});
export type SagaStepPolicy = z.infer<typeof sagaStepPolicySchema>;

/**
 * custom_data of a saga: DTM's {"concurrent": true, "orders": {"2": [0, 1]}}: step 2 (0-based)
 * starts only after steps 0 and 1 succeeded; without orders every action starts at once.
 */
export const sagaCustomDataSchema = z.object({
  concurrent: z.boolean().optional(),
  orders: z.record(z.string().regex(/^\d+$/, 'orders keys are step indexes'), z.array(z.number().int().min(0))).optional(),
});
export type SagaCustomData = z.infer<typeof sagaCustomDataSchema>;

/** Headers of a command message (besides content-type, dtm-gid, dtm-branch-id, dtm-trans-type). */
export const commandHeaders = {
  /** `gid/branch_id/op`: the same for every attempt of one step's action (or compensation). */
  messageId: brokerHeaders.messageId,
  op: brokerHeaders.op,
  /** The command type a participant dispatches on. */
  command: 'concord-command',
  /** 1 for the first publication, then 2, 3… on retries; the reply must carry it back. */
  attempt: 'concord-attempt',
  /** Where to reply: a Kafka topic on the same cluster, or a RabbitMQ queue on the same broker. */
  replyTo: 'concord-reply-to',
} as const;

/** A reply naming its branch with NUL (which Postgres text refuses) would be redelivered forever; it is dropped. */
const identifier = z
  .string()
  .min(1)
  .max(128)
  .refine((s) => textProblem(s) === undefined, 'must not contain NUL or a lone surrogate');

export const replyOutcomes = ['SUCCESS', 'FAILURE', 'ERROR'] as const;

/**
 * A participant's answer to a command, JSON in the reply message's body. SUCCESS: done (or done
 * before: a duplicate). FAILURE: a business refusal; an action's FAILURE rolls the saga back.
 * ERROR: the handler failed for another reason; the step's retry policy applies.
 */
export const sagaReplySchema = z.object({
  gid: identifier,
  branch_id: identifier,
  op: z.enum(['action', 'compensate']),
  attempt: z.number().int().min(1),
  outcome: z.enum(replyOutcomes),
  /** The handler's result (JSON text), shown as the branch's result in the query API. */
  result: z.string().max(65_536).optional(),
  /** Why it did not succeed. */
  error: z.string().max(4096).optional(),
});
export type SagaReply = z.infer<typeof sagaReplySchema>;
