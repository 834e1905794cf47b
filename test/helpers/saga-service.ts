/**
 * A real business service for saga tests, on Fastify with its own Postgres database and the
 * Concord SDK's barrier. Any step name works: the coordinator calls `<url>/<step>/action` and
 * `<url>/<step>/compensate` (with DTM's ?gid&trans_type&branch_id&op; POST with the payload, or
 * GET when the payload is empty). Every call is recorded in arrival order; its business effect is
 * one row in `effects`, written inside the barrier, so duplicates the barrier absorbed and null
 * compensations leave no row. Each step and op can be told to fail.
 */
import Fastify from 'fastify';
import pg from 'pg';
import { BranchFailure, BranchOngoing, ensureBarrierTable, fastifyBranch } from '../../sdk/index.js';

export type SagaOp = 'action' | 'compensate';
/** error: 500, retried; ongoing: 425, asked again later; failure: 409, rolls the saga back (for an action). */
export type FailureKind = 'error' | 'ongoing' | 'failure';

/** One request the service received. Times are `performance.now()` milliseconds of this process. */
export interface SagaCall {
  gid: string;
  step: string;
  op: SagaOp;
  branchId: string;
  method: string;
  /** The parsed JSON body (undefined for a GET). */
  body: unknown;
  headers: Record<string, string | string[] | undefined>;
  arrivedAt: number;
  /** When the answer was ready; undefined while the call is running. */
  endedAt?: number;
  /** The HTTP status answered; undefined while the call is running. */
  status?: number;
}

export interface SagaEffect {
  step: string;
  op: SagaOp;
  created_at: Date;
}

export interface SagaService {
  /** Base URL, e.g. http://127.0.0.1:PORT; a step's URLs are `${url}/${step}/action|compensate`. */
  url: string;
  pool: pg.Pool;
  stepUrl(step: string, op: SagaOp): string;
  /** Answers the next `n` calls of this step and op with `kind` (then behaves normally). */
  failNext(step: string, op: SagaOp, n: number, kind: FailureKind): void;
  /** Answers every call of this step and op with `kind` until `heal`. */
  failAlways(step: string, op: SagaOp, kind: FailureKind): void;
  heal(step: string, op: SagaOp): void;
  /** Makes every call of this step (both ops) take this many milliseconds before it answers. */
  setLatency(step: string, ms: number): void;
  /** The calls of one gid in arrival order (including those that failed or that the barrier absorbed). */
  calls(gid: string): SagaCall[];
  /** The business effects of one gid, in the order they were committed. */
  effects(gid: string): Promise<SagaEffect[]>;
  close(): Promise<void>;
}

const schema = `create table if not exists effects (
  id bigserial primary key, gid text not null, step text not null, op text not null, created_at timestamptz not null default clock_timestamp())`;

export async function startSagaService(databaseUrl: string): Promise<SagaService> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 20 });
  await ensureBarrierTable(pool);
  await pool.query(schema);
  const planned = new Map<string, { remaining: number; kind: FailureKind }>(); // key: `${step} ${op}`
  const latency = new Map<string, number>();
  const calls: SagaCall[] = [];

  const app = Fastify();
  for (const op of ['action', 'compensate'] as const)
    app.route<{ Params: { step: string } }>({
      method: ['GET', 'POST'],
      url: `/:step/${op}`,
      handler: async (request, reply) => {
        const { step } = request.params;
        const query = request.query as Record<string, string | undefined>;
        const call: SagaCall = {
          gid: query.gid ?? '',
          step,
          op,
          branchId: query.branch_id ?? '',
          method: request.method,
          body: request.body,
          headers: { ...request.headers },
          arrivedAt: performance.now(),
        };
        calls.push(call);
        const answer = fastifyBranch(async ({ barrier }) => {
          const ms = latency.get(step) ?? 0;
          if (ms > 0) await new Promise((r) => setTimeout(r, ms));
          const plan = planned.get(`${step} ${op}`);
          if (plan && plan.remaining > 0) {
            plan.remaining--;
            const why = `planned ${plan.kind} of ${step}/${op}`;
            if (plan.kind === 'failure') throw new BranchFailure(why);
            if (plan.kind === 'ongoing') throw new BranchOngoing(why);
            throw new Error(why);
          }
          await barrier.run<void, pg.PoolClient>(pool, async (tx) => {
            await tx.query('insert into effects (gid, step, op) values ($1, $2, $3)', [barrier.call.gid, step, op]);
          });
        });
        const sent = await answer(request, reply);
        call.endedAt = performance.now();
        call.status = reply.statusCode;
        return sent;
      },
    });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });

  return {
    url,
    pool,
    stepUrl: (step, op) => `${url}/${step}/${op}`,
    failNext: (step, op, n, kind) => planned.set(`${step} ${op}`, { remaining: n, kind }),
    failAlways: (step, op, kind) => planned.set(`${step} ${op}`, { remaining: Infinity, kind }),
    heal: (step, op) => planned.delete(`${step} ${op}`),
    setLatency: (step, ms) => latency.set(step, ms),
    calls: (gid) => calls.filter((c) => c.gid === gid),
    effects: async (gid) =>
      (await pool.query<SagaEffect>('select step, op, created_at from effects where gid = $1 order by id', [gid])).rows,
    async close() {
      await app.close();
      await pool.end();
    },
  };
}
