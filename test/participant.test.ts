/**
 * Saga participants on real Kafka, RabbitMQ and Postgres. The test plays the coordinator: it
 * publishes command messages with the coordinator's headers and reads the replies.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { connect, type ChannelModel } from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { sagaReplySchema } from '../schemas/saga.js';
import { BranchFailure, commandHeaders, participant, type Participant, type ParticipantOptions, type SagaReply } from '../sdk/index.js';
import { freshDatabase } from './helpers/db.js';

interface CommandMessage {
  gid: string;
  branchId?: string;
  op: 'action' | 'compensate';
  command: string;
  attempt?: number;
  payload?: unknown;
  /** Broker key (Kafka partition); the gid by default. */
  key?: string;
  /** Headers to leave out. */
  omit?: string[];
}

/** The coordinator's side of one broker: publish commands, collect replies. */
interface FakeCoordinator {
  source: ParticipantOptions['source'];
  topic: string;
  send(message: CommandMessage): Promise<void>;
  /** Several commands in one produce request (Kafka): they reach the participant in one fetch. */
  sendAll?(messages: CommandMessage[]): Promise<void>;
  replies: SagaReply[];
  close(): Promise<void>;
}

let pool: pg.Pool;
const brokers = inject('kafkaBrokers').split(',');
const amqpUrl = inject('amqpUrl');

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase() });
  await pool.query('create table stock_moves (gid text, op text, item text, qty int)');
});
afterAll(async () => {
  await pool?.end();
});

function headersOf(message: CommandMessage, replyTo: string): Record<string, string> {
  const { gid, branchId = '01', op, command, attempt = 1 } = message;
  const headers: Record<string, string> = {
    [commandHeaders.messageId]: `${gid}/${branchId}/${op}`,
    'content-type': 'application/json',
    'dtm-gid': gid,
    'dtm-branch-id': branchId,
    'dtm-trans-type': 'saga',
    [commandHeaders.op]: op,
    [commandHeaders.command]: command,
    [commandHeaders.attempt]: String(attempt),
    [commandHeaders.replyTo]: replyTo,
  };
  for (const name of message.omit ?? []) delete headers[name];
  return headers;
}

const body = (message: CommandMessage) => JSON.stringify(message.payload ?? {});

async function kafkaCoordinator(): Promise<FakeCoordinator> {
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  // The command topic is left to the participant, which creates it when missing.
  const topic = `saga-commands-${randomUUID()}`;
  const replyTopic = `saga-replies-${randomUUID()}`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: replyTopic }], waitForLeaders: true });
  await admin.disconnect();
  const replies: SagaReply[] = [];
  const consumer = kafka.consumer({ groupId: `coordinator-${randomUUID()}` });
  await consumer.connect();
  await consumer.subscribe({ topic: replyTopic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      replies.push(sagaReplySchema.parse(JSON.parse(message.value!.toString())));
    },
  });
  const producer = kafka.producer();
  await producer.connect();
  const sendAll = async (messages: CommandMessage[]) => {
    await producer.send({
      topic,
      messages: messages.map((m) => ({ key: m.key ?? m.gid, value: body(m), headers: headersOf(m, replyTopic) })),
    });
  };
  return {
    source: { kafka: { brokers, groupId: `participant-${randomUUID()}` } },
    topic,
    replies,
    send: (message) => sendAll([message]),
    sendAll,
    async close() {
      await Promise.all([consumer.disconnect(), producer.disconnect()]);
    },
  };
}

async function rabbitCoordinator(): Promise<FakeCoordinator> {
  // The command queue is left to the participant, which asserts it.
  const topic = `saga-commands-${randomUUID()}`;
  const replyQueue = `saga-replies-${randomUUID()}`;
  const model: ChannelModel = await connect(amqpUrl);
  const channel = await model.createConfirmChannel();
  await channel.assertQueue(replyQueue, { durable: true });
  const replies: SagaReply[] = [];
  await channel.consume(
    replyQueue,
    (msg) => {
      if (msg) replies.push(sagaReplySchema.parse(JSON.parse(msg.content.toString())));
    },
    { noAck: true },
  );
  return {
    source: { rabbitmq: { url: amqpUrl } },
    topic,
    replies,
    async send(message) {
      channel.sendToQueue(topic, Buffer.from(body(message)), { persistent: true, headers: headersOf(message, replyQueue) });
      await channel.waitForConfirms();
    },
    async close() {
      await model.close();
    },
  };
}

