/**
 * Every error code Concord answers with, its HTTP status and its meaning. Codes are stable:
 * never rename one. docs/errors.md lists the same table; a test keeps the two in step.
 *
 * 409 and 425 keep DTM's meanings (FAILURE and ONGOING) and are used for nothing else.
 */
export const errorCodes = {
  INVALID_REQUEST: { status: 400, meaning: 'A field is missing or malformed; `field` names it.' },
  UNSUPPORTED: { status: 400, meaning: 'The request asks for something this coordinator does not do (yet); `field` names it.' },
  UNAUTHORIZED: { status: 401, meaning: 'Tokens are configured and the request carries none, or an unknown one (docs/security.md).' },
  FORBIDDEN: { status: 403, meaning: 'The route is an operator action and the token presented is an API token.' },
  NOT_FOUND: { status: 404, meaning: 'No transaction has this gid.' },
  ROUTE_NOT_FOUND: { status: 404, meaning: 'No route has this path.' },
  METHOD_NOT_ALLOWED: {
    status: 405,
    meaning:
      'The path exists for other methods (the `Allow` header lists them), or, with tokens set, the route changes state and takes POST, PUT or DELETE only.',
  },
  UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    meaning: 'With tokens set, a request that changes state must send Content-Type: application/json.',
  },
  GID_CONFLICT: {
    status: 409,
    meaning: 'The gid exists with different content (steps, payloads or type): a second transaction reused the gid.',
  },
  BODY_TOO_LARGE: { status: 413, meaning: 'The request body is larger than the coordinator accepts (4 MiB).' },
  INVALID_STATE: { status: 409, meaning: 'The transaction is in a status that does not allow the operation (DTM FAILURE).' },
  TRANSACTION_FAILED: { status: 409, meaning: 'wait_result: the transaction ended failed (DTM FAILURE).' },
  TRANSACTION_ONGOING: {
    status: 425,
    meaning: 'wait_result: the transaction is not finished yet; the coordinator keeps retrying it (DTM ONGOING).',
  },
  CONTENDED: {
    status: 503,
    meaning: 'Other requests on the same gid kept changing it while this one was written; nothing was decided: send it again.',
  },
  SHUTTING_DOWN: { status: 503, meaning: 'The coordinator is draining before it exits; retry on another node.' },
  STORE_UNAVAILABLE: { status: 503, meaning: 'The store cannot be reached; nothing was written.' },
  OUTBOX_NOT_FOUND: { status: 404, meaning: 'No outbox of this name is configured (config outboxes).' },
  PARKED_MESSAGE_NOT_FOUND: { status: 404, meaning: 'No consumer reported a parked message of this consumer and id.' },
  NOT_READY: {
    status: 503,
    meaning:
      'Readiness: delivery stalled past stalledAfter, a broker connection is down, or an outbox drain lags past its lagThreshold or cannot run; the message lists each reason.',
  },
  INTERNAL: { status: 500, meaning: 'An unexpected error; the stack is in the coordinator log, never in the reply.' },
} as const satisfies Record<string, { status: number; meaning: string }>;

export type ErrorCode = keyof typeof errorCodes;

const marker = Symbol.for('concord.error');

export interface ConcordErrorOptions {
  /** The request field the error is about, as a dotted path (`steps.0.action`). */
  field?: string;
  cause?: unknown;
}

/** The one error type the coordinator throws on purpose; the HTTP layer maps `code` to a status. */
export class ConcordError extends Error {
  readonly [marker] = true;
  readonly code: ErrorCode;
  readonly status: number;
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, options: ConcordErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = 'ConcordError';
    this.code = code;
    this.status = errorCodes[code].status;
    this.field = options.field;
  }
}

/** True for a ConcordError, also one made by another copy of this package. */
export function isConcordError(value: unknown): value is ConcordError {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
}
