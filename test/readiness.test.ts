/**
 * Readiness that notices stalled delivery and broker connections that are down, with the gauges
 * and alerts of each: a real coordinator, a real HTTP participant, real Kafka and RabbitMQ.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type Server } from 'node:http';
import { connect as connectTcp, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { connect } from 'amqplib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Msg } from '../sdk/index.js';
import { freePort, startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, waitForStatus } from './helpers/poll.js';
import { receiver } from './helpers/outbox.js';

/** An HTTP participant that answers 503 until it is told to come up. */
let participant: { server: Server; url: string; up: boolean };
/** The alert webhook: every body it received. */
let alerts: { server: Server; url: string; received: Record<string, unknown>[] };

beforeAll(async () => {
  const p = { up: false } as { server: Server; url: string; up: boolean };
  p.server = createHttpServer((req, res) => {
    req.resume();
    res.writeHead(p.up ? 200 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ dtm_result: p.up ? 'SUCCESS' : 'down' }));
  }).listen(0, '127.0.0.1');
  await once(p.server, 'listening');
  p.url = `http://127.0.0.1:${(p.server.address() as AddressInfo).port}`;
  participant = p;

  const received: Record<string, unknown>[] = [];
  const server = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      received.push(JSON.parse(body) as Record<string, unknown>);
      res.end();
    });
  }).listen(0, '127.0.0.1');
  await once(server, 'listening');
  alerts = { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/alert`, received };
});
afterAll(() => {
  participant?.server.close();
  alerts?.server.close();
});

async function health(coordinator: RunningCoordinator): Promise<{ status: number; message: string }> {
  const res = await fetch(`${coordinator.url}/api/health`);
  const body = (await res.json()) as { message?: string };
  return { status: res.status, message: body.message ?? '' };
}

/** The value of one sample in /api/metrics, e.g. metric('concord_broker_connection_up{kind="kafka",connection="gone"}'). */
async function metric(coordinator: RunningCoordinator, sample: string): Promise<number | undefined> {
  const text = await (await fetch(`${coordinator.url}/api/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}

describe('readiness: stalled delivery', () => {
  let coordinator: RunningCoordinator;
  beforeAll(async () => {
    coordinator = await startCoordinator({
      store: await freshDatabase(),
      env: { ...fastCoordinator, CONCORD_STALLED_AFTER: '2', CONCORD_ALERT_WEBHOOK: alerts.url },
    });
  });
  afterAll(async () => {
    expect(await coordinator?.stop()).toBe(0);
  });

  it('fails while a branch stays down past stalledAfter, alerts, and recovers when it comes back', async () => {
    expect((await health(coordinator)).status).toBe(200);
    const gid = `h-${randomUUID()}`;
    await new Msg(coordinator.dtm, gid).add(`${participant.url}/TransIn`, { amount: 1 }).submit();

    await expect.poll(() => health(coordinator), { timeout: 30_000, interval: 200 }).toMatchObject({ status: 503 });
    const down = await health(coordinator);
    expect(down.message).toContain(`transaction ${gid}`);
    expect(down.message).toContain('over stalledAfter 2 s');
    expect(await metric(coordinator, 'concord_oldest_failing_seconds')).toBeGreaterThan(2);
    expect(await metric(coordinator, 'concord_ready')).toBe(0);
    // Liveness does not care.
    expect((await fetch(`${coordinator.url}/api/ping`)).status).toBe(200);
    await expect
      .poll(() => alerts.received.find((a) => a.kind === 'stalled' && a.resolved === false), { timeout: 20_000 })
      .toMatchObject({ subject: 'failing', node: expect.any(String), time: expect.any(String) });
    // Retries past alertRetryLimit (3) are alerted per transaction, with its type.
    await expect
      .poll(() => alerts.received.find((a) => a.kind === 'retries' && a.gid === gid), { timeout: 20_000 })
      .toMatchObject({ trans_type: 'msg', branch: '01', status: 'submitted' });

    participant.up = true;
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    await expect.poll(async () => (await health(coordinator)).status, { timeout: 20_000, interval: 200 }).toBe(200);
    expect(await metric(coordinator, 'concord_oldest_failing_seconds')).toBe(0);
    await expect
      .poll(() => alerts.received.find((a) => a.kind === 'stalled' && a.resolved === true), { timeout: 20_000 })
      .toMatchObject({ subject: 'failing' });
  });
});

