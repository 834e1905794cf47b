/**
 * What a workflow needs from the coordinator, decided from its row alone (no I/O). The client runs
 * a workflow's code and records each step; the coordinator only keeps the record and, when a
 * workflow stays prepared (its client crashed or failed to reach the coordinator), calls the
 * workflow's callback (query_prepared, op = the workflow's name, body = its input; over gRPC the
 * input wrapped in DTM's workflow.WorkflowData), as DTM does, so the service runs it again: recorded steps replay, the rest run, and the run submits the outcome.
 */
import type { StoredOptions } from '../../schemas/db/tables.js';
import type { GlobalStatus } from '../../schemas/dtm.js';
import { parseJson } from '../../schemas/trans-checks.js';
import { workflowCustomDataSchema } from '../../schemas/workflow.js';

export interface WorkflowView {
  status: GlobalStatus;
  /** 'grpc' for a workflow created over the gRPC API: its callback is DTM's gRPC workflow service. */
  protocol: string;
  /** The callback the service serves to resume a workflow ('' when it serves none). */
  query_prepared: string;
  /** {"name": …, "data": base64 of the input}. */
  custom_data: string;
}

export type WorkflowDecision =
  /** Succeed or failed: nothing left to do. */
  | { kind: 'finished' }
  /** Call the callback with op = name and the input as body; the run that answers submits the outcome. */
  | { kind: 'resume'; url: string; name: string; payload: string | Buffer }
  /** Still prepared but nothing can resume it (no callback, or no name): look again later. */
  | { kind: 'wait'; reason: string };

export function decideWorkflow(view: WorkflowView): WorkflowDecision {
  if (view.status !== 'prepared') return { kind: 'finished' };
  const custom = workflowCustomDataSchema.safeParse(parseJson(view.custom_data));
  if (!custom.success) return { kind: 'wait', reason: 'custom_data does not name the workflow' };
  if (view.query_prepared === '') return { kind: 'wait', reason: 'the workflow was prepared without a callback URL' };
  const input = Buffer.from(custom.data.data ?? '', 'base64');
  const payload = view.protocol === 'grpc' ? workflowData(input) : input.toString('utf8');
  return { kind: 'resume', url: view.query_prepared, name: custom.data.name, payload };
}

/**
 * The protobuf encoding of DTM's `workflow.WorkflowData { bytes Data = 1; }`, the request of the
 * `/workflow.Workflow/Execute` method that workflow.InitGrpc serves: field 1, length-delimited.
 */
function workflowData(input: Buffer): Buffer {
  if (input.length === 0) return input; // proto3 leaves an empty field out
  const length: number[] = [];
  for (let n = input.length; ; n >>>= 7) {
    if (n < 0x80) {
      length.push(n);
      break;
    }
    length.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from([0x0a, ...length]), input]);
}

/**
 * Seconds a new workflow is left to its client before the first resume: DTM's retry_interval,
 * else timeout_to_fail when it is shorter than the configured interval, else that interval.
 */
export function firstResumeIn(options: StoredOptions, retryInterval: number): number {
  if (options.retry_interval) return options.retry_interval;
  if (options.timeout_to_fail && options.timeout_to_fail < retryInterval) return options.timeout_to_fail;
  return retryInterval;
}
