/**
 * What a branch handler throws to answer the coordinator. BranchFailure is final (DTM FAILURE,
 * HTTP 409: roll back or compensate); BranchOngoing asks to be called again later (DTM ONGOING,
 * HTTP 425). Any other error is retried with backoff. Checks use Symbol.for markers, so they hold
 * across duplicate copies of the SDK.
 */
import { isConcordError } from '../schemas/errors.js';

const failureMark = Symbol.for('concord.branch-failure');
const ongoingMark = Symbol.for('concord.branch-ongoing');

export class BranchFailure extends Error {
  readonly [failureMark] = true;
  constructor(message = 'FAILURE', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BranchFailure';
  }
}

export class BranchOngoing extends Error {
  readonly [ongoingMark] = true;
  constructor(message = 'ONGOING', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BranchOngoing';
  }
}

export function isBranchFailure(value: unknown): value is BranchFailure {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[failureMark] === true;
}

export function isBranchOngoing(value: unknown): value is BranchOngoing {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[ongoingMark] === true;
}

/** The HTTP answer DTM expects for a handler's outcome. */
export function dtmAnswer(error?: unknown): { status: number; body: Record<string, string> } {
  if (error === undefined) return { status: 200, body: { dtm_result: 'SUCCESS' } };
  if (isBranchFailure(error)) return { status: 409, body: { dtm_result: 'FAILURE', message: error.message } };
  if (isBranchOngoing(error)) return { status: 425, body: { dtm_result: 'ONGOING', message: error.message } };
  // A request the handler cannot take (e.g. without DTM's query parameters) is the caller's error.
  if (isConcordError(error) && error.status === 400) return { status: 400, body: { code: error.code, message: error.message } };
  // Neither FAILURE nor ONGOING may appear here, or the coordinator would read it as one.
  const message = error instanceof Error ? error.message : JSON.stringify(error);
  return { status: 500, body: { message: message.replace(/FAILURE|ONGOING/g, (m) => m.toLowerCase()) } };
}