describe('readiness: broker connections', () => {
  let coordinator: RunningCoordinator;
  /** A TCP proxy in front of RabbitMQ that can be cut and restored on the same port. */
  let proxy: { port: number; server?: TcpServer; sockets: Set<Socket>; open(): Promise<void>; cut(): Promise<void> };

  beforeAll(async () => {
    const target = new URL(inject('amqpUrl'));
    const sockets = new Set<Socket>();
    proxy = {
      port: await freePort(),
      sockets,
      async open() {
        this.server = createTcpServer((client) => {
          const upstream = connectTcp(Number(target.port), target.hostname);
          for (const s of [client, upstream]) {
            sockets.add(s);
            s.on('close', () => sockets.delete(s));
            s.on('error', () => undefined);
          }
          client.pipe(upstream).pipe(client);
        }).listen(this.port, '127.0.0.1');
        await once(this.server, 'listening');
      },
      async cut() {
        const closed = new Promise((resolve) => this.server?.close(resolve));
        for (const s of sockets) s.destroy();
        await closed;
      },
    };
    await proxy.open();
    const proxied = new URL(inject('amqpUrl'));
    proxied.hostname = '127.0.0.1';
    proxied.port = String(proxy.port);
    coordinator = await startCoordinator({
      store: await freshDatabase(),
      env: {
        ...fastCoordinator,
        CONCORD_KAFKA_BROKERS: inject('kafkaBrokers'),
        CONCORD_ALERT_WEBHOOK: alerts.url,
        CONCORD_CONNECTIONS: JSON.stringify({
          // Nothing listens there: the broker is "stopped".
          gone: { kind: 'kafka', brokers: [`127.0.0.1:${await freePort()}`] },
          flaky: { kind: 'rabbitmq', url: proxied.toString() },
        }),
      },
    });
  });
  afterAll(async () => {
    expect(await coordinator?.stop()).toBe(0);
    await proxy?.cut();
  });

  it('fails when a Kafka connection in use cannot reach its broker, and not before it is used', async () => {
    // Configured but unused: never opened just for the check.
    expect((await health(coordinator)).status).toBe(200);
    const ok = `k-${randomUUID()}`;
    await new Msg(coordinator.dtm, ok).add(`kafka://default/readiness-${randomUUID()}`, { n: 1 }).submit();
    await waitForStatus(coordinator.dtm, ok, 'succeed', 60_000);
    expect(await metric(coordinator, 'concord_broker_connection_up{kind="kafka",connection="default"}')).toBe(1);
    expect((await health(coordinator)).status).toBe(200);

    const stuck = `k-${randomUUID()}`;
    await new Msg(coordinator.dtm, stuck).add('kafka://gone/readiness', { n: 1 }).submit();
    await expect
      .poll(async () => (await health(coordinator)).message, { timeout: 60_000, interval: 250 })
      .toContain('kafka connection gone is down');
    expect((await health(coordinator)).status).toBe(503);
    expect(await metric(coordinator, 'concord_broker_connection_up{kind="kafka",connection="gone"}')).toBe(0);
    await expect
      .poll(() => alerts.received.find((a) => a.kind === 'broker_down' && a.subject === 'kafka/gone'), { timeout: 20_000 })
      .toMatchObject({ resolved: false });
    // The stuck message keeps retrying, so this connection stays down: the next test looks for its own reason only.
  });

  it('fails while a RabbitMQ connection is cut and recovers when the broker is back', async () => {
    const queue = `readiness-${randomUUID()}`;
    const admin = await connect(inject('amqpUrl'));
    const channel = await admin.createChannel();
    await channel.assertQueue(queue, { durable: false, autoDelete: false });
    try {
      const first = `r-${randomUUID()}`;
      await new Msg(coordinator.dtm, first).add(`rabbitmq://flaky//${queue}`, { n: 1 }).submit();
      await waitForStatus(coordinator.dtm, first, 'succeed', 30_000);
      expect(await metric(coordinator, 'concord_broker_connection_up{kind="rabbitmq",connection="flaky"}')).toBe(1);
      expect((await health(coordinator)).message).not.toContain('rabbitmq');

      await proxy.cut();
      await expect
        .poll(async () => (await health(coordinator)).message, { timeout: 20_000, interval: 200 })
        .toContain('rabbitmq connection flaky is down');
      expect(await metric(coordinator, 'concord_broker_connection_up{kind="rabbitmq",connection="flaky"}')).toBe(0);
      await expect
        .poll(() => alerts.received.find((a) => a.kind === 'broker_down' && a.subject === 'rabbitmq/flaky'), { timeout: 20_000 })
        .toMatchObject({ resolved: false, message: expect.stringContaining('rabbitmq connection flaky is down') });

      // Back: the coordinator reconnects by itself, though nothing is sent to it meanwhile.
      await proxy.open();
      await expect.poll(async () => (await health(coordinator)).message, { timeout: 20_000, interval: 200 }).not.toContain('rabbitmq');
      expect(await metric(coordinator, 'concord_broker_connection_up{kind="rabbitmq",connection="flaky"}')).toBe(1);
      const second = `r-${randomUUID()}`;
      await new Msg(coordinator.dtm, second).add(`rabbitmq://flaky//${queue}`, { n: 2 }).submit();
      await waitForStatus(coordinator.dtm, second, 'succeed', 30_000);
      await expect
        .poll(() => alerts.received.find((a) => a.kind === 'broker_down' && a.subject === 'rabbitmq/flaky' && a.resolved === true), {
          timeout: 20_000,
        })
        .toBeDefined();
    } finally {
      await channel.deleteQueue(queue);
      await admin.close();
    }
  });
});

