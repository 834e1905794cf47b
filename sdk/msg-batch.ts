/**
 * Many two-phase messages from one local transaction, in two requests instead of two per message:
 * a service that writes many events per transaction (or batches its writers) prepares them all,
 * commits its change with a barrier row per message, and submits them all. Each message is still
 * its own transaction at the coordinator: checked back, retried and delivered on its own.
 */
import type { BatchItem } from '../schemas/batch.js';
import { maxBatch } from '../schemas/batch.js';
import { ConcordError, errorCodes, type ErrorCode } from '../schemas/errors.js';
import { BranchBarrier, type SqlBarrierSource } from './barrier.js';
import { CoordinatorClient, type ClientOptions } from './coordinator-client.js';
import { isBranchFailure } from './errors.js';
import { submitOfPrepared, type Msg } from './msg.js';

export class MsgBatch {
  private readonly messages: Msg[] = [];
  private readonly client: CoordinatorClient;

  /** `server` is the coordinator's DTM API, e.g. http://localhost:36789/api/dtmsvr. */
  constructor(server: string, options: ClientOptions = {}) {
    this.client = new CoordinatorClient(server, options);
  }

  /** Adds a message (built with `new Msg(server, gid).add(...)`); at most 500 per batch. */
  add(msg: Msg): this {
    if (this.messages.length >= maxBatch) throw new ConcordError('INVALID_REQUEST', `a batch holds at most ${maxBatch} messages`);
    this.messages.push(msg);
    return this;
  }

  get gids(): string[] {
    return this.messages.map((m) => m.gid);
  }

  /**
   * Prepares every message, runs `business` with a barrier row per message in one local
   * transaction on `db` (Postgres or MySQL), and submits them all. A BranchFailure from `business`
   * aborts them all; any other error leaves them prepared for the coordinator's check-back, which
   * the barrier rows answer.
   */
  async doAndSubmit<T, Tx = unknown>(queryPrepared: string, db: SqlBarrierSource, business: (tx: Tx) => Promise<T>): Promise<T> {
    const requests = this.messages.map((m) => m.toRequest(queryPrepared));
    const prepared = await this.client.batchCall('prepare', requests);
    const refused = prepared.filter((r) => r.status !== 200);
    if (refused.length > 0) {
      // Nothing was committed: the ones that were prepared are aborted now rather than checked back later.
      const ok = new Set(prepared.filter((r) => r.status === 200).map((r) => r.gid));
      if (ok.size > 0)
        await this.client
          .batchCall(
            'abort',
            requests.filter((r) => ok.has(r.gid)),
          )
          .catch(() => undefined);
      throw batchError('prepare', refused);
    }
    let result: T;
    try {
      result = await BranchBarrier.runForMessages(db, this.gids, business);
    } catch (err) {
      if (isBranchFailure(err)) await this.client.batchCall('abort', requests).catch(() => undefined);
      throw err;
    }
    const submitted = await this.client.batchCall('submit', requests.map(submitOfPrepared));
    const failed = submitted.filter((r) => r.status !== 200);
    // Committed: a message whose submit failed is still delivered, after the coordinator's check-back.
    if (failed.length > 0) throw batchError('submit', failed);
    return result;
  }
}

/** The first failure names the rest, as one error with the first one's code. */
function batchError(op: string, failed: BatchItem[]): ConcordError {
  const first = failed[0]!;
  const code = first.code !== undefined && first.code in errorCodes ? (first.code as ErrorCode) : 'INTERNAL';
  const more =
    failed.length > 1
      ? ` (and ${failed.length - 1} more: ${failed
          .slice(1, 6)
          .map((f) => f.gid)
          .join(', ')})`
      : '';
  return new ConcordError(code, `batch ${op}: ${first.gid}: ${first.message ?? first.status}${more}`);
}
