/**
 * Sagas whose steps travel as command and reply messages, on the real Kafka and RabbitMQ of the
 * test setup, with participants on the SDK (barrier in real Postgres) and real coordinator
 * processes: rollback from every step, duplicated commands and replies, a lost reply ending in
 * the step's timeout, a participant killed inside its handler, a coordinator killed mid-saga
 * with the reply arriving while it is down, and a saga mixing HTTP and broker steps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { connect } from 'amqplib';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startCoordinator, type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';
import { startSagaService, type SagaService } from './helpers/saga-service.js';
import { startStepParticipants, type StepParticipants, type StepParticipantsOptions } from './helpers/step-participants.js';

const participantProcess = fileURLToPath(new URL('../dist/test/helpers/participant-process.js', import.meta.url));
const run = randomUUID().slice(0, 8);
const gid = () => `bsaga-${randomUUID()}`;

interface BrokerCase {
  name: 'kafka' | 'rabbitmq';
  source: () => StepParticipantsOptions['source'];
  /** The coordinator's destination of a topic (Kafka) or queue (RabbitMQ). */
  destination: (topic: string) => string;
  /** Publishes a raw message, as a duplicate from the broker would come. */
  publish: (topic: string, body: string, headers: Record<string, string>) => Promise<void>;
}

let kafkaProducer: Producer | undefined;
const cases: BrokerCase[] = [
  {
    name: 'kafka',
    source: () => ({ kafka: { brokers: inject('kafkaBrokers').split(','), groupId: `g-${run}`, sessionTimeout: 6_000 } }),
    destination: (topic) => `kafka://default/${topic}`,
    async publish(topic, body, headers) {
      kafkaProducer ??= await (async () => {
        const producer = new Kafka({ brokers: inject('kafkaBrokers').split(','), logLevel: logLevel.NOTHING }).producer();
        await producer.connect();
        return producer;
      })();
      await kafkaProducer.send({ topic, messages: [{ value: body, headers }] });
    },
  },
  {
    name: 'rabbitmq',
    source: () => ({ rabbitmq: { url: inject('amqpUrl') } }),
    // The default exchange routes by queue name.
    destination: (queue) => `rabbitmq://default//${queue}`,
    async publish(queue, body, headers) {
      const model = await connect(inject('amqpUrl'));
      const channel = await model.createConfirmChannel();
      channel.sendToQueue(queue, Buffer.from(body), { headers, persistent: true });
      await channel.waitForConfirms();
      await model.close();
    },
  },
];

afterAll(async () => {
  await kafkaProducer?.disconnect();
});

