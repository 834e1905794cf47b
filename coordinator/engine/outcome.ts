/** How a pass's end answers a request that waits for the result (wait_result). */
import { ConcordError } from '../../schemas/errors.js';

export interface PassEnd {
  status: string;
  reason?: string | undefined;
}

/**
 * Succeed answers; failed is DTM's FAILURE; anything else (still running, needs attention, or no
 * end seen in time: `undefined`) is DTM's ONGOING. `what` names the transaction ("saga g1").
 */
export function throwUnlessSucceeded(what: string, end: PassEnd | undefined): void {
  if (end?.status === 'succeed') return;
  if (end?.status === 'failed') throw new ConcordError('TRANSACTION_FAILED', end.reason ?? `${what} failed`);
  if (end?.status === 'needs_attention') {
    throw new ConcordError('TRANSACTION_ONGOING', `${what} needs attention: ${end.reason ?? 'a compensation keeps failing'}`);
  }
  throw new ConcordError('TRANSACTION_ONGOING', `${what} is not finished yet${end?.reason ? `: ${end.reason}` : ''}`);
}

/** A request that lost a race to other requests on the same gid more often than a batch retries it. */
export function contended(gid: string): ConcordError {
  return new ConcordError(
    'CONTENDED',
    `other requests kept changing gid ${gid} while this one was written; nothing was decided, send it again`,
    {
      field: 'gid',
    },
  );
}
