/**
 * Preloaded into a coordinator under test (NODE_OPTIONS=--import …): an OpenTelemetry SDK whose
 * spans are appended as JSON lines to CONCORD_TEST_SPANS_FILE, so a test reads another process's spans.
 */
import { appendFileSync } from 'node:fs';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { ExportResultCode, W3CTraceContextPropagator, type ExportResult } from '@opentelemetry/core';
import { BasicTracerProvider, SimpleSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';

const file = process.env.CONCORD_TEST_SPANS_FILE ?? '/dev/null';

const exporter: SpanExporter = {
  export(spans: ReadableSpan[], done: (result: ExportResult) => void) {
    for (const s of spans) {
      const line = {
        name: s.name,
        traceId: s.spanContext().traceId,
        spanId: s.spanContext().spanId,
        parentSpanId: s.parentSpanContext?.spanId,
        attributes: s.attributes,
      };
      appendFileSync(file, `${JSON.stringify(line)}\n`);
    }
    done({ code: ExportResultCode.SUCCESS });
  },
  shutdown: async () => undefined,
};

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(new W3CTraceContextPropagator());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
