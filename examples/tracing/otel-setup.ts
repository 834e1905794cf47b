/**
 * An OpenTelemetry setup to preload into a coordinator (or a service):
 *
 *   npm install @opentelemetry/api @opentelemetry/sdk-trace-base @opentelemetry/core @opentelemetry/context-async-hooks
 *   NODE_OPTIONS="--import ./dist/examples/tracing/otel-setup.js" concord start …
 *
 * It prints each span to stdout; put your exporter (OTLP, Jaeger, …) in place of ConsoleSpanExporter,
 * and a BatchSpanProcessor in place of the simple one in production.
 */
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, ConsoleSpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(new W3CTraceContextPropagator());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(new ConsoleSpanExporter())] }));
