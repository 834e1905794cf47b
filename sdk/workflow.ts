/**
 * Workflows (DTM's protocol): a workflow is an async function in the service; each step's outcome
 * is recorded at the coordinator, so a run that stopped (crash, lost connection) is run again from
 * the top and replays the recorded steps instead of calling them again. A step registers its
 * compensation (and, for TCC, its confirm) beside it; when the workflow throws BranchFailure the
 * compensations of the steps that ran are called, the last first, and the workflow ends failed;
 * when it returns, the commit hooks run and it ends succeeded. The coordinator resumes a workflow
 * left prepared by calling the service's callback (fastifyWorkflow / expressWorkflow).
 *
 *   const workflows = new Workflows({ coordinator, callback: 'http://bank-a/workflow/resume' });
 *   workflows.register('transfer', async (wf, input: { amount: number }) => {
 *     await wf.callBranch(input, `${bankA}/TransOut`, `${bankA}/TransOutCompensate`);
 *     await wf.callBranch(input, `${bankB}/TransIn`, `${bankB}/TransInCompensate`);
 *   });
 *   await workflows.execute('transfer', gid, { amount: 30 });
 *
 * Progress records are DTM's: branch ids 01, 02… in step order, ops action / commit / rollback,
 * so DTM's Go client and this SDK read each other's records.
 */
import { z } from 'zod';
import { gidSchema, type TransRequest } from '../schemas/dtm.js';
import { ConcordError } from '../schemas/errors.js';
import type { WorkflowReply } from '../schemas/workflow.js';
import { BranchBarrier } from './barrier.js';
import { CoordinatorClient, httpCall, type ClientOptions } from './coordinator-client.js';
import { BranchFailure, BranchOngoing, dtmAnswer, isBranchFailure } from './errors.js';

export interface WorkflowsOptions extends ClientOptions {
  /** The coordinator's DTM API, e.g. http://localhost:36789/api/dtmsvr, or a client for it. */
  coordinator: string | CoordinatorClient;
  /** The URL of this service's resume route (fastifyWorkflow); without it a stopped workflow waits for execute. */
  callback?: string;
  /** Seconds before the coordinator first resumes a workflow still running (DTM's retry_interval; default the coordinator's). */
  retryInterval?: number;
  /** Seconds the coordinator's resume call may take: the whole workflow runs inside it. */
  requestTimeout?: number;
  /** Headers the coordinator sends with its resume calls. */
  branchHeaders?: Record<string, string>;
  /** Compensate a step whose action itself failed, too (DTM's CompensateErrorBranch; default false). */
  compensateErrorBranch?: boolean;
}

/** What a step's function gets: the barrier of its call (gid, branch, op), for local steps in the service's database. */
export interface StepContext {
  barrier: BranchBarrier;
  gid: string;
  branchId: string;
}

export interface StepDefinition<T> {
  /** The step's work; its result (JSON) is recorded and replayed. Throw BranchFailure to roll the workflow back. */
  action?: (ctx: StepContext) => Promise<T>;
  /** Undoes the action when the workflow rolls back (a saga's compensation, TCC's Cancel). Must not throw BranchFailure. */
  compensate?: (ctx: StepContext) => Promise<unknown>;
  /** Runs when the workflow succeeds (TCC's Confirm). Must not throw BranchFailure. */
  commit?: (ctx: StepContext) => Promise<unknown>;
}

export type WorkflowFunction<I, O> = (wf: Workflow, input: I) => Promise<O>;

interface Recorded {
  status: 'succeed' | 'failed';
  data: string;
}

interface Phase2 {
  branchId: string;
  fn: (ctx: StepContext) => Promise<unknown>;
}

/** One run of a workflow: its steps, numbered in call order, and the phase-two work they registered. */
export class Workflow {
  private branches = 0;
  private readonly commits: Phase2[] = [];
  private readonly rollbacks: Phase2[] = [];

  constructor(
    readonly gid: string,
    private readonly client: CoordinatorClient,
    private readonly progress: Map<string, Recorded>,
    private readonly options: WorkflowsOptions,
  ) {}

