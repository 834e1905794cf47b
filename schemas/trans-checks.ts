/**
 * Checks of a transaction request beyond each field's own shape, per transaction type and per
 * step. transRequestSchema runs them, so prepare, submit and abort all refuse a request that could
 * never be delivered ("poison") with a 400 naming the field, before anything is stored. Checks
 * that need the running coordinator (which broker connections exist) stay in the engines.
 */
import { z } from 'zod';
import { maxDurationSeconds } from './durations.js';
import { headersProblem } from './http-headers.js';
import { sagaCustomDataSchema, sagaStepPolicySchema } from './saga.js';
import { textProblem } from './text.js';
import { isBrokerUrl } from './broker-messages.js';
import { grpcMetadataProblem, isGrpcTarget, parseGrpcTarget } from './grpc-target.js';

/** Reports one problem at a path of the request. */
export type Report = (path: (string | number)[], message: string) => void;

/** Parsed `custom_data` of a message: `{"delay": seconds}`. */
export const msgCustomDataSchema = z.object({ delay: z.number().min(0).max(maxDurationSeconds).optional() });

const stepHeadersSchema = z.record(z.string(), z.string());

/** A step's "headers" (JSON text of a string map), or undefined when the text is not one. */
export function parseStepHeaders(text: string): Record<string, string> | undefined {
  try {
    const parsed = stepHeadersSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** JSON text, or undefined when it is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

interface Checked {
  trans_type: string;
  steps?: Record<string, string>[] | undefined;
  custom_data?: string | undefined;
  query_prepared?: string | undefined;
  branch_headers?: Record<string, string> | undefined;
}

export function checkTransRequest(req: Checked, report: Report): void {
  // Headers that go to every branch must suit gRPC metadata too when some branch is called over gRPC.
  const reachesGrpc = [req.query_prepared, ...(req.steps ?? []).flatMap((s) => [s.action, s.compensate])].some(
    (url) => url !== undefined && isGrpcTarget(url),
  );
  const headers =
    req.branch_headers && (headersProblem(req.branch_headers) ?? (reachesGrpc ? grpcMetadataProblem(req.branch_headers) : undefined));
  if (headers) report(['branch_headers'], headers);
  if (req.query_prepared !== undefined && req.query_prepared !== '') {
    const problem = checkBackProblem(req.query_prepared);
    if (problem) report(['query_prepared'], problem);
  }
  (req.steps ?? []).forEach((step, i) => checkStep(req.trans_type, step, i, report));
  if (req.custom_data !== undefined && req.custom_data !== '')
    checkCustomData(req.trans_type, req.custom_data, (req.steps ?? []).length, report);
}

function checkStep(type: string, step: Record<string, string>, i: number, report: Report): void {
  const at = ['steps', i];
  if ((type === 'msg' || type === 'saga') && step.action === undefined) {
    const keys = Object.keys(step);
    report([...at, 'action'], `a step needs an "action" URL${keys.length ? ` (it has ${keys.map((k) => `"${k}"`).join(', ')})` : ''}`);
  } else if (type === 'msg' && step.action === '') {
    report([...at, 'action'], 'a message step needs a non-empty "action" URL');
  }
  if (step.headers !== undefined && step.headers !== '') {
    const headers = parseStepHeaders(step.headers);
    // The headers go into jsonb (no NUL, no lone surrogate) and, unless every URL of the step is a broker, into HTTP calls.
    const problem =
      headers === undefined
        ? 'headers must be JSON text of a string map'
        : reachesHttp(step)
          ? (headersProblem(headers) ?? (stepReachesGrpc(step) ? grpcMetadataProblem(headers) : undefined))
          : Object.entries(headers).flatMap(([k, v]) => [textProblem(k), textProblem(v)].filter(Boolean))[0];
    if (problem) report([...at, 'headers'], problem);
  }
  if (type === 'saga') {
    const parsed = sagaStepPolicySchema.safeParse(step);
    for (const issue of parsed.error?.issues.slice(0, 1) ?? []) report([...at, ...issue.path.map(String)], issue.message);
  }
}

function checkCustomData(type: string, text: string, steps: number, report: Report): void {
  const json = parseJson(text);
  if (json === undefined) return report(['custom_data'], 'custom_data must be JSON text');
  const schema = type === 'msg' ? msgCustomDataSchema : type === 'saga' ? sagaCustomDataSchema : undefined;
  const parsed = schema?.safeParse(json);
  const issue = parsed?.error?.issues[0];
  if (issue) return report(['custom_data'], `custom_data${issue.path.length ? '.' + issue.path.join('.') : ''}: ${issue.message}`);
  const orders = type === 'saga' ? sagaCustomDataSchema.parse(json).orders : undefined;
  const problem = orders && ordersProblem(orders, steps);
  if (problem) report(['custom_data'], `custom_data.orders: ${problem}`);
}

/** Orders name existing steps, never the step itself, and have no cycle (it would never start). */
function ordersProblem(orders: Record<string, number[]>, count: number): string | undefined {
  for (const [key, deps] of Object.entries(orders)) {
    const i = Number(key);
    if (i >= count) return `step ${i} does not exist (the saga has ${count} steps)`;
    for (const j of deps) {
      if (j >= count) return `step ${i} waits for step ${j}, which does not exist`;
      if (j === i) return `step ${i} waits for itself`;
    }
  }
  const state = new Map<number, 'visiting' | 'done'>();
  const cycleThrough = (i: number): number | undefined => {
    if (state.get(i) === 'done') return undefined;
    if (state.get(i) === 'visiting') return i;
    state.set(i, 'visiting');
    for (const j of orders[String(i)] ?? []) {
      const found = cycleThrough(j);
      if (found !== undefined) return found;
    }
    state.set(i, 'done');
    return undefined;
  };
  for (let i = 0; i < count; i++) {
    const found = cycleThrough(i);
    if (found !== undefined) return `the steps wait for each other in a cycle through step ${found}`;
  }
  return undefined;
}

/** A step calls HTTP unless each of its URLs is a broker destination (a topic's subscribers may be HTTP). */
function reachesHttp(step: Record<string, string>): boolean {
  return [step.action, step.compensate].some((url) => url !== undefined && url !== '' && !isBrokerUrl(url));
}

function stepReachesGrpc(step: Record<string, string>): boolean {
  return [step.action, step.compensate].some((url) => url !== undefined && isGrpcTarget(url));
}

/** A check-back is called over HTTP(S) or gRPC (DTM's host:port/package.Service/Method); it is never a broker. */
function checkBackProblem(text: string): string | undefined {
  if (isGrpcTarget(text)) {
    const target = parseGrpcTarget(text);
    return typeof target === 'string' ? `query_prepared: ${target}` : undefined;
  }
  if (URL.canParse(text) && ['http:', 'https:'].includes(new URL(text).protocol)) return undefined;
  return 'query_prepared must be an http:// or https:// URL, or a gRPC target host:port/package.Service/Method';
}
