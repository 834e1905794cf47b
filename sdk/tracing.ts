/**
 * Runs a handler in an OpenTelemetry span, child of the trace context a message carries
 * (`traceparent`): no-op without an SDK registered by the service, which owns the exporter.
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, propagation, trace, type Attributes } from '@opentelemetry/api';

const tracer = trace.getTracer('concord-sdk');

export function inMessageSpan<T>(name: string, headers: Record<string, string>, attributes: Attributes, run: () => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, { kind: SpanKind.CONSUMER, attributes }, propagation.extract(ROOT_CONTEXT, headers), async (span) => {
    try {
      return await run();
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}
