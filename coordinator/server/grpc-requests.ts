/**
 * gRPC requests (schemas/grpc/dtmgimp.proto, as proto-loader hands them over) turned into the
 * HTTP API's request shapes and validated by the same zod schemas, so every check lives in one
 * place. Payloads are bytes over gRPC and may hold NUL, which text columns refuse: a transaction
 * made here is stored with protocol 'grpc' and each payload as its base64 (the engine sends the
 * bytes again). A refusal names the gRPC field (`BinPayloads.1`, `TransOptions.RetryInterval`).
 */
import type { z } from 'zod';
import {
  subscribeQuerySchema,
  topicParamsSchema,
  transRequestSchema,
  unsubscribeQuerySchema,
  type TransRequest,
} from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import { registerBranchSchema, type RegisterBranchRequest } from '../../schemas/register-branch.js';
import { findTextProblem } from '../../schemas/text.js';
import type { WorkflowReply } from '../../schemas/workflow.js';

/** DtmRequest as proto-loader decodes it (keepCase, longs as numbers, defaults filled in). */
export interface GrpcDtmRequest {
  Gid: string;
  TransType: string;
  TransOptions: GrpcTransOptions | null;
  CustomedData: string;
  BinPayloads: Buffer[];
  QueryPrepared: string;
  Steps: string;
  ReqExtra: Record<string, string>;
  RollbackReason: string;
}

interface GrpcTransOptions {
  WaitResult: boolean;
  TimeoutToFail: number;
  RetryInterval: number;
  BranchHeaders: Record<string, string>;
  RequestTimeout: number;
  RetryLimit: number;
}

export interface GrpcBranchRequest {
  Gid: string;
  TransType: string;
  BranchID: string;
  Op: string;
  Data: Record<string, string>;
  BusiPayload: Buffer;
}

export interface GrpcTopicRequest {
  Topic: string;
  URL: string;
  Remark: string;
}

export interface GrpcProgressesReply {
  Transaction: { Gid: string; Status: string; RollbackReason: string; Result: string };
  Progresses: { Status: string; BinData: Buffer; BranchID: string; Op: string }[];
}

/** The gRPC name of each HTTP field, for messages that name what to fix. */
const grpcNames: Record<string, string> = {
  gid: 'Gid',
  trans_type: 'TransType',
  custom_data: 'CustomedData',
  payloads: 'BinPayloads',
  query_prepared: 'QueryPrepared',
  steps: 'Steps',
  req_extra: 'ReqExtra',
  rollback_reason: 'RollbackReason',
  wait_result: 'TransOptions.WaitResult',
  timeout_to_fail: 'TransOptions.TimeoutToFail',
  retry_interval: 'TransOptions.RetryInterval',
  branch_headers: 'TransOptions.BranchHeaders',
  request_timeout: 'TransOptions.RequestTimeout',
  retry_limit: 'TransOptions.RetryLimit',
  branch_id: 'BranchID',
  op: 'Op',
  data: 'BusiPayload',
  topic: 'Topic',
  topicName: 'Topic',
  url: 'URL',
  remark: 'Remark',
};

/** An HTTP field path (`steps.0.action`) in gRPC terms (`Steps.0.action`); keys of Data keep their name. */
export function grpcField(path: string): string {
  const [head = '', ...rest] = path.split('.');
  return [grpcNames[head] ?? head, ...rest].join('.');
}

const invalid = (field: string, problem: string) => new ConcordError('INVALID_REQUEST', `${field}: ${problem}`, { field });

/** Validates an HTTP-shaped request with its HTTP schema; the first problem becomes a 400 naming the gRPC field. */
function parsed<S extends z.ZodType>(schema: S, shape: Record<string, unknown>): z.output<S> {
  const text = findTextProblem(shape);
  if (text) throw invalid(grpcField(text.field) || 'request', text.problem);
  const result = schema.safeParse(shape);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw invalid(grpcField(issue?.path.join('.') ?? '') || 'request', issue?.message ?? 'invalid');
}