/** Replies the coordinator read and did not record (duplicates, stale attempts), from its metrics. */
async function ignoredReplies(url: string): Promise<number> {
  const text = await (await fetch(`${url}/api/metrics`)).text();
  return [...text.matchAll(/^concord_saga_replies_total\{[^}]*recorded="false"[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

/** A coordinator with both brokers as its `default` connections and a reply topic of its own. */
function coordinatorEnv(replyTopic: string): Record<string, string> {
  return {
    ...fastCoordinator,
    CONCORD_KAFKA_BROKERS: inject('kafkaBrokers'),
    CONCORD_AMQP_URL: inject('amqpUrl'),
    CONCORD_REPLY_TOPIC: replyTopic,
  };
}

describe.each(cases.map((c) => [c.name, c] as const))('a saga over %s', (name, broker) => {
  const topics = ['s1', 's2', 's3'].map((s) => `saga-${name}-${s}-${run}`);
  const replyTopic = `concord.replies.${name}.${run}`;
  let coordinator: TestCoordinator;
  let participants: StepParticipants;
  let dbUrl: string;
  let storeUrl: string;

  beforeAll(async () => {
    dbUrl = await freshDatabase();
    storeUrl = await freshDatabase();
    [coordinator, participants] = await Promise.all([
      inProcessCoordinator({ store: storeUrl, env: coordinatorEnv(replyTopic) }),
      startStepParticipants({ source: broker.source(), dbUrl, topics }),
    ]);
  }, 120_000);
  afterAll(async () => {
    await participants?.close();
    expect(await coordinator?.stop()).toBe(0);
  });

  const body = (g: string, step: (i: number) => Record<string, string> = () => ({}), options: Record<string, unknown> = {}) => ({
    gid: g,
    trans_type: 'saga',
    steps: topics.map((t, i) => ({
      action: broker.destination(t),
      compensate: broker.destination(t),
      command: 'do',
      compensate_command: 'undo',
      ...step(i),
    })),
    payloads: topics.map((_, i) => JSON.stringify({ step: i + 1 })),
    ...options,
  });

  it('runs every step once, in order, and records the participants results', async () => {
    const g = gid();
    const res = await post(`${coordinator.dtm}/submit`, body(g, undefined, { wait_result: true }));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(await participants.effects(g)).toEqual(topics.map((t) => `${t}.action`));
    const actions = (await query(coordinator.dtm, g)).branches.filter((b) => b.op === 'action') as { result?: string }[];
    expect(actions.map((b) => JSON.parse(b.result ?? 'null') as unknown)).toEqual(topics.map((t) => ({ step: t, done: true })));
  });

  it.each([1, 2, 3])('rolls back exactly the steps before step %i when its participant refuses', async (failing) => {
    const g = gid();
    participants.refuse(topics[failing - 1]!, g);
    const res = await post(`${coordinator.dtm}/submit`, body(g, undefined, { wait_result: true }));
    expect(res.status).toBe(409);
    const done = topics.slice(0, failing - 1);
    expect(await participants.effects(g)).toEqual([
      ...done.map((t) => `${t}.action`),
      ...[...done].reverse().map((t) => `${t}.compensate`),
    ]);
    const q = await query(coordinator.dtm, g);
    expect(q.transaction?.status).toBe('failed');
    expect(q.transaction?.rollback_reason).toContain('refuses');
  });

  it('ignores duplicated commands and duplicated or stale replies', async () => {
    const g = gid();
    expect((await post(`${coordinator.dtm}/submit`, body(g, undefined, { wait_result: true }))).status).toBe(200);
    const headers = {
      'message-id': `${g}/02/action`,
      'dtm-gid': g,
      'dtm-branch-id': '02',
      'dtm-trans-type': 'saga',
      'dtm-op': 'action',
      'concord-command': 'do',
      'concord-attempt': '1',
      'concord-reply-to': replyTopic,
    };
    const ignoredBefore = await ignoredReplies(coordinator.url);
    // The command again (as a broker redelivery): the barrier absorbs it, the participant answers SUCCESS again.
    await broker.publish(topics[1]!, JSON.stringify({ step: 2 }), headers);
    // A duplicate reply, one for an attempt never made, and a FAILURE for a finished step.
    const reply = (r: Record<string, unknown>) =>
      JSON.stringify({ gid: g, branch_id: '02', op: 'action', attempt: 1, outcome: 'SUCCESS', ...r });
    await broker.publish(replyTopic, reply({}), {});
    await broker.publish(replyTopic, reply({ attempt: 7, outcome: 'FAILURE', error: 'stale' }), {});
    await broker.publish(replyTopic, reply({ branch_id: '03', outcome: 'FAILURE', error: 'late' }), {});
    // Four replies reach the coordinator (the participant's second SUCCESS and the three above), none recorded.
    await expect.poll(() => ignoredReplies(coordinator.url), { timeout: 20_000 }).toBe(ignoredBefore + 4);
    const q = await query(coordinator.dtm, g);
    expect(q.transaction?.status).toBe('succeed');
    expect(q.branches.filter((b) => b.op === 'action').map((b) => [b.status, b.attempts])).toEqual([
      ['succeed', 1],
      ['succeed', 1],
      ['succeed', 1],
    ]);
    expect(await participants.effects(g)).toEqual(topics.map((t) => `${t}.action`));
  });

  it('publishes the command again when the reply does not come within the step timeout', async () => {
    // The step's participant is not running yet: the first command waits in the broker, unanswered.
    const g = gid();
    const lateTopic = `saga-${name}-late-${run}`;
    const steps = body(g, () => ({ timeout: '1', backoff: '0.1' }));
    steps.steps = [{ ...steps.steps[0]!, action: broker.destination(lateTopic), compensate: broker.destination(lateTopic) }];
    steps.payloads = ['{}'];
    const late = await startStepParticipants({ source: broker.source(), dbUrl, topics: [lateTopic] });
    await late.close();
    await post(`${coordinator.dtm}/submit`, steps);
    await expect
      .poll(async () => (await query(coordinator.dtm, g)).branches.find((b) => b.op === 'action')?.attempts, { timeout: 15_000 })
      .toBeGreaterThanOrEqual(2);
    const again = await startStepParticipants({ source: broker.source(), dbUrl, topics: [lateTopic] });
    try {
      await waitForStatus(coordinator.dtm, g, 'succeed', 30_000);
      // Every copy of the command reached the participant; the business ran once.
      expect(await again.effects(g)).toEqual([`${lateTopic}.action`]);
    } finally {
      await again.close();
    }
  });

  it("records a step's reply and writes the next step's attempt in one store commit", async () => {
    // Step 2's topic has no participant: the saga stays with step 1 answered and step 2's command out.
    const g = gid();
    const silent = broker.destination(`saga-${name}-silent-${run}`);
    const steps = body(g, () => ({ timeout: '120' }));
    steps.steps = [steps.steps[0]!, { ...steps.steps[1]!, action: silent, compensate: silent }];
    steps.payloads = ['{}', '{}'];
    expect((await post(`${coordinator.dtm}/submit`, steps)).status).toBe(200);
    const store = new pg.Client({ connectionString: storeUrl });
    await store.connect();
    try {
      // xmin: the transaction that last wrote a row.
      const actions = async () =>
        (
          await store.query<{ branch_id: string; status: string; attempts: number; xmin: string }>(
            `select branch_id, status, attempts, xmin::text from trans_branch_op where gid = $1 and op = 'action' order by branch_id`,
            [g],
          )
        ).rows;
      await expect
        .poll(async () => (await actions()).map((b) => [b.status, b.attempts]), { timeout: 20_000 })
        .toEqual([
          ['succeed', 1],
          ['prepared', 1],
        ]);
      const [first, second] = await actions();
      expect(second!.xmin).toBe(first!.xmin);
    } finally {
      await store.end();
    }
  });

  it('runs a saga mixing HTTP and broker steps, and compensates across both', async () => {
    const service: SagaService = await startSagaService(await freshDatabase());
    try {
      const g = gid();
      service.failNext('h3', 'action', 1, 'failure');
      const res = await post(`${coordinator.dtm}/submit`, {
        gid: g,
        trans_type: 'saga',
        steps: [
          { action: service.stepUrl('h1', 'action'), compensate: service.stepUrl('h1', 'compensate') },
          { action: broker.destination(topics[0]!), compensate: broker.destination(topics[0]!), command: 'do', compensate_command: 'undo' },
          { action: service.stepUrl('h3', 'action'), compensate: service.stepUrl('h3', 'compensate') },
        ],
        payloads: ['{"a":1}', '{"a":2}', '{"a":3}'],
        wait_result: true,
      });
      expect(res.status).toBe(409);
      expect(service.calls(g).map((c) => `${c.step}.${c.op}`)).toEqual(['h1.action', 'h3.action', 'h3.compensate', 'h1.compensate']);
      expect(await participants.effects(g)).toEqual([`${topics[0]}.action`, `${topics[0]}.compensate`]);
      // The broker step's compensation ran between h3's and h1's.
      const h1Compensated = service.calls(g).find((c) => c.step === 'h1' && c.op === 'compensate')!;
      expect(h1Compensated.arrivedAt).toBeGreaterThan(service.calls(g).find((c) => c.step === 'h3' && c.op === 'compensate')!.endedAt!);
    } finally {
      await service.close();
    }
  });
});

/** Participants in a child process; resolves once they consume. */
async function spawnParticipants(options: Omit<StepParticipantsOptions, 'onCommand'>): Promise<{ child: ChildProcess; lines: unknown[] }> {
  const child = spawn(process.execPath, [participantProcess, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: unknown[] = [];
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const started = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const parsed = JSON.parse(line) as { started?: boolean };
      lines.push(parsed);
      if (parsed.started) resolve();
    });
    child.on('exit', (code) => reject(new Error(`participant process exited with ${code}: ${err}`)));
  });
  await started;
  return { child, lines };
}

describe('crashes mid-saga (kafka)', () => {
  const topics = ['c1', 'c2'].map((s) => `saga-crash-${s}-${run}`);
  const source = () => cases[0]!.source();
  const destination = (t: string) => `kafka://default/${t}`;
  const body = (g: string, timeout: string) => ({
    gid: g,
    trans_type: 'saga',
    steps: topics.map((t) => ({ action: destination(t), compensate: destination(t), command: 'do', compensate_command: 'undo', timeout })),
    payloads: topics.map(() => '{}'),
  });

  it('finishes after the participant is killed inside its handler: the command comes again, the effect lands once', async () => {
    const replyTopic = `concord.replies.crash1.${run}`;
    const coordinator = await inProcessCoordinator({ store: await freshStore(), env: coordinatorEnv(replyTopic) });
    const dbUrl = await freshDatabase();
    const g = gid();
    const first = await spawnParticipants({ source: source(), dbUrl, topics, blockOn: { gid: g, topic: topics[1]! } });
    try {
      await post(`${coordinator.dtm}/submit`, body(g, '60'));
      await expect
        .poll(() => first.lines.some((l) => JSON.stringify(l).includes(`"topic":"${topics[1]}"`)), { timeout: 20_000 })
        .toBe(true);
      first.child.kill('SIGKILL');
      await once(first.child, 'exit');
      const second = await spawnParticipants({ source: source(), dbUrl, topics });
      try {
        // Well within the 60 s step timeout: the redelivered command did it, not a republication.
        await waitForStatus(coordinator.dtm, g, 'succeed', 40_000);
      } finally {
        second.child.kill('SIGTERM');
      }
      const effects = await startStepParticipants({ source: source(), dbUrl, topics: [] });
      expect(await effects.effects(g)).toEqual(topics.map((t) => `${t}.action`));
      await effects.close();
    } finally {
      first.child.kill('SIGKILL');
      await coordinator.stop();
    }
  });

  it('finishes after the coordinator is killed mid-saga, with the reply sent while it was down', async () => {
    const replyTopic = `concord.replies.crash2.${run}`;
    const store = await freshDatabase();
    const dbUrl = await freshDatabase();
    const first = await startCoordinator({ store, env: coordinatorEnv(replyTopic) });
    const g = gid();
    // Participants are not running: the first command waits in the topic.
    const warm = await startStepParticipants({ source: source(), dbUrl, topics });
    await warm.close();
    const admin = new Kafka({ brokers: inject('kafkaBrokers').split(','), logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    const commands = async () => (await admin.fetchTopicOffsets(topics[0]!)).reduce((n, p) => n + Number(p.high), 0);
    const before = await commands();
    await post(`${first.dtm}/submit`, body(g, '60'));
    // Killed once the first command is in the topic (not between recording the attempt and publishing).
    await expect.poll(commands, { timeout: 10_000 }).toBe(before + 1);
    await admin.disconnect();
    expect(await first.stop('SIGKILL')).toBeNull();
    // The participant answers now, while no coordinator runs: the reply waits in the reply topic.
    const participants = await startStepParticipants({ source: source(), dbUrl, topics });
    try {
      await expect.poll(() => participants.effects(g), { timeout: 20_000 }).toEqual([`${topics[0]}.action`]);
      const second = await startCoordinator({ store, env: coordinatorEnv(replyTopic) });
      try {
        // Well within the 60 s step timeout: the stored reply advanced the saga, no republication needed.
        await waitForStatus(second.dtm, g, 'succeed', 40_000);
        const actions = (await query(second.dtm, g)).branches.filter((b) => b.op === 'action');
        expect(actions.map((b) => b.attempts)).toEqual([1, 1]);
      } finally {
        await second.stop();
      }
      expect(await participants.effects(g)).toEqual(topics.map((t) => `${t}.action`));
    } finally {
      await participants.close();
    }
  });
});
