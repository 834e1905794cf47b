/**
 * What TCC's and XA's global transactions share: their options, the DTM request for prepare,
 * submit and abort, the call of a branch's first phase, and the run (prepare, body, then submit on
 * success or abort on a throw).
 */
import type { TransRequest } from '../schemas/dtm.js';
import { CoordinatorClient, httpCall, type ClientOptions } from './coordinator-client.js';
import { BranchFailure, BranchOngoing } from './errors.js';

export interface PhaseTwoOptions extends ClientOptions {
  /** Answer submit only after every branch's phase two (Confirm, XA commit) succeeded. */
  waitResult?: boolean;
  /** Seconds after which a prepared transaction whose client went silent is rolled back (default: the coordinator's). */
  timeoutToFail?: number;
  /** Seconds each phase-two call may take. */
  requestTimeout?: number;
  /** First retry delay of a phase-two call, seconds. */
  retryInterval?: number;
  /** Headers the coordinator sends with every phase-two call. */
  branchHeaders?: Record<string, string>;
}

/** The DTM request for prepare, submit and abort (absent options left out, as DTM's Go client does). */
export function phaseTwoRequest(gid: string, transType: 'tcc' | 'xa', o: PhaseTwoOptions, extra: Partial<TransRequest> = {}): TransRequest {
  return JSON.parse(
    JSON.stringify({
      gid,
      trans_type: transType,
      wait_result: o.waitResult,
      timeout_to_fail: o.timeoutToFail,
      request_timeout: o.requestTimeout,
      retry_interval: o.retryInterval,
      branch_headers: o.branchHeaders,
      ...extra,
    }),
  ) as TransRequest;
}

/**
 * POSTs `data` to a branch's first phase with DTM's query parameters. Answers the reply text; a
 * reply FAILURE (409, or a body with "FAILURE") throws BranchFailure, ONGOING (425) BranchOngoing,
 * anything else that is not 200 an Error.
 */
export async function callFirstPhase(url: string, params: Record<string, string>, data: string, options: ClientOptions): Promise<string> {
  const target = new URL(url);
  for (const [key, value] of Object.entries(params)) target.searchParams.set(key, value);
  const { status, text } = await httpCall('POST', target, data, options);
  if (status === 200 && !text.includes('FAILURE')) return text;
  const what = `${url} answered ${status}: ${text.slice(0, 200)}`;
  if (status === 409 || text.includes('FAILURE')) throw new BranchFailure(what);
  if (status === 425) throw new BranchOngoing(what);
  throw new Error(what);
}

/** Prepare, then `body`; submit when it returns, abort (with its message as the reason) when it throws, then rethrow. */
export async function runPhaseTwo<T>(
  client: CoordinatorClient,
  request: (extra?: Partial<TransRequest>) => TransRequest,
  body: () => Promise<T>,
): Promise<T> {
  await client.transCall('prepare', request());
  let result: T;
  try {
    result = await body();
  } catch (err) {
    await client.transCall('abort', request({ rollback_reason: (err as Error).message.slice(0, 1024) }));
    throw err;
  }
  await client.transCall('submit', request());
  return result;
}

export function clientFor(coordinator: string | CoordinatorClient, options: ClientOptions): CoordinatorClient {
  return typeof coordinator === 'string' ? new CoordinatorClient(coordinator, options) : coordinator;
}
