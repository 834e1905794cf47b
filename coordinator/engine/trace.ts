/**
 * OpenTelemetry spans of branch calls and broker messages, through @opentelemetry/api only: with
 * no SDK registered (the default) they cost next to nothing and the stored traceparent goes out
 * as it came in; with one registered (node --import your-otel-setup.js), each delivery is a span,
 * child of the context stored with the transaction, and its own context goes out instead.
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, propagation, trace } from '@opentelemetry/api';
import type { Delivery, DeliveryResult } from '../../relay/publisher.js';
import { isBrokerUrl } from '../../schemas/broker-messages.js';

const tracer = trace.getTracer('concord');

export async function traced(delivery: Delivery, deliver: (d: Delivery) => Promise<DeliveryResult>): Promise<DeliveryResult> {
  const parent = propagation.extract(ROOT_CONTEXT, delivery.headers);
  const { gid, trans_type, branch_id, op } = delivery.params;
  const broker = isBrokerUrl(delivery.url);
  const span = tracer.startSpan(
    `${trans_type ?? 'concord'} ${op ?? 'deliver'}`,
    {
      kind: broker ? SpanKind.PRODUCER : SpanKind.CLIENT,
      attributes: { 'concord.gid': gid, 'concord.trans_type': trans_type, 'concord.branch_id': branch_id, 'concord.op': op },
    },
    parent,
  );
  if (!span.isRecording()) return deliver(delivery);
  const headers = { ...delivery.headers };
  propagation.inject(trace.setSpan(parent, span), headers);
  try {
    const answer = await deliver({ ...delivery, headers });
    if (answer.outcome !== 'SUCCESS') span.setStatus({ code: SpanStatusCode.ERROR, message: `${answer.outcome}: ${answer.detail}` });
    return answer;
  } finally {
    span.end();
  }
}