/** proto3 cannot tell "unset" from "empty": an empty string or map is unset, as an HTTP client would leave it out. */
const unset = <T>(value: T | '' | null | undefined): T | undefined =>
  value === '' || value === null || value === undefined || (typeof value === 'object' && Object.keys(value).length === 0)
    ? undefined
    : value;

const base64 = (bytes: Buffer | Uint8Array) => Buffer.from(bytes).toString('base64');

/** A DtmRequest as the body of prepare, submit or abort, validated; its payloads become base64 and its protocol 'grpc'. */
export function transRequestOf(req: GrpcDtmRequest): TransRequest {
  let steps: unknown;
  if (req.Steps !== '') {
    try {
      steps = JSON.parse(req.Steps);
    } catch {
      throw invalid('Steps', 'must be JSON text: an array of step objects, such as [{"action":"http://svc/TransIn"}]');
    }
  }
  const o = req.TransOptions;
  const shape = {
    gid: req.Gid,
    trans_type: req.TransType,
    steps,
    payloads: req.BinPayloads.length > 0 ? req.BinPayloads.map(base64) : undefined,
    query_prepared: unset(req.QueryPrepared),
    custom_data: unset(req.CustomedData),
    rollback_reason: unset(req.RollbackReason),
    req_extra: unset(req.ReqExtra),
    wait_result: o?.WaitResult,
    timeout_to_fail: o?.TimeoutToFail,
    retry_interval: o?.RetryInterval,
    branch_headers: unset(o?.BranchHeaders),
    request_timeout: o?.RequestTimeout,
    retry_limit: o?.RetryLimit,
  };
  // The HTTP schema takes only protocol http (the HTTP API calls no gRPC branch): grpc is set after validation.
  return { ...parsed(transRequestSchema, shape), protocol: 'grpc' };
}

/** A DtmBranchRequest as the body of registerBranch: Data's keys (confirm, cancel, url, op, status) beside the ids, BusiPayload as base64. */
export function registrationOf(req: GrpcBranchRequest): RegisterBranchRequest {
  const shape: Record<string, unknown> = {
    ...req.Data,
    gid: req.Gid,
    trans_type: req.TransType,
    branch_id: req.BranchID,
    data: base64(req.BusiPayload),
  };
  // DTM reads a workflow step's op from Data; the Op field is taken when Data has none.
  if (shape.op === undefined && req.Op !== '') shape.op = req.Op;
  return parsed(registerBranchSchema, shape);
}

export function subscriptionOf(req: GrpcTopicRequest): z.output<typeof subscribeQuerySchema> {
  return parsed(subscribeQuerySchema, { topic: req.Topic, url: req.URL, remark: unset(req.Remark) });
}

export function unsubscriptionOf(req: GrpcTopicRequest): z.output<typeof unsubscribeQuerySchema> {
  return parsed(unsubscribeQuerySchema, { topic: req.Topic, url: req.URL });
}

/** DeleteTopic: only the topic's name, as the path of DELETE /topic/:topicName. */
export function topicOf(req: GrpcTopicRequest): string {
  return parsed(topicParamsSchema, { topicName: req.Topic }).topicName;
}

/**
 * prepareWorkflow's reply in protobuf terms. A gRPC workflow's step records are stored as base64
 * (registrationOf), and the HTTP reply adds a base64 layer of its own: both come off here.
 */
export function progressesReplyOf(reply: WorkflowReply): GrpcProgressesReply {
  const t = reply.transaction;
  return {
    Transaction: { Gid: t.gid, Status: t.status, RollbackReason: t.rollback_reason, Result: t.result },
    Progresses: reply.progresses.map((p) => ({
      Status: p.status,
      BranchID: p.branch_id,
      Op: p.op,
      BinData: Buffer.from(Buffer.from(p.bin_data, 'base64').toString(), 'base64'),
    })),
  };
}
