/** The SDK's HTTP client for the coordinator's DTM-compatible API. */
import { context, propagation } from '@opentelemetry/api';
import { Agent, request } from 'undici';
import { errorCodes, ConcordError, type ErrorCode } from '../schemas/errors.js';
import type { BatchItem } from '../schemas/batch.js';
import type { ParkedReport, ParkedReportReply } from '../schemas/consumer-parked.js';
import type { TransRequest } from '../schemas/dtm.js';
import type { BranchRegistration } from '../schemas/xa.js';
import type { WorkflowRegistration, WorkflowReply } from '../schemas/workflow.js';

export interface ClientOptions {
  /** Milliseconds a call to the coordinator may take. Default 10 000. */
  timeoutMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
  /**
   * The coordinator's API or operator token, sent as "Authorization: Bearer <token>" to the
   * coordinator only (never to your check-back URL). A token in the server URL
   * (http://host:36789/t/<token>/api/dtmsvr) works too, as with DTM's clients.
   */
  token?: string;
}

/**
 * One keep-alive connection pool for the process. undici's request() costs a fraction of the CPU
 * of the global fetch(), and a service sending thousands of messages a second feels it.
 */
const agent = new Agent({ keepAliveTimeout: 30_000, connections: 128 });

/** GET or POST with the SDK's connection pool; the answer's status and body text. */
export async function httpCall(
  method: 'GET' | 'POST',
  url: string | URL,
  body: string | undefined,
  options: ClientOptions,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 10_000);
  const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
  const res = await request(url, {
    dispatcher: agent,
    method,
    headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
    body,
    signal,
  });
  return { status: res.statusCode, text: await res.body.text() };
}

/** Calls the coordinator at `server` (e.g. http://localhost:36789/api/dtmsvr). */
export class CoordinatorClient {
  constructor(
    readonly server: string,
    private readonly options: ClientOptions = {},
  ) {}

  async newGid(): Promise<string> {
    const body = (await this.call('GET', '/newGid')) as { gid: string };
    return body.gid;
  }

  async transCall(op: 'prepare' | 'submit' | 'abort', body: TransRequest): Promise<void> {
    await this.call('POST', `/${op}`, body);
  }

  /**
   * Several two-phase messages in one request (POST /api/concord/msg/<op> beside the DTM API):
   * one result per message, in order. The request itself failing (bad input, store down) throws.
   */
  async batchCall(op: 'prepare' | 'submit' | 'abort', transactions: TransRequest[]): Promise<BatchItem[]> {
    const body = (await this.call('POST', `/msg/${op}`, { transactions }, this.concordBase())) as { results: BatchItem[] };
    return body.results;
  }

  /** TCC and XA: records a branch's phase-two calls while the transaction is prepared. */
  async registerBranch(body: BranchRegistration): Promise<void> {
    await this.call('POST', '/registerBranch', body);
  }

  /** Workflow: creates it, or answers it with the steps it recorded. */
  async prepareWorkflow(body: TransRequest): Promise<WorkflowReply> {
    return (await this.call('POST', '/prepareWorkflow', body)) as WorkflowReply;
  }

  /** Workflow: records one step's outcome. */
  async recordProgress(body: WorkflowRegistration): Promise<void> {
    await this.call('POST', '/registerBranch', body);
  }

  /** A consumer's parked messages (POST /api/concord/consumers/parked); answers the redrives operators asked for. */
  async reportParked(report: ParkedReport): Promise<ParkedReportReply> {
    return (await this.call('POST', '/consumers/parked', report, this.concordBase())) as ParkedReportReply;
  }

  async query(gid: string): Promise<unknown> {
    return this.call('GET', `/query?gid=${encodeURIComponent(gid)}`);
  }

  /** Concord's own API beside DTM's: /api/concord on the same server (and token prefix). */
  private concordBase(): string {
    return `${this.server.replace(/\/api\/dtmsvr\/?$/, '')}/api/concord`;
  }

  private async call(method: 'GET' | 'POST', path: string, body?: unknown, base = this.server): Promise<unknown> {
    const token = this.options.token;
    const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
    // The caller's trace (an OpenTelemetry SDK registered in the service) goes with the transaction to its branches and consumers.
    propagation.inject(context.active(), headers);
    const res = await httpCall(method, `${base}${path}`, body === undefined ? undefined : JSON.stringify(body), this.options, headers);
    const { text } = res;
    const parsed = parse(text);
    if (res.status === 200) return parsed;
    const code = typeof parsed?.code === 'string' && parsed.code in errorCodes ? (parsed.code as ErrorCode) : undefined;
    const message = typeof parsed?.message === 'string' ? parsed.message : text.slice(0, 500);
    const field = typeof parsed?.field === 'string' ? parsed.field : undefined;
    throw new ConcordError(code ?? statusCode(res.status), `${method} ${path}: ${message}`, field ? { field } : {});
  }
}

/** The error a message's refusal inside a batch answer stands for: what the single request would have thrown. */
export function batchItemError(op: string, item: BatchItem): ConcordError {
  const code = item.code !== undefined && item.code in errorCodes ? (item.code as ErrorCode) : statusCode(item.status);
  return new ConcordError(code, `POST /msg/${op}: ${item.gid}: ${item.message ?? item.status}`, item.field ? { field: item.field } : {});
}

function parse(text: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** A code for answers without one (another DTM-compatible server, a proxy). */
function statusCode(status: number): ErrorCode {
  if (status === 409) return 'INVALID_STATE';
  if (status === 425) return 'TRANSACTION_ONGOING';
  if (status === 503) return 'STORE_UNAVAILABLE';
  if (status >= 400 && status < 500) return 'INVALID_REQUEST';
  return 'INTERNAL';
}
