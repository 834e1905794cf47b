/**
 * This node's hold on one transaction. The store keeps the lease's end (next_cron_time); the
 * pass keeps a local deadline a margin inside it, taken from a monotonic clock read before the
 * store write, so the local deadline is never later than the stored one. A call starts only when
 * it can end before the deadline; otherwise the lease is lengthened first, or the pass learns it
 * lost the transaction to another node.
 */
import { extendLease } from '../store/transactions.js';
import { leaseSeconds, type EngineContext } from './context.js';

/** Time kept between the end of the last possible call and the end of the lease. */
export const leaseMarginMs = 1_000;

export class Lease {
  private deadline: number;

  /** `startedAt` (performance.now()) was read before the store wrote a lease of `seconds`. */
  constructor(
    private readonly ctx: Pick<EngineContext, 'config' | 'database' | 'nodeId'>,
    readonly gid: string,
    startedAt: number,
    seconds: number,
  ) {
    this.deadline = startedAt + seconds * 1000 - leaseMarginMs;
  }

  /** The store wrote a new lease of `seconds` (e.g. on promotion); `startedAt` was read before that write. */
  renewed(startedAt: number, seconds: number): void {
    this.deadline = startedAt + seconds * 1000 - leaseMarginMs;
  }

  /** True when a call of `timeout` seconds ends inside the lease, lengthened if needed; false when the lease is lost. */
  async fits(timeout: number): Promise<boolean> {
    if (performance.now() + timeout * 1000 <= this.deadline) return true;
    const before = performance.now();
    const longer = leaseSeconds(this.ctx.config, timeout);
    if (!(await extendLease(this.ctx.database, this.gid, this.ctx.nodeId, longer))) return false;
    this.renewed(before, longer);
    return true;
  }
}
