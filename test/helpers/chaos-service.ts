/**
 * The chaos run's business service: HTTP branches for messages and saga steps, and the sender's
 * side of a two-phase message (its local transaction and the check-back), on Fastify with its own
 * Postgres database behind the SDK's barrier. Every business effect is one row in `chaos_effects`,
 * written inside the barrier, so duplicates the barrier absorbed and null compensations leave none,
 * and a row written twice for one (gid, branch, op) is a duplicate effect the barrier let through.
 */
import Fastify from 'fastify';
import pg from 'pg';
import { BranchBarrier, BranchFailure, BranchOngoing, ensureBarrierTable, fastifyBranch, fastifyQueryPrepared } from '../../sdk/index.js';

/** What a saga step's action does; its payload carries it, so one route serves every saga kind. */
export type StepMode = 'ok' | 'fail' | 'slow';

export interface StepPayload {
  mode: StepMode;
}

export interface ChaosEffect {
  gid: string;
  branch_id: string;
  op: string;
  n: number;
}

export interface ChaosService {
  url: string;
  /** The sender's local transaction of a message: its barrier row and a 'local' effect, in one commit. */
  commitLocal(gid: string): Promise<void>;
  /** Requests received, including the ones the barrier absorbed and the ones answered with an error. */
  calls(): number;
  /** Effects per (gid, branch_id, op); op 'local' is the sender's own commit. */
  effects(): Promise<ChaosEffect[]>;
  close(): Promise<void>;
}

const schema = `create table if not exists chaos_effects (
  id bigserial primary key, gid text not null, branch_id text not null, op text not null)`;

/** `slowMs`: how long a 'slow' action takes before it answers ONGOING (425). */
export async function startChaosService(databaseUrl: string, slowMs: number): Promise<ChaosService> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 30 });
  pool.on('error', () => {}); // an idle client's dropped connection surfaces on its next query
  await ensureBarrierTable(pool);
  await pool.query(schema);
  let calls = 0;
  const effect = (barrier: BranchBarrier) =>
    barrier.run<void, pg.PoolClient>(pool, async (tx) => {
      const { gid, branch_id, op } = barrier.call;
      await tx.query('insert into chaos_effects (gid, branch_id, op) values ($1, $2, $3)', [gid, branch_id, op]);
    });

  const app = Fastify();
  app.addHook('onRequest', async () => {
    calls++;
  });
  app.post(
    '/msg',
    fastifyBranch(async ({ barrier }) => {
      await effect(barrier);
    }),
  );
  app.post(
    '/saga/action',
    fastifyBranch<StepPayload>(async ({ barrier, body }) => {
      if (body.mode === 'fail') throw new BranchFailure('planned failure');
      if (body.mode === 'slow') {
        await new Promise((resolve) => setTimeout(resolve, slowMs));
        throw new BranchOngoing('still working');
      }
      await effect(barrier);
    }),
  );
  app.post(
    '/saga/compensate',
    fastifyBranch(async ({ barrier }) => {
      await effect(barrier);
    }),
  );
  app.get('/QueryPrepared', fastifyQueryPrepared(pool));
  const url = await app.listen({ port: 0, host: '127.0.0.1' });

  return {
    url,
    async commitLocal(gid) {
      const barrier = new BranchBarrier({ trans_type: 'msg', gid, branch_id: '00', op: 'msg' });
      await barrier.run<void, pg.PoolClient>(pool, async (tx) => {
        await tx.query(`insert into chaos_effects (gid, branch_id, op) values ($1, '00', 'local')`, [gid]);
      });
    },
    calls: () => calls,
    effects: async () =>
      (await pool.query<ChaosEffect>('select gid, branch_id, op, count(*)::int as n from chaos_effects group by gid, branch_id, op')).rows,
    async close() {
      await app.close();
      await pool.end();
    },
  };
}