describe('alerts: outbox drains', () => {
  it('alerts when a drain lags past its lagThreshold, when it catches up, and when rows are parked', async () => {
    const outboxUrl = await freshDatabase();
    const pool = new pg.Pool({ connectionString: outboxUrl });
    const refusing = await receiver(() => true);
    await pool.query(`create table lag_outbox (id bigserial primary key, body text not null, created_at timestamptz not null default now(), done boolean not null default false);
      create table refused_outbox (id bigserial primary key, body text not null, published_at timestamptz);
      insert into refused_outbox (body) values ('first'), ('second');`);
    const coordinator = await startCoordinator({
      store: await freshDatabase(),
      env: {
        ...fastCoordinator,
        CONCORD_ALERT_WEBHOOK: alerts.url,
        CONCORD_OUTBOXES: JSON.stringify([
          {
            database: outboxUrl,
            table: 'lag_outbox',
            destination: `http://127.0.0.1:${await freePort()}/nobody`,
            payloadColumn: 'body',
            createdAtColumn: 'created_at',
            published: 'flag',
            publishedColumn: 'done',
            lagThreshold: 60,
          },
          {
            database: outboxUrl,
            table: 'refused_outbox',
            name: 'refused',
            destination: refusing.url,
            payloadColumn: 'body',
            published: 'flag',
            publishedColumn: 'published_at',
          },
        ]),
      },
    });
    try {
      await expect
        .poll(() => alerts.received.find((a) => a.kind === 'parked' && a.subject === 'refused'), { timeout: 30_000 })
        .toMatchObject({ resolved: false, message: expect.stringContaining('2 row(s) parked') });

      // A row an hour old that cannot be delivered; then someone publishes it by hand.
      await pool.query(`insert into lag_outbox (body, created_at) values ('late', now() - interval '1 hour')`);
      await expect
        .poll(() => alerts.received.find((a) => a.kind === 'drain_lag' && a.resolved === false), { timeout: 30_000 })
        .toMatchObject({ subject: 'outbox lag_outbox', message: expect.stringContaining('over lagThreshold 60 s') });
      expect((await health(coordinator)).status).toBe(503);
      await pool.query(`update lag_outbox set done = true`);
      await expect
        .poll(() => alerts.received.find((a) => a.kind === 'drain_lag' && a.resolved === true), { timeout: 30_000 })
        .toMatchObject({ subject: 'outbox lag_outbox' });
      expect(await metric(coordinator, 'concord_alerts_total{kind="parked"}')).toBe(1);
    } finally {
      expect(await coordinator.stop()).toBe(0);
      refusing.server.close();
      await pool.end();
    }
  });
});
