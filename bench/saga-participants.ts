/**
 * The services of the saga benchmark, inside the bench process, on the service's own Postgres
 * database. Three steps (inventory, payment, shipping), each a barrier-protected insert of one row
 * into `bench_saga_effects`, reached either over HTTP (a Fastify app, DTM's way) or as commands on
 * Kafka topics (three SDK participants). Compensations write a row too, so a saga that rolled
 * back shows in the counts.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import Fastify from 'fastify';
import { Kafka, logLevel } from 'kafkajs';
import type pg from 'pg';
import { pino } from 'pino';
import { ensureBarrierTable, fastifyBranch, participant, type Participant } from '../sdk/index.js';
import type { SagaStepKind } from './options.js';

export const sagaSteps = ['inventory', 'payment', 'shipping'] as const;
type SagaOp = 'action' | 'compensate';

export const effectsTableDdl = `create table if not exists bench_saga_effects (
  id bigserial primary key, gid text not null, step text not null, op text not null, created_at timestamptz default now())`;

/** Kafka partitions of each command topic. */
const commandPartitions = 8;

export interface SagaParticipants {
  /** The action and compensation URLs of each step, in saga order. */
  steps: { action: string; compensate: string }[];
  close(): Promise<void>;
}

/** What one saga did, from the effect rows of the gids starting with `gidPrefix`. */
export interface EffectCounts {
  /** Sagas with at least one effect row. */
  sagas: number;
  /** Sagas with exactly one action row per step and no compensation row. */
  complete: number;
  /** Compensation rows (a saga that rolled back). */
  compensations: number;
}

export async function prepareEffects(pool: pg.Pool): Promise<void> {
  await ensureBarrierTable(pool);
  await pool.query(effectsTableDdl);
}

export async function countEffects(pool: pg.Pool, gidPrefix: string): Promise<EffectCounts> {
  const { rows } = await pool.query<{ sagas: string; complete: string; compensations: string }>(
    `select count(*) as sagas,
            count(*) filter (where actions = $2 and distinct_steps = $2 and compensations = 0) as complete,
            coalesce(sum(compensations), 0) as compensations
       from (select gid,
                    count(*) filter (where op = 'action') as actions,
                    count(distinct step) filter (where op = 'action') as distinct_steps,
                    count(*) filter (where op = 'compensate') as compensations
               from bench_saga_effects where starts_with(gid, $1) group by gid) per_saga`,
    [gidPrefix, sagaSteps.length],
  );
  const row = rows[0];
  return { sagas: Number(row?.sagas ?? 0), complete: Number(row?.complete ?? 0), compensations: Number(row?.compensations ?? 0) };
}

/** The barrier's business write: one effect row in the same transaction as the barrier row. */
async function insertEffect(tx: pg.PoolClient, gid: string, step: string, op: SagaOp): Promise<void> {
  await tx.query('insert into bench_saga_effects (gid, step, op) values ($1, $2, $3)', [gid, step, op]);
}

export async function startSagaParticipants(kind: SagaStepKind, pool: pg.Pool, kafkaBrokers: string[]): Promise<SagaParticipants> {
  return kind === 'http' ? startHttpSteps(pool) : startKafkaSteps(pool, kafkaBrokers);
}

/** POST /<step>/action and /<step>/compensate, guarded by the barrier (fastifyBranch). */
async function startHttpSteps(pool: pg.Pool): Promise<SagaParticipants> {
  const app = Fastify({ logger: false });
  for (const step of sagaSteps)
    for (const op of ['action', 'compensate'] as const)
      app.post(
        `/${step}/${op}`,
        fastifyBranch(async ({ barrier }) => {
          await barrier.run<void, pg.PoolClient>(pool, (tx) => insertEffect(tx, barrier.call.gid, step, op));
        }),
      );
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  let closed: Promise<void> | undefined;
  return {
    steps: sagaSteps.map((step) => ({ action: `${url}/${step}/action`, compensate: `${url}/${step}/compensate` })),
    close: () => (closed ??= app.close()),
  };
}

/**
 * One participant per step on the topic bench-<step>-<run> (kafka://default/…). The run id keeps
 * a shared broker (CONCORD_TEST_KAFKA_BROKERS) from replaying an earlier run's commands; the
 * topics are created up front with several partitions so that a step's commands run side by side.
 */
async function startKafkaSteps(pool: pg.Pool, brokers: string[]): Promise<SagaParticipants> {
  const run = randomBytes(3).toString('hex');
  const topics = sagaSteps.map((step) => `bench-${step}-${run}`);
  await createTopics(brokers, topics, commandPartitions);
  // Handler failures and unpublished replies are warnings: they should show.
  const logger = pino({ level: 'warn' }, pino.destination(2));
  const started: Participant<pg.PoolClient>[] = [];
  try {
    for (const [i, step] of sagaSteps.entries()) {
      const topic = topics[i]!;
      const p = participant<pg.PoolClient>(topic, {
        source: { kafka: { brokers, groupId: `${topic}-participant` } },
        db: pool,
        logger,
      });
      for (const op of ['action', 'compensate'] as const) p.on(op, ({ tx, gid }) => insertEffect(tx, gid, step, op));
      await p.start();
      started.push(p);
    }
  } catch (err) {
    await Promise.all(started.map((p) => p.close()));
    throw err;
  }
  return {
    steps: topics.map((topic) => ({ action: `kafka://default/${topic}`, compensate: `kafka://default/${topic}` })),
    close: async () => {
      await Promise.all(started.map((p) => p.close()));
    },
  };
}

/**
 * Creates the topics and waits until every partition has a leader. kafkajs' waitForLeaders (its
 * default) gives up on the broker's UNKNOWN_TOPIC_OR_PARTITION, which a freshly created topic may
 * answer for a moment on a busy machine; this polls the metadata instead.
 */
async function createTopics(brokers: string[], topics: string[], numPartitions: number): Promise<void> {
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions })), waitForLeaders: false });
    const deadline = performance.now() + 30_000;
    for (;;) {
      const ready = await admin.fetchTopicMetadata({ topics }).then(
        ({ topics: found }) => found.length === topics.length && found.every((t) => t.partitions.every((p) => p.leader >= 0)),
        () => false,
      );
      if (ready) return;
      if (performance.now() > deadline) throw new Error(`Kafka topics ${topics.join(', ')} have no leaders after 30 s`);
      await delay(200);
    }
  } finally {
    await admin.disconnect();
  }
}
