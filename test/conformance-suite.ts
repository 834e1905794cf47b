/**
 * One conformance suite for every destination kind — Kafka, RabbitMQ and HTTP — against the real
 * service: order per key, a broker (or endpoint) outage, a coordinator killed with SIGKILL, a
 * consumer killed mid-handler, a poison message, and (RabbitMQ) an unroutable message.
 *
 * Each adapter gives a fresh destination, a receiver that writes one effect row per message in its
 * own database inside the handler's transaction (Kafka and RabbitMQ: `consume()` from the SDK; HTTP:
 * a Fastify endpoint with `fastifyBranch` and the barrier), the raw arrivals in the order they came,
 * and a way to halt and restart the broker or endpoint on the same port. The brokers are dedicated
 * instances started here, so that halting them never disturbs the run's shared brokers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { connect, type ChannelModel } from 'amqplib';
import Fastify, { type FastifyInstance } from 'fastify';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { consume, ensureBarrierTable, fastifyBranch, Msg, type ConsumeSource, type Consumer } from '../sdk/index.js';
import { startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';
import { startRestartableLocalKafka, type RestartableKafka } from './services/kafka-local.js';
import { startRestartableLocalRabbitMQ, type RestartableRabbitMQ } from './services/rabbitmq-node.js';

const consumerProcess = fileURLToPath(new URL('../dist/test/helpers/consumer-process.js', import.meta.url));
/** Broker restarts take a JVM or an Erlang VM boot on a loaded 2-core machine. */
const RESTART_TIMEOUT = 60_000;
const fastRetry = { attempts: 3, base: 0.01, cap: 0.05 };

interface Payload {
  i: number;
  key: string;
}
interface Arrival {
  id: string;
  key: string;
  i: number;
}
interface Effect {
  id: string;
  key: string;
  i: number;
}
/** Runs inside the receiver's transaction, after the effect row was written; throwing rolls both back. */
type Behaviour = (m: Arrival & { call: number }) => Promise<void> | void;

interface Destination {
  /** The step's action: kafka://…, rabbitmq://…, http://… */
  url: string;
  /** Handler calls in arrival order, including rolled-back ones (not the copies the inbox absorbed before the handler). */
  arrivals: Arrival[];
  /** Redeliveries the inbox absorbed (the handler did not run: its row was there). */
  absorbed(): number;
  behave(behaviour: Behaviour): void;
  /** Starts an in-process receiver (Kafka group / RabbitMQ queue fixed per destination). HTTP: always receiving. */
  receive(): Promise<void>;
  /** Stops the in-process receiver. */
  stopReceiving(): Promise<void>;
  /** A receiver in its own process that blocks on message `i === blockOn`, inside its transaction or after the commit (brokers only). */
  receiveInProcess?(
    blockOn: number,
    block: 'in-transaction' | 'after-commit',
  ): Promise<{ child: ChildProcess; arrivals: Arrival[]; blocking: Promise<string> }>;
  /** HTTP: answers 500 after the barrier transaction committed, for the calls chosen (message `i`, call number). */
  failAfterCommit?(when: (i: number, call: number) => boolean): void;
  /** Effects committed in the consumer's database, in commit order. */
  effects(): Promise<Effect[]>;
  /** Messages the consumer parked (brokers). */
  parked(): Promise<string[]>;
  /** Copies the destination got from the coordinator (Kafka: offsets; RabbitMQ: a tap queue; HTTP: requests). */
  raw(): Promise<number>;
}

interface Adapter {
  kind: 'kafka' | 'rabbitmq' | 'http';
  /** Whether the destination keeps the submit order of a key (HTTP calls do not promise an order to the endpoint). */
  ordered: boolean;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  env(): Record<string, string>;
  destination(): Promise<Destination>;
  /** Stops the broker or endpoint, keeping its data and port. */
  halt(): Promise<void>;
  /** Starts it again on the same port; in-process receivers are brought back as their documented behaviour needs. */
  restart(): Promise<void>;
}

let effectsDb: pg.Pool;
let effectsDbUrl = '';
const receivers = new Set<{ close(): Promise<void> }>();
const children = new Set<ChildProcess>();

async function effectsOf(dest: string): Promise<Effect[]> {
  const { rows } = await effectsDb.query<{ message_id: string; key: string; i: number }>(
    'select message_id, key, i from effects where dest = $1 order by seq',
    [dest],
  );
  return rows.map((r) => ({ id: r.message_id, key: r.key, i: r.i }));
}

