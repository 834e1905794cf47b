/**
 * Two-phase message builder. The usual form is `doAndSubmit`: prepare at the coordinator, run the
 * business change and the barrier row in one local transaction, then submit. If the process dies
 * in between, the coordinator asks the query-prepared URL, and the barrier row answers.
 */
import type { TransRequest } from '../schemas/dtm.js';
import { classifyDtmAnswer } from '../schemas/dtm.js';
import { BranchBarrier, type BarrierSource, type SqlBarrierSource } from './barrier.js';
import type { RedisAdjustment, RedisLike } from './barrier-redis.js';
import { CoordinatorClient, httpCall, type ClientOptions } from './coordinator-client.js';
import { isBranchFailure } from './errors.js';
import type { CoalescedOp, MsgCoalescer } from './msg-coalescer.js';

export interface MsgOptions extends ClientOptions {
  /** Answer submit only after the branches were delivered (or failed). */
  waitResult?: boolean;
  /** Seconds after which a prepared, unsubmitted message is checked back. */
  timeoutToFail?: number;
  /** Seconds each branch call may take. */
  requestTimeout?: number;
  /** First retry delay in seconds. */
  retryInterval?: number;
  /** Headers sent with every branch call. */
  branchHeaders?: Record<string, string>;
  /** Deliver the branches in parallel instead of in order. */
  concurrent?: boolean;
  /** Seconds to wait after submit before delivering. */
  delay?: number;
  /**
   * Sends prepare, submit and abort through this process's MsgCoalescer: with the concurrent
   * messages of other calls, in shared batch requests (its own client options then apply).
   */
  coalescer?: MsgCoalescer;
}

export interface DestinationOptions {
  /** Broker message key: Kafka partitions by it, so messages of one key keep their order per partition. */
  key?: string;
  /** Headers added to this branch's message or request. */
  headers?: Record<string, string>;
}

export class Msg {
  private readonly steps: Record<string, string>[] = [];
  private readonly payloads: string[] = [];
  private readonly client: CoordinatorClient;
  private queryPrepared = '';

  /** `server` is the coordinator's DTM API, e.g. http://localhost:36789/api/dtmsvr. */
  constructor(
    server: string,
    readonly gid: string,
    private readonly options: MsgOptions = {},
  ) {
    this.client = new CoordinatorClient(server, options);
  }

  /**
   * Adds a branch: `payload` (JSON unless it is a string already) goes to `destination`, an HTTP
   * URL (POSTed), kafka://<connection>/<topic> or rabbitmq://<connection>/<exchange>/<routing key>.
   */
  add(destination: string, payload: unknown, options: DestinationOptions = {}): this {
    const step: Record<string, string> = { action: destination };
    if (options.key !== undefined) step.key = options.key;
    if (options.headers !== undefined) step.headers = JSON.stringify(options.headers);
    this.steps.push(step);
    this.payloads.push(typeof payload === 'string' ? payload : JSON.stringify(payload));
    return this;
  }

  /** Adds a branch per subscriber of `topic` (see the subscribe API), as DTM's AddTopic does. */
  addTopic(topic: string, payload: unknown, options: DestinationOptions = {}): this {
    return this.add(`topic://${topic}`, payload, options);
  }

  async prepare(queryPrepared: string): Promise<void> {
    this.queryPrepared = queryPrepared;
    await this.send('prepare', this.body());
  }

  async submit(): Promise<void> {
    await this.send('submit', this.body());
  }

  /** Submit after this message's own prepare was taken: the coordinator has its steps already (submitOfPrepared). */
  private async submitPrepared(): Promise<void> {
    await this.send('submit', submitOfPrepared(this.body()));
  }

  async abort(reason?: string): Promise<void> {
    await this.send('abort', { ...this.body(), rollback_reason: reason });
  }

  private send(op: CoalescedOp, body: TransRequest): Promise<void> {
    const { coalescer } = this.options;
    return coalescer ? coalescer.call(op, body) : this.client.transCall(op, body);
  }

