/**
 * W3C trace context of a prepare or submit, kept with the transaction: the request's `traceparent`
 * (and `tracestate`) join its branch_headers, which are stored and sent with every branch call and
 * broker message. No new column: a trace started before the local commit thus reaches the
 * consumer, through any number of retries and coordinators.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { TransRequest } from '../../schemas/dtm.js';

const traceparentPattern = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
/** W3C: list members of printable ASCII, at most 512 characters in all. */
const tracestatePattern = /^[\x20-\x7e]{1,512}$/;

/** Adds the request's trace headers to the body's branch_headers, unless the caller set them there itself. */
export function keepTraceContext(requestHeaders: IncomingHttpHeaders, body: TransRequest): void {
  const { traceparent, tracestate } = requestHeaders;
  if (typeof traceparent !== 'string' || !traceparentPattern.test(traceparent)) return;
  const headers = { ...body.branch_headers };
  if (Object.keys(headers).some((k) => k.toLowerCase() === 'traceparent')) return;
  headers.traceparent = traceparent;
  if (typeof tracestate === 'string' && tracestatePattern.test(tracestate)) headers.tracestate = tracestate;
  body.branch_headers = headers;
}