  /** A step: runs `action` once (replayed from its record afterwards) and registers its compensation and commit. */
  async step<T>(def: StepDefinition<T>): Promise<T> {
    const branchId = this.nextBranch();
    if (def.commit) this.commits.push({ branchId, fn: def.commit });
    if (def.compensate) this.rollbacks.push({ branchId, fn: def.compensate });
    if (!def.action) return undefined as T;
    const action = def.action;
    const text = await this.recorded(branchId, def.compensate !== undefined, async (ctx) => {
      const result = await action(ctx);
      return result === undefined ? '' : JSON.stringify(result);
    });
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  /**
   * A saga step over HTTP: POSTs `body` (JSON unless a string) to `actionUrl`, and to
   * `compensateUrl` on rollback, with DTM's query parameters (the participant's barrier reads
   * them). Answers the action's reply text; 409 / FAILURE throws BranchFailure.
   */
  async callBranch(body: unknown, actionUrl: string, compensateUrl?: string): Promise<string> {
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    const branchId = this.nextBranch();
    if (compensateUrl) this.rollbacks.push({ branchId, fn: (ctx) => this.post(compensateUrl, data, ctx) });
    return this.recorded(branchId, compensateUrl !== undefined, (ctx) => this.post(actionUrl, data, ctx));
  }

  /** A TCC step over HTTP: Try now, Confirm when the workflow succeeds, Cancel when it rolls back. */
  async tccBranch(body: unknown, tryUrl: string, confirmUrl: string, cancelUrl: string): Promise<string> {
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    const branchId = this.nextBranch();
    this.commits.push({ branchId, fn: (ctx) => this.post(confirmUrl, data, ctx) });
    this.rollbacks.push({ branchId, fn: (ctx) => this.post(cancelUrl, data, ctx) });
    return this.recorded(branchId, true, (ctx) => this.post(tryUrl, data, ctx));
  }

  /** A hook run once when the workflow succeeds (after the steps' commits registered later). */
  onCommit(fn: (ctx: StepContext) => Promise<unknown>): void {
    this.commits.push({ branchId: this.nextBranch(), fn });
  }

  /** A hook run once when the workflow rolls back (before the compensations of the steps before it). */
  onRollback(fn: (ctx: StepContext) => Promise<unknown>): void {
    this.rollbacks.push({ branchId: this.nextBranch(), fn });
  }

  /**
   * Runs the commits (`failed` false) or the compensations, last registered first, each recorded
   * once done. Workflows.execute calls it when the function returned or threw BranchFailure.
   * @internal
   */
  async finish(failed: boolean): Promise<void> {
    const op = failed ? 'rollback' : 'commit';
    const items = failed ? this.rollbacks : this.commits;
    for (const item of [...items].reverse()) {
      if (this.progress.has(`${item.branchId}-${op}`)) continue;
      await item.fn(this.context(item.branchId, op));
      await this.record(item.branchId, op, 'succeed', '');
    }
  }

  private nextBranch(): string {
    return String(++this.branches).padStart(2, '0');
  }

  /** The recorded outcome of the branch's action, or runs it and records it (a retryable error is not recorded). */
  private async recorded(branchId: string, compensated: boolean, run: (ctx: StepContext) => Promise<string>): Promise<string> {
    let outcome = this.progress.get(`${branchId}-action`);
    if (!outcome) {
      try {
        outcome = { status: 'succeed', data: await run(this.context(branchId, 'action')) };
      } catch (err) {
        if (!isBranchFailure(err)) throw err;
        outcome = { status: 'failed', data: err.message };
      }
      await this.record(branchId, 'action', outcome.status, outcome.data);
    }
    if (outcome.status === 'succeed') return outcome.data;
    // DTM's default: a step that failed did nothing, so its own compensation is not called.
    if (compensated && !this.options.compensateErrorBranch) this.rollbacks.pop();
    throw new BranchFailure(outcome.data || `step ${branchId} failed`);
  }

  private async record(branchId: string, op: string, status: 'succeed' | 'failed', data: string): Promise<void> {
    await this.client.recordProgress({ gid: this.gid, trans_type: 'workflow', branch_id: branchId, op, status, data });
    this.progress.set(`${branchId}-${op}`, { status, data });
  }

  private context(branchId: string, op: string): StepContext {
    return { gid: this.gid, branchId, barrier: new BranchBarrier({ gid: this.gid, trans_type: 'workflow', branch_id: branchId, op }) };
  }

  private async post(url: string, data: string, ctx: StepContext): Promise<string> {
    const target = new URL(url);
    for (const [key, value] of Object.entries(ctx.barrier.call)) target.searchParams.set(key, value);
    const { status, text } = await httpCall('POST', target, data, this.options);
    if (status === 200 && !text.includes('FAILURE')) return text;
    const what = `${url} answered ${status}: ${text.slice(0, 200)}`;
    if (status === 409 || text.includes('FAILURE')) throw new BranchFailure(what);
    if (status === 425) throw new BranchOngoing(what);
    throw new Error(what);
  }
}

/** The workflows a service runs, by name: execute them, and resume them when the coordinator calls back. */
export class Workflows {
  private readonly client: CoordinatorClient;
  private readonly handlers = new Map<string, WorkflowFunction<never, unknown>>();

