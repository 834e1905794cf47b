/**
 * gRPC adapter (@grpc/grpc-js), the twin of the HTTP ones: the coordinator calls a branch written
 * as a gRPC method (`host:port/package.Service/Method`) with DTM's coordinates as dtm-* metadata
 * and the branch's bytes as the request. The handler gets the same context as over HTTP (the
 * barrier, the query DTM's metadata spells, the body: here the raw request bytes, for the
 * service's own protobuf library to decode), and its outcome becomes the status code DTM reads:
 * OK, Aborted for BranchFailure, FailedPrecondition for BranchOngoing, Internal for anything else
 * (retried). The answer is empty bytes, a valid encoding of any proto3 message (google.protobuf.Empty
 * included). Structural types keep grpc-js out of the SDK's runtime dependencies.
 */
import { BranchBarrier, type BarrierSource } from '../barrier.js';
import { answerBranch, type BranchHandler } from './answer-branch.js';

/** What the SDK reads of grpc-js's Metadata. */
export interface GrpcMetadataLike {
  getMap(): Record<string, string | Buffer>;
}

/** What the SDK reads of a grpc-js unary call. */
export interface GrpcUnaryCallLike {
  request: Buffer;
  metadata: GrpcMetadataLike;
}

/** A grpc-js unary handler with raw bytes both ways. */
export type GrpcUnaryHandler = (call: GrpcUnaryCallLike, callback: (error: GrpcStatusError | null, reply?: Buffer) => void) => void;

/** The error grpc-js sends as a call's status. */
export type GrpcStatusError = Error & { code: number; details: string };

/** google.rpc.Code numbers of each HTTP status answerBranch gives. */
const codeOfStatus: Record<number, number> = { 409: 10 /* Aborted */, 425: 9 /* FailedPrecondition */, 400: 3 /* InvalidArgument */ };
const internal = 13;

/** DTM's coordinates from the call's metadata (dtm-gid, dtm-trans_type, dtm-branch_id, dtm-op), as the query an HTTP branch gets. */
export function dtmQueryFromGrpc(metadata: GrpcMetadataLike): Record<string, string> {
  const map = metadata.getMap();
  const query: Record<string, string> = {};
  for (const name of ['gid', 'trans_type', 'branch_id', 'op']) {
    const value = map[`dtm-${name}`];
    if (value !== undefined) query[name] = value.toString();
  }
  return query;
}

/** The barrier of a gRPC branch call (DTM's BarrierFromGrpc); a missing coordinate throws a 400-style error naming it. */
export function barrierFromGrpc(metadata: GrpcMetadataLike): BranchBarrier {
  return BranchBarrier.from(dtmQueryFromGrpc(metadata));
}

/** A gRPC branch handler: the HTTP adapters' context, with `body` the request's bytes and every metadata entry as text (branch headers arrive there). */
export type GrpcBranchHandler = (ctx: Parameters<BranchHandler<Buffer>>[0] & { metadata: Record<string, string> }) => Promise<unknown>;

/** Wraps a branch handler as a grpc-js unary handler. */
export function grpcBranch(handler: GrpcBranchHandler): GrpcUnaryHandler {
  return (call, callback) => {
    const metadata = textMetadata(call.metadata);
    void answerBranch<Buffer>(dtmQueryFromGrpc(call.metadata), call.request, (ctx) => handler({ ...ctx, metadata })).then(
      ({ status, body }) => {
        if (status === 200) return callback(null, Buffer.alloc(0));
        // A call without DTM's coordinates names the metadata entry it lacks, not a query parameter.
        const details = (body.message ?? body.dtm_result ?? `status ${status}`).replace(/^query parameter (\w+)/, 'metadata dtm-$1');
        callback(Object.assign(new Error(details), { code: codeOfStatus[status] ?? internal, details }));
      },
    );
  };
}

/** A ready query-prepared method: answers the coordinator's check-back of a two-phase message from the barrier table (Aborted when rolled back). */
export function grpcQueryPrepared(db: BarrierSource): GrpcUnaryHandler {
  return grpcBranch(async ({ barrier }) => BranchBarrier.queryPrepared(db, barrier.call.gid));
}

/**
 * A grpc-js service of raw-bytes methods, for `server.addService(definition, implementation)`:
 * `grpcBranchService('busi.Busi', { TransIn: grpcBranch(...), QueryPrepared: grpcQueryPrepared(pool) })`
 * serves /busi.Busi/TransIn and /busi.Busi/QueryPrepared without a .proto.
 */
export function grpcBranchService(service: string, methods: Record<string, GrpcUnaryHandler>) {
  const raw = (bytes: Buffer) => bytes;
  const definition = Object.fromEntries(
    Object.keys(methods).map((name) => [
      name,
      {
        path: `/${service}/${name}`,
        requestStream: false as const,
        responseStream: false as const,
        requestSerialize: raw,
        requestDeserialize: raw,
        responseSerialize: raw,
        responseDeserialize: raw,
        originalName: name,
      },
    ]),
  );
  return { definition, implementation: methods };
}

function textMetadata(metadata: GrpcMetadataLike): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata.getMap()).map(([k, v]) => [k, v.toString()]));
}
