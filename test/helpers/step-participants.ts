/**
 * Saga participants for the broker tests: one `participant()` per step topic (Kafka) or queue
 * (RabbitMQ), commands "do" and "undo", each writing one effect row in the barrier's transaction.
 * A step can be told to refuse (BranchFailure) a gid's command, or to block inside the handler's
 * transaction (for SIGKILL tests in a child process, see participant-process.ts).
 */
import pg from 'pg';
import { BranchFailure, participant, type Participant, type ParticipantOptions } from '../../sdk/index.js';

export const effectsDdl = `create table if not exists saga_effects (
  id bigserial primary key, gid text not null, step text not null, op text not null)`;

export interface StepParticipantsOptions {
  source: ParticipantOptions['source'];
  dbUrl: string;
  /** One topic (Kafka) or queue (RabbitMQ) per step. */
  topics: string[];
  /** Called when a handler starts (for the child process's progress lines). */
  onCommand?: (command: { gid: string; topic: string; op: string; attempt: number }) => void;
  /** Blocks the handler of this gid's action on this topic forever (until the process is killed). */
  blockOn?: { gid: string; topic: string };
}

export interface StepParticipants {
  pool: pg.Pool;
  /** Refuses (BranchFailure) the action of `gid` on `topic`. */
  refuse(topic: string, gid: string): void;
  /** Handler runs seen, per gid (duplicates the barrier absorbed do not run the handler). */
  runs(gid: string): string[];
  /** Committed effects of a gid, in commit order: `<topic>.<op>`. */
  effects(gid: string): Promise<string[]>;
  close(): Promise<void>;
}

export async function startStepParticipants(options: StepParticipantsOptions): Promise<StepParticipants> {
  const pool = new pg.Pool({ connectionString: options.dbUrl, max: 10 });
  await pool.query(effectsDdl);
  const refused = new Set<string>();
  const runs = new Map<string, string[]>();
  // A consumer group per topic: kafkajs assigns a group's partitions without regard to what each member subscribed.
  const sourceFor = (topic: string): ParticipantOptions['source'] =>
    'kafka' in options.source
      ? { kafka: { ...options.source.kafka, groupId: `${options.source.kafka.groupId}-${topic}` } }
      : options.source;
  const participants: Participant<pg.PoolClient>[] = options.topics.map((topic) =>
    participant<pg.PoolClient>(topic, { source: sourceFor(topic), db: pool, retry: { attempts: 2, base: 0.05, cap: 0.1 } })
      .on('do', async ({ tx, gid, op, attempt }) => {
        options.onCommand?.({ gid, topic, op, attempt });
        runs.set(gid, [...(runs.get(gid) ?? []), `${topic}.${op}`]);
        if (refused.has(`${topic} ${gid}`)) throw new BranchFailure(`${topic} refuses ${gid}`);
        await tx.query('insert into saga_effects (gid, step, op) values ($1, $2, $3)', [gid, topic, op]);
        if (options.blockOn?.gid === gid && options.blockOn.topic === topic) await new Promise(() => {}); // until SIGKILL
        return { step: topic, done: true };
      })
      .on('undo', async ({ tx, gid, op, attempt }) => {
        options.onCommand?.({ gid, topic, op, attempt });
        runs.set(gid, [...(runs.get(gid) ?? []), `${topic}.${op}`]);
        await tx.query('insert into saga_effects (gid, step, op) values ($1, $2, $3)', [gid, topic, op]);
      }),
  );
  await Promise.all(participants.map((p) => p.start()));
  return {
    pool,
    refuse: (topic, gid) => refused.add(`${topic} ${gid}`),
    runs: (gid) => runs.get(gid) ?? [],
    async effects(gid) {
      const { rows } = await pool.query<{ step: string; op: string }>('select step, op from saga_effects where gid = $1 order by id', [
        gid,
      ]);
      return rows.map((r) => `${r.step}.${r.op}`);
    },
    async close() {
      await Promise.all(participants.map((p) => p.close()));
      await pool.end();
    },
  };
}
