/**
 * TCC: the service calls each branch's Try itself, after registering the branch's Confirm and
 * Cancel with the coordinator; when every Try succeeded it submits and the coordinator calls every
 * Confirm, and when one failed it aborts and the coordinator calls every Cancel (for branches whose
 * Try never ran too: the barrier makes such a Cancel a no-op and blocks a Try that comes after it).
 *
 *   await tcc(coordinator, gid, async (t) => {
 *     await t.callBranch({ amount: 30 }, `${bank}/TransOutTry`, `${bank}/TransOutConfirm`, `${bank}/TransOutCancel`);
 *     await t.callBranch({ amount: 30 }, `${bank}/TransInTry`, `${bank}/TransInConfirm`, `${bank}/TransInCancel`);
 *   });
 *
 * Nested TCC, as DTM's TccFromQuery: a Try may itself call sub-branches of the same transaction
 * with `Tcc.fromQuery(query)`; they are numbered after it (0201, 0202… inside branch 02), and the
 * coordinator confirms or cancels them with all the others.
 */
import type { TransRequest } from '../schemas/dtm.js';
import { ConcordError } from '../schemas/errors.js';
import { tccTryQuerySchema } from '../schemas/tcc.js';
import { CoordinatorClient, httpCall, type ClientOptions } from './coordinator-client.js';
import { BranchFailure, BranchOngoing } from './errors.js';

export interface TccOptions extends ClientOptions {
  /** Answer submit only after every Confirm succeeded. */
  waitResult?: boolean;
  /** Seconds after which a prepared TCC whose client went silent is cancelled (default: the coordinator's). */
  timeoutToFail?: number;
  /** Seconds each Confirm or Cancel call may take. */
  requestTimeout?: number;
  /** First retry delay of a Confirm or Cancel, seconds. */
  retryInterval?: number;
  /** Headers the coordinator sends with every Confirm and Cancel. */
  branchHeaders?: Record<string, string>;
}

/** One TCC transaction while its body runs: calls branches, numbered 01, 02… in call order. */
export class Tcc {
  private branches = 0;

  /** `parentBranchId`: the Try this instance runs in, for a nested TCC ('' at the top). */
  constructor(
    readonly client: CoordinatorClient,
    readonly gid: string,
    private readonly options: TccOptions = {},
    readonly parentBranchId = '',
  ) {}

  /**
   * Continues the TCC a Try was called in, from that call's query parameters (DTM's TccFromQuery):
   * its branches become sub-branches of the calling one. Missing or bad parameters throw a
   * ConcordError INVALID_REQUEST naming the parameter (the adapters answer it with 400).
   */
  static fromQuery(query: unknown, options: TccOptions = {}): Tcc {
    const parsed = tccTryQuerySchema.safeParse(query);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue?.path.join('.') ?? '';
      throw new ConcordError('INVALID_REQUEST', `query parameter ${field}: ${issue?.message ?? 'invalid'}`, { field });
    }
    const { dtm, gid, branch_id } = parsed.data;
    return new Tcc(new CoordinatorClient(dtm, options), gid, options, branch_id);
  }

  /**
   * Registers the branch, then calls its Try with `body` (JSON unless a string). Answers the Try's
   * reply text; a Try that answers FAILURE (409, or a body with "FAILURE") throws BranchFailure,
   * ONGOING (425) BranchOngoing, anything else that is not 200 an Error.
   */
  async callBranch(body: unknown, tryUrl: string, confirmUrl: string, cancelUrl: string): Promise<string> {
    // DTM's numbering: two digits per level, so at most 99 branches per Try.
    if (this.branches >= 99) throw new Error(`TCC ${this.gid}: more than 99 branches under '${this.parentBranchId}'`);
    const branchId = this.parentBranchId + String(++this.branches).padStart(2, '0');
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    await this.client.registerBranch({
      gid: this.gid,
      trans_type: 'tcc',
      branch_id: branchId,
      data,
      confirm: confirmUrl,
      cancel: cancelUrl,
    });
    const url = new URL(tryUrl);
    // `dtm` lets the Try continue this TCC with nested branches (DTM's clients send it too).
    const query = { dtm: this.client.server, gid: this.gid, trans_type: 'tcc', branch_id: branchId, op: 'try' };
    for (const [key, value] of Object.entries(query)) {
      url.searchParams.set(key, value);
    }
    const { status, text } = await httpCall('POST', url, data, this.options);
    if (status === 200 && !text.includes('FAILURE')) return text;
    const what = `Try ${tryUrl} answered ${status}: ${text.slice(0, 200)}`;
    if (status === 409 || text.includes('FAILURE')) throw new BranchFailure(what);
    if (status === 425) throw new BranchOngoing(what);
    throw new Error(what);
  }

  /** The DTM request for prepare, submit and abort. */
  request(extra: Partial<TransRequest> = {}): TransRequest {
    const o = this.options;
    return JSON.parse(
      JSON.stringify({
        gid: this.gid,
        trans_type: 'tcc',
        wait_result: o.waitResult,
        timeout_to_fail: o.timeoutToFail,
        request_timeout: o.requestTimeout,
        retry_interval: o.retryInterval,
        branch_headers: o.branchHeaders,
        ...extra,
      }),
    ) as TransRequest;
  }
}

/**
 * Runs a TCC transaction: prepare, then `body`; submits when it returns (the coordinator confirms
 * every branch) and aborts when it throws (the coordinator cancels every branch), then rethrows.
 */
export async function tcc<T>(
  coordinator: string | CoordinatorClient,
  gid: string,
  body: (t: Tcc) => Promise<T>,
  options: TccOptions = {},
): Promise<T> {
  const client = typeof coordinator === 'string' ? new CoordinatorClient(coordinator, options) : coordinator;
  const t = new Tcc(client, gid, options);
  await client.transCall('prepare', t.request());
  let result: T;
  try {
    result = await body(t);
  } catch (err) {
    await client.transCall('abort', t.request({ rollback_reason: (err as Error).message.slice(0, 1024) }));
    throw err;
  }
  await client.transCall('submit', t.request());
  return result;
}
