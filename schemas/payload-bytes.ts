/**
 * A branch's stored `data` as the bytes it goes out as. A transaction created over gRPC (protocol
 * 'grpc') carries protobuf bytes, stored as their base64; one created over HTTP stores its
 * payloads as the raw text they came as, sent as that text's UTF-8 bytes by every publisher.
 */

/** The payload of a branch of a transaction of `protocol`: bytes for gRPC-created ones, the text itself otherwise. */
export function payloadBytes(protocol: string, data: string): string | Buffer {
  return protocol === 'grpc' ? Buffer.from(data, 'base64') : data;
}

/** A payload's bytes, whichever form it has. */
export function asBytes(payload: string | Buffer): Buffer {
  return typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
}
