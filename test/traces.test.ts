/**
 * One trace from the service's submit to its consumer: the traceparent of the SDK's submit is kept
 * with the message by the coordinator (another process), sent in the Kafka message's headers, and
 * continued by the consumer SDK. Spans of this process go to an in-memory exporter; the
 * coordinator's, when it runs an OpenTelemetry SDK, to a file (test/helpers/otel-spans-to-file.ts).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { consume, Msg, participant, Saga, type Consumer, type Participant } from '../sdk/index.js';
import { startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, waitForStatus } from './helpers/poll.js';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const brokers = inject('kafkaBrokers');
let pool: pg.Pool;
const running: RunningCoordinator[] = [];
const consumers: (Consumer | Participant<pg.PoolClient>)[] = [];

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  pool = new pg.Pool({ connectionString: await freshDatabase() });
});
afterAll(async () => {
  await Promise.all(consumers.map((c) => c.close()));
  for (const c of running) expect(await c.stop()).toBe(0);
  await pool?.end();
  await provider.shutdown();
  trace.disable();
  propagation.disable();
  context.disable();
});

const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

/** Sends one message to a fresh topic inside a "checkout" span; resolves with the consumer's span and the checkout span. */
async function sendAndConsume(coordinator: RunningCoordinator) {
  const topic = `traces-${randomUUID()}`;
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  await admin.disconnect();
  const consumerName = `traced-${randomUUID()}`;
  const seen: { traceId: string; spanId: string }[] = [];
  consumers.push(
    await consume<pg.PoolClient>(
      { kafka: { brokers: brokers.split(','), topic, groupId: `g-${randomUUID()}` } },
      async () => {
        // The handler runs inside the consumer's span.
        const active = trace.getActiveSpan()?.spanContext();
        if (active) seen.push({ traceId: active.traceId, spanId: active.spanId });
      },
      { db: pool, consumerName },
    ),
  );
  const gid = `trace-${randomUUID()}`;
  const checkout = await trace.getTracer('test-service').startActiveSpan('checkout', async (span) => {
    await new Msg(coordinator.dtm, gid).add(`kafka://default/${topic}`, { order: 1 }).submit();
    span.end();
    return span.spanContext();
  });
  await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
  await expect.poll(() => seen.length, { timeout: 30_000 }).toBe(1);
  // The span ends after the handler returned and the inbox committed: a moment after `seen` filled.
  const finished = () => exporter.getFinishedSpans().find((s) => s.name === `${consumerName} process`);
  await expect.poll(() => finished() !== undefined, { timeout: 10_000 }).toBe(true);
  const consumed = finished();
  expect(consumed).toBeDefined();
  expect(consumed!.spanContext()).toMatchObject(seen[0]!);
  return { gid, checkout, consumed: consumed! };
}

describe('traces', () => {
  it('continue from the submit through a coordinator without an OpenTelemetry SDK to the consumer', async () => {
    const coordinator = await startCoordinator({
      store: await freshDatabase(),
      env: { ...fastCoordinator, CONCORD_KAFKA_BROKERS: brokers },
    });
    running.push(coordinator);
    const { checkout, consumed } = await sendAndConsume(coordinator);
    // The coordinator passes the stored traceparent on unchanged: the consumer is the checkout's child.
    expect(consumed.spanContext().traceId).toBe(checkout.traceId);
    expect(parentOf(consumed)).toBe(checkout.spanId);
  });

  it('continue from a saga submit to the participant of its broker step', async () => {
    const coordinator = running[0]!;
    const topic = `traces-saga-${randomUUID()}`;
    const seen: { traceId: string; spanId: string }[] = [];
    const reserve = participant<pg.PoolClient>(topic, {
      source: { kafka: { brokers: brokers.split(','), groupId: `p-${randomUUID()}` } },
      db: pool,
    });
    reserve.on('reserve', async () => {
      const active = trace.getActiveSpan()?.spanContext();
      if (active) seen.push({ traceId: active.traceId, spanId: active.spanId });
    });
    await reserve.start();
    consumers.push(reserve);
    const gid = `trace-saga-${randomUUID()}`;
    const checkout = await trace.getTracer('test-service').startActiveSpan('checkout', async (span) => {
      await new Saga(coordinator.dtm, gid).add(`kafka://default/${topic}`, '', { sku: 'a' }, { command: 'reserve' }).submit();
      span.end();
      return span.spanContext();
    });
    await waitForStatus(coordinator.dtm, gid, 'succeed', 60_000);
    const ended = () => exporter.getFinishedSpans().find((s) => s.name === 'reserve process' && s.attributes['concord.gid'] === gid);
    // The participant's span may end just after its reply reached the coordinator.
    await expect.poll(() => ended() !== undefined, { timeout: 10_000 }).toBe(true);
    const handled = ended();
    expect(handled?.spanContext()).toMatchObject(seen[0]!);
    expect(handled!.spanContext().traceId).toBe(checkout.traceId);
    expect(parentOf(handled!)).toBe(checkout.spanId);
  });

  it('put the coordinator span of the delivery between the submit and the consumer when it runs an SDK', async () => {
    const spansFile = join(mkdtempSync(join(tmpdir(), 'concord-spans-')), 'spans.jsonl');
    const preload = fileURLToPath(new URL('../dist/test/helpers/otel-spans-to-file.js', import.meta.url));
    const coordinator = await startCoordinator({
      store: await freshDatabase(),
      env: { ...fastCoordinator, CONCORD_KAFKA_BROKERS: brokers, NODE_OPTIONS: `--import ${preload}`, CONCORD_TEST_SPANS_FILE: spansFile },
    });
    running.push(coordinator);
    const { gid, checkout, consumed } = await sendAndConsume(coordinator);
    const coordinatorSpans = existsSync(spansFile)
      ? readFileSync(spansFile, 'utf8')
          .trim()
          .split('\n')
          .map(
            (l) =>
              JSON.parse(l) as {
                name: string;
                traceId: string;
                spanId: string;
                parentSpanId?: string;
                attributes: Record<string, unknown>;
              },
          )
      : [];
    const delivery = coordinatorSpans.find((s) => s.attributes['concord.gid'] === gid);
    expect(delivery).toMatchObject({ name: 'msg action', traceId: checkout.traceId, parentSpanId: checkout.spanId });
    expect(consumed.spanContext().traceId).toBe(checkout.traceId);
    expect(parentOf(consumed)).toBe(delivery!.spanId);
  });

  it('the example setup (examples/tracing/otel-setup.ts) makes a coordinator print its delivery spans', async () => {
    const preload = fileURLToPath(new URL('../dist/examples/tracing/otel-setup.js', import.meta.url));
    const coordinator = await startCoordinator({
      store: await freshDatabase(),
      env: { ...fastCoordinator, CONCORD_KAFKA_BROKERS: brokers, CONCORD_LOG_LEVEL: 'silent', NODE_OPTIONS: `--import ${preload}` },
    });
    running.push(coordinator);
    const gid = `trace-example-${randomUUID()}`;
    const traceId = randomUUID().replaceAll('-', '');
    // Any caller can start the trace with a traceparent header of its own.
    const res = await fetch(`${coordinator.dtm}/submit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
      body: JSON.stringify({
        gid,
        trans_type: 'msg',
        steps: [{ action: `kafka://default/traces-example-${randomUUID()}` }],
        payloads: ['{}'],
      }),
    });
    expect(res.status).toBe(200);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    await expect.poll(() => coordinator.output(), { timeout: 10_000 }).toContain(traceId);
    expect(coordinator.output()).toContain("name: 'msg action'");
  });
});