describe.each([
  { broker: 'Kafka', start: kafkaCoordinator },
  { broker: 'RabbitMQ', start: rabbitCoordinator },
])('saga participant on $broker', ({ start }) => {
  let coordinator: FakeCoordinator;
  let inventory: Participant<pg.PoolClient>;
  const logs: Record<string, unknown>[] = [];
  /** Business runs per `command:gid` (runs that rolled back included). */
  const runs = new Map<string, number>();
  const count = (command: string, gid: string) => runs.get(`${command}:${gid}`) ?? 0;
  const ran = (command: string, gid: string) => runs.set(`${command}:${gid}`, count(command, gid) + 1);

  beforeAll(async () => {
    coordinator = await start();
    const logger = pino({ level: 'debug' }, { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) });
    inventory = participant<pg.PoolClient>(coordinator.topic, {
      source: coordinator.source,
      db: pool,
      retry: { attempts: 3, base: 0.01, cap: 0.05 },
      logger,
    })
      .on('reserve', async ({ tx, json, gid, op, command }) => {
        ran(command, gid);
        const { item, qty } = json<{ item: string; qty: number }>();
        await tx.query('insert into stock_moves values ($1, $2, $3, $4)', [gid, op, item, -qty]);
        return { reserved: item, qty };
      })
      .on('release', async ({ tx, json, gid, op, command }) => {
        ran(command, gid);
        const { item, qty } = json<{ item: string; qty: number }>();
        await tx.query('insert into stock_moves values ($1, $2, $3, $4)', [gid, op, item, qty]);
      })
      .on('refuse', async ({ tx, gid, op, command }) => {
        ran(command, gid);
        await tx.query('insert into stock_moves values ($1, $2, $3, $4)', [gid, op, 'widget', -1]);
        throw new BranchFailure('out of stock');
      })
      .on('explode', async ({ tx, gid, op, command }) => {
        ran(command, gid);
        await tx.query('insert into stock_moves values ($1, $2, $3, $4)', [gid, op, 'widget', -1]);
        throw new Error('disk on fire');
      });
    await inventory.start();
  });
  afterAll(async () => {
    await inventory?.close();
    await coordinator?.close();
  });

  /** Waits for the reply to (gid, op, attempt). */
  async function replyTo(gid: string, op: 'action' | 'compensate', attempt = 1): Promise<SagaReply> {
    const find = () => coordinator.replies.find((r) => r.gid === gid && r.op === op && r.attempt === attempt);
    await expect.poll(find, { timeout: 30_000 }).toBeDefined();
    return find()!;
  }
  const moves = async (gid: string) =>
    (await pool.query<{ op: string; item: string; qty: number }>('select op, item, qty from stock_moves where gid = $1 order by op', [gid]))
      .rows;
  const reserve = { item: 'widget', qty: 2 };

  it('runs an action and replies SUCCESS with its result and the attempt; a compensation then undoes it', async () => {
    const gid = `saga-${randomUUID()}`;
    await coordinator.send({ gid, op: 'action', command: 'reserve', payload: reserve });
    expect(await replyTo(gid, 'action')).toEqual({
      gid,
      branch_id: '01',
      op: 'action',
      attempt: 1,
      outcome: 'SUCCESS',
      result: JSON.stringify({ reserved: 'widget', qty: 2 }),
    });
    expect(await moves(gid)).toEqual([{ op: 'action', item: 'widget', qty: -2 }]);

    await coordinator.send({ gid, op: 'compensate', command: 'release', payload: reserve });
    expect(await replyTo(gid, 'compensate')).toEqual({ gid, branch_id: '01', op: 'compensate', attempt: 1, outcome: 'SUCCESS' });
    expect(await moves(gid)).toEqual([
      { op: 'action', item: 'widget', qty: -2 },
      { op: 'compensate', item: 'widget', qty: 2 },
    ]);
    expect([count('reserve', gid), count('release', gid)]).toEqual([1, 1]);
  });

  it('answers a duplicate command (attempt 2) with SUCCESS without running the business again', async () => {
    const gid = `saga-${randomUUID()}`;
    await coordinator.send({ gid, op: 'action', command: 'reserve', payload: reserve });
    expect((await replyTo(gid, 'action', 1)).outcome).toBe('SUCCESS');
    await coordinator.send({ gid, op: 'action', command: 'reserve', payload: reserve, attempt: 2 });
    const second = await replyTo(gid, 'action', 2);
    expect(second).toMatchObject({ gid, op: 'action', attempt: 2, outcome: 'SUCCESS' });
    expect(second.result).toBeUndefined();
    expect(count('reserve', gid)).toBe(1);
    expect(await moves(gid)).toHaveLength(1);
  });

  it('answers a compensation that arrives before its action with SUCCESS and nothing done, and skips the late action', async () => {
    const gid = `saga-${randomUUID()}`;
    await coordinator.send({ gid, op: 'compensate', command: 'release', payload: reserve });
    expect(await replyTo(gid, 'compensate')).toMatchObject({ outcome: 'SUCCESS' });
    expect(count('release', gid)).toBe(0);

    await coordinator.send({ gid, op: 'action', command: 'reserve', payload: reserve });
    const late = await replyTo(gid, 'action');
    expect(late).toMatchObject({ outcome: 'SUCCESS' });
    expect(late.result).toBeUndefined();
    expect(count('reserve', gid)).toBe(0);
    expect(await moves(gid)).toEqual([]);
    const barrier = await pool.query<{ op: string; reason: string }>(
      'select op, reason from dtm_barrier.barrier where gid = $1 order by op',
      [gid],
    );
    expect(barrier.rows).toEqual([
      { op: 'action', reason: 'compensate' },
      { op: 'compensate', reason: 'compensate' },
    ]);
  });

  it('replies FAILURE with the message of a BranchFailure, once, and commits nothing', async () => {
    const gid = `saga-${randomUUID()}`;
    await coordinator.send({ gid, op: 'action', command: 'refuse' });
    expect(await replyTo(gid, 'action')).toEqual({
      gid,
      branch_id: '01',
      op: 'action',
      attempt: 1,
      outcome: 'FAILURE',
      error: 'out of stock',
    });
    expect(count('refuse', gid)).toBe(1);
    expect(await moves(gid)).toEqual([]);
    // The failed action left no barrier row, so its compensation is a null compensation.
    await coordinator.send({ gid, op: 'compensate', command: 'release', payload: reserve });
    expect(await replyTo(gid, 'compensate')).toMatchObject({ outcome: 'SUCCESS' });
    expect(count('release', gid)).toBe(0);
  });

  it('retries a handler that throws a plain error, then replies ERROR with its message and commits nothing', async () => {
    const gid = `saga-${randomUUID()}`;
    await coordinator.send({ gid, op: 'action', command: 'explode', attempt: 4 });
    expect(await replyTo(gid, 'action', 4)).toEqual({
      gid,
      branch_id: '01',
      op: 'action',
      attempt: 4,
      outcome: 'ERROR',
      error: 'disk on fire',
    });
    expect(count('explode', gid)).toBe(3);
    expect(await moves(gid)).toEqual([]);
    const warned = logs.filter((l) => l.msg === 'command handler failed, retrying' && l.gid === gid);
    expect(warned).toHaveLength(2);
    expect(logs.find((l) => l.msg === 'command handler failed, replying ERROR' && l.gid === gid)).toMatchObject({
      level: 50,
      component: 'sdk.participant',
      topic: coordinator.topic,
      branchId: '01',
      op: 'action',
      command: 'explode',
      attempt: 4,
    });
  });

  it('replies ERROR to a command without a handler', async () => {
    const gid = `saga-${randomUUID()}`;
    await coordinator.send({ gid, op: 'action', command: 'teleport' });
    expect(await replyTo(gid, 'action')).toEqual({
      gid,
      branch_id: '01',
      op: 'action',
      attempt: 1,
      outcome: 'ERROR',
      error: 'no handler for command teleport',
    });
  });

  it('drops a command with missing or invalid headers and goes on with the next', async () => {
    const bad = `saga-${randomUUID()}`;
    const badAttempt = `saga-${randomUUID()}`;
    const good = `saga-${randomUUID()}`;
    // One key, so that Kafka keeps the three in one partition, in order.
    await coordinator.send({ gid: bad, op: 'action', command: 'reserve', payload: reserve, key: 'k', omit: [commandHeaders.replyTo] });
    await coordinator.send({ gid: badAttempt, op: 'action', command: 'reserve', payload: reserve, key: 'k', attempt: 0 });
    await coordinator.send({ gid: good, op: 'action', command: 'reserve', payload: reserve, key: 'k' });
    expect(await replyTo(good, 'action')).toMatchObject({ outcome: 'SUCCESS' });
    expect(coordinator.replies.filter((r) => r.gid === bad || r.gid === badAttempt)).toEqual([]);
    expect([count('reserve', bad), count('reserve', badAttempt)]).toEqual([0, 0]);
    const dropped = logs.filter((l) => l.msg === 'command dropped: invalid headers' && l.topic === coordinator.topic);
    expect(dropped).toHaveLength(2);
    expect(dropped.map((l) => (l.problems as string[]).join())).toEqual([
      expect.stringMatching(/^replyTo:/),
      expect.stringMatching(/^attempt:/),
    ]);
  });
});

