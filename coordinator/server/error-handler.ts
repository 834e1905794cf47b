/**
 * The one error handler: every failure becomes `{ code, message, field? }` with the status of its
 * code (schemas/errors.ts); 409 and 425 carry DTM's `dtm_result` so DTM's clients read them.
 */
import type { FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { ConcordError, isConcordError } from '../../schemas/errors.js';

export function handleError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const { status, body } = errorReply(error, request.log, transactionOf(request));
  return reply.status(status).send(body);
}

/** The status and body an error answers with (also each failed item of a batch); logs what the operator must see. */
export function errorReply(
  error: unknown,
  log: FastifyBaseLogger,
  transaction: { gid?: string; trans_type?: string } = {},
): { status: number; body: Record<string, string> } {
  const concord = toConcordError(error as FastifyError);
  if (concord.code === 'INTERNAL') log.error({ err: error, ...transaction }, 'request failed');
  else if (concord.code === 'STORE_UNAVAILABLE') log.warn({ err: error, ...transaction }, 'store unavailable');
  // The message always names the field, so a human reading only the message knows what to fix.
  const named = concord.field && !concord.message.includes(concord.field) ? `${concord.field}: ${concord.message}` : concord.message;
  const body: Record<string, string> = { code: concord.code, message: named };
  if (concord.field !== undefined) body.field = concord.field;
  if (concord.status === 409) body.dtm_result = 'FAILURE';
  if (concord.status === 425) body.dtm_result = 'ONGOING';
  return { status: concord.status, body };
}

function toConcordError(error: FastifyError): ConcordError {
  if (isConcordError(error)) return error;
  if (hasZodFastifySchemaValidationErrors(error)) {
    const issue = error.validation[0];
    const field = (issue?.instancePath ?? '').split('/').filter(Boolean).join('.');
    const where = error.validationContext === 'querystring' ? 'query parameter' : 'field';
    const message = field ? `${where} ${field}: ${issue?.message ?? 'invalid'}` : (issue?.message ?? 'invalid request');
    return new ConcordError('INVALID_REQUEST', message, field ? { field } : {});
  }
  if (isStoreOutage(error))
    return new ConcordError('STORE_UNAVAILABLE', 'the store cannot be reached; nothing was written', { cause: error });
  const status = error.statusCode ?? 500;
  if (status === 413) return new ConcordError('BODY_TOO_LARGE', 'the request body is larger than 4 MiB', { cause: error });
  if (status >= 400 && status < 500) return new ConcordError('INVALID_REQUEST', error.message, { cause: error });
  return new ConcordError('INTERNAL', 'internal error; see the coordinator log', { cause: error });
}

/** Connection-level failures of pg or PGlite: the request wrote nothing and may be retried. */
function isStoreOutage(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  const cause = (error as { cause?: unknown }).cause;
  return (
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', '57P01', '57P03', '08006', '08001', '08003'].includes(code) ||
    /Connection terminated|connection timeout/i.test((error as Error).message ?? '') ||
    (cause !== undefined && cause !== error && isStoreOutage(cause))
  );
}

/** The gid and trans_type a DTM request names (body or query), for the log line of its failure. */
function transactionOf(request: FastifyRequest): { gid?: string; trans_type?: string } {
  const found: { gid?: string; trans_type?: string } = {};
  for (const source of [request.query, request.body]) {
    if (typeof source !== 'object' || source === null) continue;
    const { gid, trans_type } = source as Record<string, unknown>;
    if (typeof gid === 'string') found.gid ??= gid;
    if (typeof trans_type === 'string') found.trans_type ??= trans_type;
  }
  return found;
}