  constructor(private readonly options: WorkflowsOptions) {
    const { coordinator } = options;
    this.client = typeof coordinator === 'string' ? new CoordinatorClient(coordinator, options) : coordinator;
  }

  /** Registers a workflow under `name` (at startup, before the coordinator may resume one). */
  register<I, O>(name: string, fn: WorkflowFunction<I, O>): void {
    if (this.handlers.has(name)) throw new Error(`workflow ${name} is registered already`);
    this.handlers.set(name, fn);
  }

  /**
   * Runs workflow `name` as transaction `gid`, or resumes it: recorded steps replay. Answers its
   * result; throws BranchFailure when it rolled back (now or before), and any other error when it
   * stopped early (the coordinator resumes it later through the callback).
   */
  async execute<O = unknown>(name: string, gid: string, input?: unknown): Promise<O> {
    const fn = this.handlers.get(name);
    if (!fn) throw new Error(`workflow ${name} is not registered`);
    const o = this.options;
    // Through JSON, so that options left unset are not sent at all.
    const request = JSON.parse(
      JSON.stringify({
        gid,
        trans_type: 'workflow',
        // Never empty (no input is JSON null): the coordinator resumes with a GET when the input is empty, and the route takes POST.
        custom_data: JSON.stringify({ name, data: Buffer.from(JSON.stringify(input ?? null)).toString('base64') }),
        query_prepared: o.callback,
        protocol: 'http',
        retry_interval: o.retryInterval,
        request_timeout: o.requestTimeout,
        branch_headers: o.branchHeaders,
      }),
    ) as TransRequest;
    const reply: WorkflowReply = await this.client.prepareWorkflow(request);
    const { transaction } = reply;
    if (transaction.status === 'succeed') return decodeResult(transaction.result) as O;
    if (transaction.status === 'failed') throw new BranchFailure(transaction.rollback_reason || `workflow ${gid} failed`);
    const progress = new Map<string, Recorded>(
      reply.progresses.map((p) => [`${p.branch_id}-${p.op}`, { status: p.status, data: Buffer.from(p.bin_data, 'base64').toString() }]),
    );
    const wf = new Workflow(gid, this.client, progress, o);
    let result: unknown;
    try {
      result = await fn(wf, input as never);
    } catch (err) {
      if (!isBranchFailure(err)) throw err;
      await wf.finish(true);
      await this.submit(gid, { status: 'failed', rollback_reason: err.message.slice(0, 1024) });
      throw err;
    }
    await wf.finish(false);
    const text = result === undefined ? '' : JSON.stringify(result);
    await this.submit(gid, { status: 'succeed', result: Buffer.from(text).toString('base64') });
    return result as O;
  }

  /**
   * Answers the coordinator's resume call (query op = the workflow's name, body = its input):
   * runs the workflow again, and answers as DTM reads it (200, 409 rolled back, 500 stopped early).
   */
  async resume(query: unknown, body: unknown): Promise<{ status: number; body: Record<string, string> }> {
    try {
      const parsed = resumeQuerySchema.safeParse(query);
      if (!parsed.success)
        throw new ConcordError('INVALID_REQUEST', 'a resume call needs the query parameters gid and op', { field: 'op' });
      await this.execute(parsed.data.op, parsed.data.gid, body === '' || body === null ? undefined : body);
      return dtmAnswer();
    } catch (err) {
      return dtmAnswer(err);
    }
  }

  private async submit(gid: string, reqExtra: Record<string, string>): Promise<void> {
    await this.client.transCall('submit', { gid, trans_type: 'workflow', req_extra: reqExtra });
  }
}

/** The coordinator's resume call: op is the workflow's name. */
const resumeQuerySchema = z.object({ gid: gidSchema, op: z.string().min(1) });

function decodeResult(base64: string): unknown {
  const text = Buffer.from(base64, 'base64').toString();
  return text === '' ? undefined : (JSON.parse(text) as unknown);
}
