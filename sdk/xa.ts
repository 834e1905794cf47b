/**
 * XA, the global side: the service calls each branch (op action) and the branch runs its work in
 * a local XA transaction, prepares it and registers itself with the coordinator (xaLocal in
 * xa-local.ts); when every branch answered success the service submits and the coordinator commits
 * every branch's prepared transaction, and when one failed it aborts and the coordinator rolls back
 * the registered ones.
 *
 *   await xa(coordinator, gid, async (x) => {
 *     await x.callBranch({ amount: 30 }, `${bankA}/TransOut`);
 *     await x.callBranch({ amount: 30 }, `${bankB}/TransIn`);
 *   });
 */
import type { TransRequest } from '../schemas/dtm.js';
import type { CoordinatorClient } from './coordinator-client.js';
import { callFirstPhase, clientFor, phaseTwoRequest, runPhaseTwo, type PhaseTwoOptions } from './phase-two-global.js';

export type XaOptions = PhaseTwoOptions;

/** One XA transaction while its body runs: calls branches, numbered 01, 02… in call order. */
export class Xa {
  private branches = 0;

  constructor(
    readonly client: CoordinatorClient,
    readonly gid: string,
    private readonly options: XaOptions = {},
  ) {}

  /**
   * Calls a branch's action with `body` (JSON unless a string) and DTM's query parameters: gid,
   * trans_type=xa, branch_id, op=action, dtm (the coordinator, where the branch registers) and
   * phase2_url (`url` itself unless given: the coordinator calls it with op=commit or rollback).
   * Answers the reply text; FAILURE throws BranchFailure, ONGOING BranchOngoing, other errors Error.
   */
  async callBranch(body: unknown, url: string, phase2Url = url): Promise<string> {
    const branchId = String(++this.branches).padStart(2, '0');
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    const params = { dtm: this.client.server, gid: this.gid, trans_type: 'xa', branch_id: branchId, op: 'action', phase2_url: phase2Url };
    return callFirstPhase(url, params, data, this.options);
  }

  /** The DTM request for prepare, submit and abort. */
  request(extra: Partial<TransRequest> = {}): TransRequest {
    return phaseTwoRequest(this.gid, 'xa', this.options, extra);
  }
}

/**
 * Runs an XA transaction: prepare, then `body`; submits when it returns (the coordinator commits
 * every branch) and aborts when it throws (the coordinator rolls back every branch), then rethrows.
 */
export async function xa<T>(
  coordinator: string | CoordinatorClient,
  gid: string,
  body: (x: Xa) => Promise<T>,
  options: XaOptions = {},
): Promise<T> {
  const x = new Xa(clientFor(coordinator, options), gid, options);
  return runPhaseTwo(
    x.client,
    (extra) => x.request(extra),
    () => body(x),
  );
}
