/**
 * Group commit for the two-phase messages of one process: the prepares (and the submits, the
 * aborts) of concurrent `Msg` calls travel together in one batch request (POST
 * /api/concord/msg/<op>), so N writers that each commit one event per local transaction cost the
 * coordinator a few requests, not 2N. Nothing waits on a timer: a call made while no request of
 * its kind is in flight goes at the end of the current event-loop turn (with whatever else arrived
 * in that turn); calls made while one is in flight go together as soon as it returns. Each message
 * keeps its own gid, local transaction, barrier row and outcome: one refused message fails only
 * its own call.
 */
import { context, propagation } from '@opentelemetry/api';
import { maxBatch } from '../schemas/batch.js';
import type { TransRequest } from '../schemas/dtm.js';
import { isConcordError } from '../schemas/errors.js';
import { CoordinatorClient, batchItemError, type ClientOptions } from './coordinator-client.js';

export interface MsgCoalescerOptions extends ClientOptions {
  /** Requests of one kind (prepare, submit or abort) in flight at once. Default 1. */
  maxInFlight?: number;
  /** Messages per request, at most 500 (the batch endpoint's limit). Default 500. */
  maxBatch?: number;
}

export type CoalescedOp = 'prepare' | 'submit' | 'abort';

interface Pending {
  body: TransRequest;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class MsgCoalescer {
  private readonly client: CoordinatorClient;
  private readonly lanes: Record<CoalescedOp, Lane>;
  /** Requests sent and messages they carried, since the start: how well the calls coalesce. */
  readonly stats = { requests: 0, messages: 0 };

  /** `server` is the coordinator's DTM API, e.g. http://localhost:36789/api/dtmsvr. */
  constructor(
    readonly server: string,
    options: MsgCoalescerOptions = {},
  ) {
    this.client = new CoordinatorClient(server, options);
    const limits = {
      inFlight: Math.max(1, options.maxInFlight ?? 1),
      batch: Math.min(maxBatch, Math.max(1, options.maxBatch ?? maxBatch)),
    };
    this.lanes = {
      prepare: new Lane('prepare', this.client, limits, this.stats),
      submit: new Lane('submit', this.client, limits, this.stats),
      abort: new Lane('abort', this.client, limits, this.stats),
    };
  }

  /** Sends one message's prepare, submit or abort with the others pending; settles as its own request would. */
  call(op: CoalescedOp, body: TransRequest): Promise<void> {
    const traced = withTraceContext(body);
    return new Promise((resolve, reject) => this.lanes[op].enqueue({ body: traced, resolve, reject }));
  }
}

/** One kind of request: its queue and the requests in flight. */
class Lane {
  private queue: Pending[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly op: CoalescedOp,
    private readonly client: CoordinatorClient,
    private readonly limits: { inFlight: number; batch: number },
    private readonly stats: { requests: number; messages: number },
  ) {}

  enqueue(pending: Pending): void {
    this.queue.push(pending);
    this.schedule();
  }

  /** At the end of this event-loop turn (setImmediate, no timer): the calls made in it go together. */
  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.limits.inFlight || this.queue.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      while (this.inFlight < this.limits.inFlight && this.queue.length > 0) {
        this.inFlight++;
        void this.send(this.take()).finally(() => {
          this.inFlight--;
          this.schedule();
        });
      }
    });
  }

  /** The next batch: up to the limit, one entry per gid (a batch refuses a gid twice; a repeat waits for the next). */
  private take(): Pending[] {
    const gids = new Set<string>();
    const batch: Pending[] = [];
    const rest: Pending[] = [];
    for (const p of this.queue) {
      if (batch.length < this.limits.batch && !gids.has(p.body.gid)) {
        gids.add(p.body.gid);
        batch.push(p);
      } else rest.push(p);
    }
    this.queue = rest;
    return batch;
  }

  private async send(batch: Pending[]): Promise<void> {
    this.stats.requests++;
    this.stats.messages += batch.length;
    // Alone, it goes as DTM's own request: the same cost, and any DTM-compatible server takes it.
    if (batch.length === 1) return sendAlone(this.op, this.client, batch[0]!);
    let results;
    try {
      results = await this.client.batchCall(
        this.op,
        batch.map((p) => p.body),
      );
    } catch (err) {
      // A malformed message (or a body too large) fails the whole request; each alone, only it fails.
      if (isConcordError(err) && (err.code === 'INVALID_REQUEST' || err.code === 'BODY_TOO_LARGE')) {
        this.stats.requests += batch.length;
        await Promise.all(batch.map((p) => sendAlone(this.op, this.client, p)));
      } else for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => {
      const item = results[i];
      if (item?.status === 200) p.resolve();
      else p.reject(item ? batchItemError(this.op, item) : new Error(`POST /msg/${this.op}: no result for ${p.body.gid}`));
    });
  }
}

function sendAlone(op: CoalescedOp, client: CoordinatorClient, p: Pending): Promise<void> {
  return client.transCall(op, p.body).then(p.resolve, p.reject);
}

/**
 * The caller's trace (an OpenTelemetry SDK registered in the service) in the message's own
 * branch_headers, as the coordinator keeps a single request's: the batch request's headers can
 * carry only one.
 */
function withTraceContext(body: TransRequest): TransRequest {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  if (carrier.traceparent === undefined) return body;
  if (Object.keys(body.branch_headers ?? {}).some((k) => k.toLowerCase() === 'traceparent')) return body;
  return { ...body, branch_headers: { ...body.branch_headers, ...carrier } };
}