  /**
   * Prepares, runs `business` with the barrier row in one local transaction on `db` (Postgres or
   * MySQL), and submits. A BranchFailure from `business` aborts the message. Any other error leaves
   * the outcome unknown (did the commit land?), so the query-prepared URL is asked, as the
   * coordinator would.
   */
  doAndSubmit<T, Tx = unknown>(queryPrepared: string, db: SqlBarrierSource, business: (tx: Tx) => Promise<T>): Promise<T | undefined>;
  /** Redis: the local change is `change`, applied with the barrier key by one script. */
  doAndSubmit(queryPrepared: string, redis: RedisLike, change: RedisAdjustment): Promise<number | undefined>;
  async doAndSubmit<T, Tx>(
    queryPrepared: string,
    db: BarrierSource,
    business: ((tx: Tx) => Promise<T>) | RedisAdjustment,
  ): Promise<T | number | undefined> {
    const barrier = new BranchBarrier({ trans_type: 'msg', gid: this.gid, branch_id: '00', op: 'msg' });
    const prepared = this.prepare(queryPrepared);
    // In SQL the local transaction opens and writes its barrier row while prepare is on its way (a
    // round trip off every message's latency); the business change, and so the commit, wait for
    // prepare's answer. Redis applies the change in one script: it waits for prepare first.
    let change = business;
    if (typeof business === 'function') {
      prepared.catch(() => undefined); // awaited below, on every path
      change = async (tx: Tx) => {
        await prepared;
        return business(tx);
      };
    } else await prepared;
    let result: T | number | undefined;
    try {
      // One call, two overloads: the barrier checks again that the pair fits.
      result = await (barrier.run as (db: BarrierSource, b: typeof change) => Promise<T | number | undefined>)(db, change);
    } catch (err) {
      // A failed prepare stored nothing, and the local transaction rolled back: its error is the answer.
      await prepared;
      const decided = isBranchFailure(err) ? 'FAILURE' : await this.checkBack(queryPrepared).catch(() => 'ERROR');
      if (decided === 'FAILURE') {
        await this.abort(err instanceof Error ? err.message : String(err));
        throw err;
      }
      // Unknown: leave it prepared; the coordinator's own check-back settles it.
      if (decided !== 'SUCCESS') throw err;
      // The commit landed and the error came after it: the message must go out.
      await this.submitPrepared();
      return undefined;
    }
    // The barrier skips the change when its row exists (a repeated call): submit still follows prepare.
    await prepared;
    await this.submitPrepared();
    return result;
  }

  private async checkBack(queryPrepared: string): Promise<string> {
    const url = new URL(queryPrepared);
    for (const [k, v] of Object.entries({ gid: this.gid, trans_type: 'msg', branch_id: '00', op: 'msg' })) url.searchParams.set(k, v);
    const res = await httpCall('GET', url, undefined, this.options);
    return classifyDtmAnswer(res.status, res.text);
  }

  /** The message as DTM's prepare and submit carry it; MsgBatch sends many of these at once. */
  toRequest(queryPrepared?: string): TransRequest {
    if (queryPrepared !== undefined) this.queryPrepared = queryPrepared;
    return this.body();
  }

  private body(): TransRequest {
    const o = this.options;
    return {
      gid: this.gid,
      trans_type: 'msg',
      steps: this.steps,
      payloads: this.payloads,
      query_prepared: this.queryPrepared || undefined,
      custom_data: o.delay ? JSON.stringify({ delay: o.delay }) : undefined,
      wait_result: o.waitResult,
      timeout_to_fail: o.timeoutToFail,
      request_timeout: o.requestTimeout,
      retry_interval: o.retryInterval,
      branch_headers: o.branchHeaders,
      concurrent: o.concurrent,
    };
  }
}

/**
 * The submit of a message the coordinator has taken the prepare of: the same request without its
 * steps and payloads. The coordinator (Concord, and DTM alike) then promotes the stored message
 * with the branches it stored at prepare, so the payloads are not sent, validated and hashed a
 * second time. Only for a submit that follows its own successful prepare: a submit alone must carry
 * the steps (it creates the message), and with them the coordinator checks they match.
 */
export function submitOfPrepared(body: TransRequest): TransRequest {
  const { steps: _steps, payloads: _payloads, ...rest } = body;
  return rest;
}