/** A handler's work: the arrival, the effect row with its transaction, then the test's behaviour. */
function recorder(dest: string) {
  const arrivals: Arrival[] = [];
  let behaviour: Behaviour = () => {};
  let absorbed = 0;
  const logs = { write: (line: string) => (JSON.parse(line) as { msg?: string }).msg === 'message already applied' && absorbed++ };
  return {
    arrivals,
    behave: (b: Behaviour) => (behaviour = b),
    absorbed: () => absorbed,
    logger: pino({ level: 'debug' }, logs),
    async handle(id: string, payload: Payload, tx: pg.PoolClient) {
      const arrival = { id, key: payload.key, i: payload.i };
      arrivals.push(arrival);
      await tx.query('insert into effects (dest, message_id, key, i) values ($1, $2, $3, $4)', [dest, id, payload.key, payload.i]);
      await behaviour({ ...arrival, call: arrivals.filter((a) => a.id === id).length });
    },
  };
}

/** Starts the consumer process and waits until it consumes; see test/helpers/consumer-process.ts. */
async function spawnConsumer(config: {
  source: ConsumeSource;
  consumerName: string;
  dest: string;
  blockOn: number;
  block: 'in-transaction' | 'after-commit';
}) {
  const child = spawn(process.execPath, [consumerProcess, JSON.stringify({ ...config, dbUrl: effectsDbUrl })], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const arrivals: Arrival[] = [];
  let out = '';
  let resolveBlocking: (id: string) => void = () => {};
  const blocking = new Promise<string>((resolve) => (resolveBlocking = resolve));
  let resolveStarted: () => void = () => {};
  const started = new Promise<void>((resolve) => (resolveStarted = resolve));
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const lines = out.split('\n');
    out = lines.pop() ?? '';
    for (const line of lines) {
      const event = JSON.parse(line) as { arrival?: Arrival; blocking?: string; started?: boolean };
      if (event.arrival) arrivals.push(event.arrival);
      if (event.blocking) resolveBlocking(event.blocking);
      if (event.started) resolveStarted();
    }
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = once(child, 'exit').then(() => {
    throw new Error(`consumer process exited before it consumed: ${err}`);
  });
  await Promise.race([started, exited]);
  return { child, arrivals, blocking };
}

// ---------------------------------------------------------------------------------------------
// Adapters

function kafkaAdapter(): Adapter {
  let broker: RestartableKafka;
  const kafka = () => new Kafka({ brokers: [broker.brokers], logLevel: logLevel.NOTHING });
  return {
    kind: 'kafka',
    ordered: true,
    async setup() {
      broker = await startRestartableLocalKafka();
    },
    teardown: () => broker?.stop(),
    env: () => ({ CONCORD_KAFKA_BROKERS: broker.brokers }),
    halt: () => broker.halt(),
    // kafkajs reconnects by itself: the running consumers are left to recover.
    restart: () => broker.restart(),
    async destination() {
      const topic = `conf-${randomUUID()}`;
      const admin = kafka().admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
      await admin.disconnect();
      const rec = recorder(topic);
      const groupId = `g-${randomUUID()}`;
      const consumerName = `c-${randomUUID()}`;
      // The broker's minimum session timeout: a killed member's partitions move on after 6 s, not 30.
      const source = () => ({ kafka: { brokers: [broker.brokers], topic, groupId, sessionTimeout: 6_000 } });
      let consumer: Consumer | undefined;
      return {
        url: `kafka://default/${topic}`,
        arrivals: rec.arrivals,
        absorbed: rec.absorbed,
        behave: rec.behave,
        async receive() {
          consumer = await consume<pg.PoolClient>(source(), ({ id, value, tx }) => rec.handle(id, JSON.parse(value) as Payload, tx), {
            db: effectsDb,
            consumerName,
            retry: fastRetry,
            logger: rec.logger,
          });
          receivers.add(consumer);
        },
        async stopReceiving() {
          await consumer?.close();
        },
        receiveInProcess: (blockOn, block) => spawnConsumer({ source: source(), consumerName, dest: topic, blockOn, block }),
        effects: () => effectsOf(topic),
        parked: async () => (await consumer!.parked()).map((p) => p.id),
        async raw() {
          const admin = kafka().admin();
          await admin.connect();
          const offsets = await admin.fetchTopicOffsets(topic);
          await admin.disconnect();
          return offsets.reduce((sum, o) => sum + Number(o.high), 0);
        },
      };
    },
  };
}

function rabbitAdapter(): Adapter {
  let broker: RestartableRabbitMQ;
  let amqp: ChannelModel | undefined;
  const channel = async () => {
    amqp ??= await connect(broker.url);
    return amqp.createChannel();
  };
  return {
    kind: 'rabbitmq',
    ordered: true,
    async setup() {
      broker = await startRestartableLocalRabbitMQ();
    },
    async teardown() {
      await amqp?.close().catch(() => undefined);
      await broker?.stop();
    },
    env: () => ({ CONCORD_AMQP_URL: broker.url }),
    async halt() {
      await amqp?.close().catch(() => undefined);
      amqp = undefined;
      await broker.halt();
    },
    // consume() reconnects by itself: the running consumers are left to recover, as with Kafka.
    restart: () => broker.restart(),
    async destination() {
      const routingKey = `rk-${randomUUID()}`;
      const queue = `conf-${randomUUID()}`;
      const tap = `tap-${randomUUID()}`;
      const ch = await channel();
      for (const q of [queue, tap]) {
        await ch.assertQueue(q, { durable: true });
        await ch.bindQueue(q, 'amq.direct', routingKey);
      }
      await ch.close();
      const rec = recorder(queue);
      const consumerName = `c-${randomUUID()}`;
      const source = () => ({ rabbitmq: { url: broker.url, queue } });
      let consumer: Consumer | undefined;
      const closer = { close: () => destination.stopReceiving() };
      const destination: Destination = {
        url: `rabbitmq://default/amq.direct/${routingKey}`,
        arrivals: rec.arrivals,
        absorbed: rec.absorbed,
        behave: rec.behave,
        async receive() {
          consumer = await consume<pg.PoolClient>(source(), ({ id, value, tx }) => rec.handle(id, JSON.parse(value) as Payload, tx), {
            db: effectsDb,
            consumerName,
            retry: fastRetry,
            logger: rec.logger,
          });
          receivers.add(closer);
        },
        async stopReceiving() {
          receivers.delete(closer);
          await consumer?.close();
        },
        receiveInProcess: (blockOn, block) => spawnConsumer({ source: source(), consumerName, dest: queue, blockOn, block }),
        effects: () => effectsOf(queue),
        parked: async () => (await consumer!.parked()).map((p) => p.id),
        async raw() {
          const c = await channel();
          const { messageCount } = await c.checkQueue(tap);
          await c.close();
          return messageCount;
        },
      };
      return destination;
    },
  };
}

function httpAdapter(): Adapter {
  let app: FastifyInstance | undefined;
  let port = 0;
  const routes = new Map<
    string,
    {
      rec: ReturnType<typeof recorder>;
      requests: number;
      calls: Map<number, number>;
      failAfterCommit: (i: number, call: number) => boolean;
    }
  >();
  const listen = async () => {
    const server = Fastify();
    server.post<{ Params: { dest: string } }>('/d/:dest', (request, reply) => {
      const route = routes.get(request.params.dest);
      if (!route) return reply.status(404).send({});
      route.requests++;
      const call = route.requests;
      return fastifyBranch<Payload>(async ({ barrier, body }) => {
        await barrier.run<void, pg.PoolClient>(effectsDb, (tx) =>
          route.rec.handle(`${barrier.call.gid}/${barrier.call.branch_id}`, body, tx),
        );
        const callsOfMessage = (route.calls.get(body.i) ?? 0) + 1;
        route.calls.set(body.i, callsOfMessage);
        if (route.failAfterCommit(body.i, callsOfMessage)) throw new Error(`answer lost after the commit (request ${call})`);
      })(request, reply);
    });
    await server.listen({ port, host: '127.0.0.1' });
    port = (server.server.address() as { port: number }).port;
    app = server;
  };
  return {
    kind: 'http',
    ordered: false,
    setup: listen,
    async teardown() {
      await app?.close();
    },
    env: () => ({}),
    async halt() {
      await app?.close();
      app = undefined;
    },
    restart: listen,
    async destination() {
      const dest = `d-${randomUUID()}`;
      const route = {
        rec: recorder(dest),
        requests: 0,
        calls: new Map<number, number>(),
        failAfterCommit: (_i: number, _call: number) => false,
      };
      routes.set(dest, route);
      return {
        url: `http://127.0.0.1:${port}/d/${dest}`,
        arrivals: route.rec.arrivals,
        // The barrier answers a duplicate without running the handler; it does not log.
        absorbed: () => route.requests - route.rec.arrivals.length,
        behave: route.rec.behave,
        failAfterCommit: (when) => (route.failAfterCommit = when),
        receive: async () => {},
        stopReceiving: async () => {},
        effects: () => effectsOf(dest),
        parked: async () => [],
        raw: async () => route.requests,
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers

const gid = () => `conf-${randomUUID()}`;
const keys = ['k0', 'k1', 'k2'];

/** Submits one message per payload, one after another, without waiting for the result. */
async function submitAll(dtm: string, dest: string, payloads: Payload[]): Promise<string[]> {
  const gids: string[] = [];
  for (const p of payloads) {
    const g = gid();
    await new Msg(dtm, g).add(dest, p, { key: p.key }).submit();
    gids.push(g);
  }
  return gids;
}

const batch = (from: number, n: number, keyOf = (i: number) => keys[i % keys.length]!): Payload[] =>
  Array.from({ length: n }, (_, k) => ({ i: from + k, key: keyOf(from + k) }));

/** Every message id once, and nothing else. */
function expectExactlyOnce(effects: Effect[], gids: string[]) {
  const ids = effects.map((e) => e.id).sort();
  expect(ids).toEqual(gids.map((g) => `${g}/01`).sort());
}

async function waitAll(dtm: string, gids: string[], status: string, timeout = 30_000) {
  for (const g of gids) await waitForStatus(dtm, g, status, timeout);
}

/** Registers the suite's hooks and the cases numbered in `cases` (1 to 6), for each adapter. */
export function conformanceSuite(cases: number[]): void {
  beforeAll(async () => {
    effectsDbUrl = await freshDatabase();
    effectsDb = new pg.Pool({ connectionString: effectsDbUrl, max: 10 });
    await ensureBarrierTable(effectsDb);
    await effectsDb.query(
      'create table effects (seq bigserial primary key, dest text not null, message_id text not null, key text, i int)',
    );
  });
  afterEach(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    children.clear();
    await Promise.all([...receivers].map((r) => r.close()));
    receivers.clear();
  });
  afterAll(async () => {
    await effectsDb?.end();
  });

  const timings: string[] = [];
  afterAll(() => {
    console.log(`[conformance] timings\n${timings.join('\n')}`);
  });

  // ---------------------------------------------------------------------------------------------
  // The suite

  describe.each([
    { name: 'Kafka', make: kafkaAdapter },
    { name: 'RabbitMQ', make: rabbitAdapter },
    { name: 'HTTP', make: httpAdapter },
  ])('$name destinations', ({ name, make }) => {
    const adapter = make();
    let store: string;
    let coordinator: RunningCoordinator;
    const startOne = async () => (coordinator = await startCoordinator({ store, env: { ...fastCoordinator, ...adapter.env() } }));
    let started = 0;

    beforeAll(async () => {
      const t = Date.now();
      await adapter.setup();
      store = await freshDatabase();
      await startOne();
      timings.push(`${name}: setup ${((Date.now() - t) / 1000).toFixed(1)} s`);
    }, 180_000);
    afterAll(async () => {
      await coordinator?.stop();
      await adapter.teardown();
    });
    beforeEach(() => {
      started = Date.now();
    });
    afterEach((ctx) => {
      timings.push(`${name}: ${ctx.task.name} ${((Date.now() - started) / 1000).toFixed(1)} s`);
    });

    if (cases.includes(1))
      it('1. delivers every message exactly once, and per key in submit order', async () => {
        const dest = await adapter.destination();
        await dest.receive();
        const payloads = batch(0, 30);
        const gids = await submitAll(coordinator.dtm, dest.url, payloads);
        await waitAll(coordinator.dtm, gids, 'succeed');
        await expect.poll(async () => (await dest.effects()).length, { timeout: 30_000 }).toBe(30);
        const effects = await dest.effects();
        expectExactlyOnce(effects, gids);
        if (adapter.ordered) {
          for (const key of keys) {
            const submitted = payloads.filter((p) => p.key === key).map((p) => p.i);
            expect(
              effects.filter((e) => e.key === key).map((e) => e.i),
              `effects of ${key}`,
            ).toEqual(submitted);
            // The raw arrivals too, duplicates aside.
            const firstArrivals = [...new Map(dest.arrivals.filter((a) => a.key === key).map((a) => [a.id, a.i])).values()];
            expect(firstArrivals, `arrivals of ${key}`).toEqual(submitted);
          }
        }
        // HTTP: the key orders nothing at the endpoint; only exactly-once is asserted.
      });

    if (cases.includes(3))
      it('3. loses nothing and applies nothing twice when the coordinator is killed with SIGKILL mid-batch', async () => {
        const dest = await adapter.destination();
        await dest.receive();
        const payloads = batch(0, 40);
        const gids = payloads.map(() => gid());
        // Submitted all at once; a submit cut off by the kill settles as false.
        const answers = payloads.map((p, k) =>
          new Msg(coordinator.dtm, gids[k]!)
            .add(dest.url, p, { key: p.key })
            .submit()
            .then(
              () => true,
              () => false,
            ),
        );
        await expect.poll(async () => (await dest.effects()).length, { timeout: 20_000, interval: 5 }).toBeGreaterThan(0);
        const killed = coordinator;
        expect(await killed.stop('SIGKILL')).toBeNull();
        const settled = await Promise.all(answers);
        const atKill = { effects: (await dest.effects()).length, accepted: settled.filter(Boolean).length };
        await startOne();
        // A submit that got no answer may or may not have been stored: if stored, it is delivered.
        const stored: string[] = [];
        for (const [k, g] of gids.entries()) {
          if (settled[k] || (await query(coordinator.dtm, g)).transaction !== null) stored.push(g);
        }
        expect(stored.length).toBeGreaterThanOrEqual(atKill.accepted);
        await waitAll(coordinator.dtm, stored, 'succeed', 30_000);
        await expect.poll(async () => (await dest.effects()).length, { timeout: 30_000 }).toBe(stored.length);
        expectExactlyOnce(await dest.effects(), stored);
        console.log(
          `[conformance] ${name} SIGKILL: ${atKill.accepted}/40 submits answered and ${atKill.effects} effects at the kill; ` +
            `${stored.length} stored; raw copies ${await dest.raw()}, handler calls ${dest.arrivals.length}, ` +
            `inbox-absorbed ${dest.absorbed()}, effects ${(await dest.effects()).length}`,
        );
      });

    for (const block of ['in-transaction', 'after-commit'] as const) {
      if (!cases.includes(4)) break;
      it(`4. applies a message once when its consumer is killed ${block === 'in-transaction' ? 'inside the handler transaction' : 'after the commit, before the ack'}`, async () => {
        const dest = await adapter.destination();
        const payloads = batch(0, 12);
        if (dest.receiveInProcess) {
          // The consumer process stops on message 5 (in its transaction, or committed but unacknowledged) and is killed there.
          const first = await dest.receiveInProcess(5, block);
          const gids = await submitAll(coordinator.dtm, dest.url, payloads);
          const blockedId = await first.blocking;
          const committed = (await dest.effects()).map((e) => e.id).includes(blockedId);
          expect(committed).toBe(block === 'after-commit');
          first.child.kill('SIGKILL');
          await once(first.child, 'exit');
          await dest.receive(); // the same group / queue and consumer name
          await waitAll(coordinator.dtm, gids, 'succeed');
          await expect.poll(async () => (await dest.effects()).length, { timeout: 60_000 }).toBe(12);
          expectExactlyOnce(await dest.effects(), gids);
          if (block === 'in-transaction') {
            // Rolled back with the connection: delivered again and applied by the new consumer.
            expect(dest.arrivals.map((a) => a.id)).toContain(blockedId);
          } else {
            // Committed: the redelivery finds the inbox row and the handler does not run again.
            await expect.poll(() => dest.absorbed(), { timeout: 10_000 }).toBeGreaterThanOrEqual(1);
            expect(dest.arrivals.map((a) => a.id)).not.toContain(blockedId);
          }
          console.log(
            `[conformance] ${name} consumer killed ${block}: ${first.arrivals.length} handler calls before the kill, ` +
              `${dest.arrivals.length} after, ${dest.absorbed()} redeliveries absorbed by the inbox`,
          );
        } else {
          // HTTP: the endpoint answers 500 for message 5, once: after writing inside its transaction (rolled
          // back), or after its barrier transaction committed (the retry is absorbed by the barrier).
          dest.behave(({ i, call }) => {
            if (block === 'in-transaction' && i === 5 && call === 1) throw new Error('crashed after writing');
          });
          if (block === 'after-commit') dest.failAfterCommit?.((i, call) => i === 5 && call === 1);
          const gids = await submitAll(coordinator.dtm, dest.url, payloads);
          await waitAll(coordinator.dtm, gids, 'succeed');
          expectExactlyOnce(await dest.effects(), gids);
          expect(await dest.raw()).toBe(13);
          expect(dest.arrivals.filter((a) => a.i === 5)).toHaveLength(block === 'in-transaction' ? 2 : 1);
          expect(dest.absorbed()).toBe(block === 'in-transaction' ? 0 : 1);
        }
      });
    }

    if (cases.includes(5))
      it('5. parks a poison message while the other keys keep flowing', async () => {
        const dest = await adapter.destination();
        dest.behave(({ key }) => {
          if (key === 'poison') throw new Error('cannot digest');
        });
        await dest.receive();
        const payloads = [{ i: 0, key: 'poison' }, ...batch(1, 12, (i) => keys[1 + (i % 2)]!)];
        const gids = await submitAll(coordinator.dtm, dest.url, payloads);
        const [poison, ...healthy] = gids as [string, ...string[]];
        await waitAll(coordinator.dtm, healthy, 'succeed');
        await expect.poll(async () => (await dest.effects()).length, { timeout: 30_000 }).toBe(12);
        expectExactlyOnce(await dest.effects(), healthy);
        if (adapter.kind === 'http') {
          // The coordinator keeps retrying the failing branch: submitted, with the error, while the others succeeded.
          await expect.poll(async () => (await query(coordinator.dtm, poison)).branches[0]?.attempts ?? 0).toBeGreaterThan(1);
          const q = await query(coordinator.dtm, poison);
          expect(q.transaction?.status).toBe('submitted');
          expect(q.branches[0]?.last_error).toBeTruthy();
        } else {
          // The broker took it (the coordinator is done); the consumer parked it after its attempts.
          await waitForStatus(coordinator.dtm, poison, 'succeed');
          await expect.poll(() => dest.parked(), { timeout: 20_000 }).toEqual([`${poison}/01`]);
          expect(dest.arrivals.filter((a) => a.key === 'poison')).toHaveLength(fastRetry.attempts);
        }
      });

    if (cases.includes(6) && adapter.kind === 'rabbitmq')
      it('6. shows an unroutable message as a failure in the transaction state', async () => {
        const g = gid();
        await new Msg(coordinator.dtm, g).add(`rabbitmq://default/amq.direct/nobody-${randomUUID()}`, { i: 0, key: 'k' }).submit();
        await expect
          .poll(async () => (await query(coordinator.dtm, g)).branches[0]?.last_error ?? '', { timeout: 15_000 })
          .toMatch(/unroutable/);
        expect((await query(coordinator.dtm, g)).transaction?.status).toBe('submitted');
      });

    if (cases.includes(2))
      it('2. loses nothing while the broker (endpoint) is down, and drains the backlog by itself after the restart', async () => {
        const dest = await adapter.destination();
        await dest.receive();
        const before = await submitAll(coordinator.dtm, dest.url, batch(0, 5));
        await waitAll(coordinator.dtm, before, 'succeed');
        await expect.poll(async () => (await dest.effects()).length, { timeout: 30_000 }).toBe(5);
        await adapter.halt();
        const during = await submitAll(coordinator.dtm, dest.url, batch(5, 10));
        // The coordinator tries, fails and keeps the messages.
        await expect
          .poll(async () => (await query(coordinator.dtm, during[0]!)).branches[0]?.last_error ?? '', { timeout: 30_000 })
          .not.toBe('');
        for (const g of during) expect((await query(coordinator.dtm, g)).transaction?.status).toBe('submitted');
        const t = Date.now();
        await adapter.restart();
        const restartTook = Date.now() - t;
        await waitAll(coordinator.dtm, during, 'succeed', RESTART_TIMEOUT);
        await expect.poll(async () => (await dest.effects()).length, { timeout: RESTART_TIMEOUT }).toBe(15);
        expectExactlyOnce(await dest.effects(), [...before, ...during]);
        console.log(
          `[conformance] ${name} outage: restart took ${(restartTook / 1000).toFixed(1)} s, drained in ${((Date.now() - t) / 1000).toFixed(1)} s; ` +
            `raw copies ${await dest.raw()}, effects 15`,
        );
      }, 180_000);
  });
}
