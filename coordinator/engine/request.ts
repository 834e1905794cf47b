/** What the requests of every type share: stored options, content hash, conflict check and per-step broker details. */
import { createHash } from 'node:crypto';
import type { TransRequest } from '../../schemas/dtm.js';
import type { BranchMeta, StoredOptions } from '../../schemas/db/tables.js';
import { ConcordError } from '../../schemas/errors.js';
import { parseStepHeaders } from '../../schemas/trans-checks.js';
import type { NewTransaction, TransRow } from '../store/transactions.js';

/**
 * The options a transaction keeps for later passes: those every type has (DTM sends 0 for unset),
 * then the type's own; unset keys are dropped, as the JSON column would drop them.
 */
export function storedOptions(req: TransRequest, own: StoredOptions = {}): StoredOptions {
  const options: StoredOptions = {
    timeout_to_fail: req.timeout_to_fail || undefined,
    request_timeout: req.request_timeout || undefined,
    retry_interval: req.retry_interval || undefined,
    branch_headers: req.branch_headers,
    ...own,
  };
  return JSON.parse(JSON.stringify(options)) as StoredOptions;
}

/** How the transaction came: 'grpc' through the gRPC API (its payloads are then base64, see server/grpc-requests.ts), else 'http'. */
export function protocolOf(req: TransRequest): string {
  return req.protocol === 'grpc' ? 'grpc' : 'http';
}

/** A re-sent request must describe the same transaction; without steps it only names the gid. */
export function conflictOf(row: TransRow, trans: NewTransaction, compareSteps: boolean): ConcordError | undefined {
  if (row.trans_type !== trans.transType) {
    return new ConcordError('GID_CONFLICT', `gid ${trans.gid} is a ${row.trans_type} transaction, not ${trans.transType}`, {
      field: 'trans_type',
    });
  }
  if (compareSteps && row.content_hash !== trans.contentHash) {
    return new ConcordError('GID_CONFLICT', `gid ${trans.gid} already exists with other steps or payloads`, { field: 'steps' });
  }
  return undefined;
}

export function contentHash(req: TransRequest): string {
  const steps = (req.steps ?? []).map((step, i) => [step, req.payloads?.[i] ?? step.data ?? '']);
  return createHash('sha256')
    .update(JSON.stringify([req.trans_type, steps]))
    .digest('hex');
}

/** A step's "key" (the broker message key) and "headers" (JSON text of a string map, checked by transRequestSchema). */
export function branchMeta(step: Record<string, string>): BranchMeta {
  const meta: BranchMeta = {};
  if (step.key !== undefined) meta.key = step.key;
  const headers = step.headers ? parseStepHeaders(step.headers) : undefined;
  if (headers) meta.headers = headers;
  return meta;
}
