/**
 * An error of prepareWorkflow in the form DTM's workflow client reads: it parses `transaction`
 * and `progresses` whatever the HTTP status, and turns a failed transaction into an error carrying
 * rollback_reason; without a transaction it would crash on the reply.
 */
import type { z } from 'zod';
import { isConcordError } from '../../schemas/errors.js';
import type { workflowRefusalSchema } from '../../schemas/workflow.js';

const statuses = [400, 404, 409, 503] as const;
type RefusalStatus = (typeof statuses)[number];

export function workflowRefusal(
  err: unknown,
  gid: unknown,
): { status: RefusalStatus; body: z.infer<typeof workflowRefusalSchema> } | undefined {
  if (!isConcordError(err)) return undefined;
  const status = statuses.find((s) => s === err.status);
  if (status === undefined) return undefined;
  return {
    status,
    body: {
      code: err.code,
      message: err.message,
      ...(err.field === undefined ? {} : { field: err.field }),
      dtm_result: 'FAILURE',
      transaction: { gid: typeof gid === 'string' ? gid.slice(0, 128) : '', status: 'failed', rollback_reason: err.message, result: '' },
      progresses: [],
    },
  };
}