describe('saga participant on Kafka, commands of one partition', () => {
  it('handles the commands of a fetched batch side by side: a later one does not wait for an earlier one to end', async () => {
    const coordinator = await kafkaCoordinator();
    const [held, freeing] = [`saga-${randomUUID()}`, `saga-${randomUUID()}`];
    const p = participant<pg.PoolClient>(coordinator.topic, { source: coordinator.source, db: pool })
      // Ends once the reply to 'free' is out, or after 10 s: one at a time, 'free' could only run after those 10 s.
      .on('hold', async () => {
        for (let waited = 0; waited < 10_000 && !coordinator.replies.some((r) => r.gid === freeing); waited += 50) await delay(50);
      })
      .on('free', async () => undefined);
    await p.start();
    try {
      // One key, so one partition, and one request, so one fetch: 'hold' first.
      await coordinator.sendAll!([
        { gid: held, op: 'action', command: 'hold', key: 'k' },
        { gid: freeing, op: 'action', command: 'free', key: 'k' },
      ]);
      await expect.poll(() => coordinator.replies.map((r) => r.gid), { timeout: 30_000 }).toEqual([freeing, held]);
    } finally {
      await p.close();
      await coordinator.close();
    }
  });

  it('fetches a command sent while an earlier one is being handled: it does not wait for the earlier one to end', async () => {
    const coordinator = await kafkaCoordinator();
    const [held, freeing] = [`saga-${randomUUID()}`, `saga-${randomUUID()}`];
    let holding = false;
    const p = participant<pg.PoolClient>(coordinator.topic, { source: coordinator.source, db: pool })
      // Ends once the reply to 'free' is out, or after 10 s: fetched only after 'hold' ended, 'free' would come after those 10 s.
      .on('hold', async () => {
        holding = true;
        for (let waited = 0; waited < 10_000 && !coordinator.replies.some((r) => r.gid === freeing); waited += 50) await delay(50);
      })
      .on('free', async () => undefined);
    await p.start();
    try {
      // One key, so one partition; 'free' is sent once 'hold' runs, so it comes in a later fetch.
      await coordinator.send({ gid: held, op: 'action', command: 'hold', key: 'k' });
      await expect.poll(() => holding, { timeout: 30_000 }).toBe(true);
      await coordinator.send({ gid: freeing, op: 'action', command: 'free', key: 'k' });
      await expect.poll(() => coordinator.replies.map((r) => r.gid), { timeout: 30_000 }).toEqual([freeing, held]);
    } finally {
      await p.close();
      await coordinator.close();
    }
  });
});
