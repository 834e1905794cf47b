/**
 * Saga builder: DTM's saga request, plus Concord's step policies and broker steps
 * (schemas/saga.ts). Each step is an action and its compensation; the coordinator runs the
 * actions in order (or concurrently, after the orders given), and when an action fails for good
 * it runs the compensations of the steps that ran, in reverse.
 */
import type { TransRequest } from '../schemas/dtm.js';
import { ConcordError } from '../schemas/errors.js';
import { sagaStepPolicySchema, type SagaCustomData } from '../schemas/saga.js';
import { CoordinatorClient, type ClientOptions } from './coordinator-client.js';

export interface SagaOptions extends ClientOptions {
  /** Answer submit only after the saga finished (or failed). */
  waitResult?: boolean;
  /** Seconds after which a saga that cannot make progress is rolled back. */
  timeoutToFail?: number;
  /** Seconds each HTTP branch call may take (a step's `timeout` overrides it). */
  requestTimeout?: number;
  /** First retry delay in seconds. */
  retryInterval?: number;
  /** Retries of an action before the saga rolls back (DTM's retry_limit); default: no limit. */
  retryLimit?: number;
  /** Headers sent with every branch call and broker command. */
  branchHeaders?: Record<string, string>;
}

/** The policy of one step; every field is optional and falls back to the saga's or the coordinator's. */
export interface StepOptions {
  /** Command type of a broker step's action, dispatched on by the participant (default "action"). */
  command?: string;
  /** Command type of a broker step's compensation (default "compensate"). */
  compensateCommand?: string;
  /** Seconds one call may take; for a broker step, seconds to wait for the participant's reply. */
  timeout?: number;
  /** Runs of the action before the saga rolls back (default: no limit, or retryLimit + 1). */
  attempts?: number;
  /** Runs of the compensation before the saga needs attention (default: the coordinator's). */
  compensateAttempts?: number;
  /** First retry delay of this step in seconds; doubles per failure, capped and jittered. */
  backoff?: number;
  /** Broker message key: Kafka partitions by it. */
  key?: string;
  /** Headers added to this step's calls or command messages. */
  headers?: Record<string, string>;
}

/** StepOptions field → DTM step key; every value travels as a string. */
const policyKeys = {
  command: 'command',
  compensateCommand: 'compensate_command',
  timeout: 'timeout',
  attempts: 'attempts',
  compensateAttempts: 'compensate_attempts',
  backoff: 'backoff',
  key: 'key',
} as const satisfies Record<Exclude<keyof StepOptions, 'headers'>, string>;

export class Saga {
  private readonly steps: Record<string, string>[] = [];
  private readonly payloads: string[] = [];
  private readonly orders = new Map<number, number[]>();
  private concurrent = false;
  private readonly client: CoordinatorClient;

  /** `server` is the coordinator's DTM API, e.g. http://localhost:36789/api/dtmsvr. */
  constructor(
    server: string,
    readonly gid: string,
    private readonly options: SagaOptions = {},
  ) {
    this.client = new CoordinatorClient(server, options);
  }

  /**
   * Adds a step. `action` and `compensate` are http(s):// URLs (POSTed with DTM's query
   * parameters), gRPC methods as DTM writes them (host:port/package.Service/Method, called with the
   * payload's UTF-8 bytes), kafka://<connection>/<topic> or rabbitmq://<connection>/<exchange>/<routing key>
   * (a command message for a participant); `compensate` is '' for a step with nothing to undo.
   * `payload` is sent to both, as JSON unless it is a string already.
   */
  add(action: string, compensate: string, payload: unknown, step: StepOptions = {}): this {
    const index = this.steps.length;
    const entry: Record<string, string> = { action, compensate };
    for (const [option, key] of Object.entries(policyKeys) as [keyof typeof policyKeys, string][]) {
      const value = step[option];
      if (value !== undefined) entry[key] = String(value);
    }
    // Caught here rather than at submit, where the coordinator would name only the index.
    const parsed = sagaStepPolicySchema.safeParse(entry);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = `steps.${index}.${issue?.path.join('.') ?? ''}`;
      throw new ConcordError('INVALID_REQUEST', `${field}: ${issue?.message ?? 'invalid'}`, { field });
    }
    if (step.headers !== undefined) entry.headers = JSON.stringify(step.headers);
    this.steps.push(entry);
    this.payloads.push(typeof payload === 'string' ? payload : JSON.stringify(payload));
    return this;
  }

  /** Starts every action at once, except those held back by addBranchOrder. */
  enableConcurrent(): this {
    this.concurrent = true;
    return this;
  }

  /**
   * Step `branch` (0-based, in add() order) starts only after the steps `preBranches` succeeded,
   * as DTM's AddBranchOrder. Implies enableConcurrent().
   */
  addBranchOrder(branch: number, preBranches: number[]): this {
    for (const index of [branch, ...preBranches])
      if (!Number.isInteger(index) || index < 0)
        throw new ConcordError('INVALID_REQUEST', `branch order: ${index} is not a step index`, { field: 'custom_data' });
    this.orders.set(branch, [...preBranches]);
    this.concurrent = true;
    return this;
  }

  /** Submits the saga; the coordinator runs it from here on (with waitResult, submit waits for it). */
  async submit(): Promise<void> {
    await this.client.transCall('submit', this.body());
  }

  private customData(): string | undefined {
    if (!this.concurrent) return undefined;
    const orders: NonNullable<SagaCustomData['orders']> = {};
    for (const [branch, pre] of this.orders) {
      for (const index of [branch, ...pre])
        if (index >= this.steps.length)
          throw new ConcordError('INVALID_REQUEST', `branch order: step ${index} does not exist (${this.steps.length} steps)`, {
            field: 'custom_data',
          });
      orders[String(branch)] = pre;
    }
    const data: SagaCustomData = { concurrent: true, orders };
    return JSON.stringify(data);
  }

  private body(): TransRequest {
    const o = this.options;
    return {
      gid: this.gid,
      trans_type: 'saga',
      steps: this.steps,
      payloads: this.payloads,
      custom_data: this.customData(),
      wait_result: o.waitResult,
      timeout_to_fail: o.timeoutToFail,
      request_timeout: o.requestTimeout,
      retry_interval: o.retryInterval,
      retry_limit: o.retryLimit,
      branch_headers: o.branchHeaders,
    };
  }
}
