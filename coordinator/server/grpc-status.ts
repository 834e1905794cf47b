/**
 * Errors as gRPC statuses, the way DTM's gRPC clients read them: Aborted is FAILURE (HTTP 409),
 * FailedPrecondition is ONGOING (HTTP 425). The code and message come from the one error mapping
 * (error-handler.ts); trailing metadata repeats Concord's code and the field.
 */
import { Metadata, status, type StatusObject } from '@grpc/grpc-js';
import type { FastifyBaseLogger } from 'fastify';
import { ConcordError, isConcordError } from '../../schemas/errors.js';
import { errorReply } from './error-handler.js';
import { grpcField } from './grpc-requests.js';

const byHttpStatus: Record<number, status> = {
  400: status.INVALID_ARGUMENT,
  401: status.UNAUTHENTICATED,
  403: status.PERMISSION_DENIED,
  404: status.NOT_FOUND,
  409: status.ABORTED,
  413: status.RESOURCE_EXHAUSTED,
  425: status.FAILED_PRECONDITION,
  503: status.UNAVAILABLE,
};

export function grpcStatusOf(
  error: unknown,
  log: FastifyBaseLogger,
  transaction: { gid?: string; trans_type?: string },
): Omit<StatusObject, 'metadata'> & { metadata: Metadata } {
  // The engine names HTTP fields (trans_type): a gRPC caller reads TransType.
  const named =
    isConcordError(error) && error.field !== undefined
      ? new ConcordError(error.code, error.message, { field: grpcField(error.field), cause: error })
      : error;
  const { status: httpStatus, body } = errorReply(named, log, transaction);
  const metadata = new Metadata();
  if (body.code) metadata.set('concord-code', body.code);
  if (body.field) metadata.set('concord-field', body.field);
  return { code: byHttpStatus[httpStatus] ?? status.INTERNAL, details: body.message ?? 'internal error', metadata };
}
