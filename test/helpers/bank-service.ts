/**
 * A real business service for the tests: the bank of the quick start, on Fastify, with its own
 * Postgres database and the Concord SDK's barrier. It records every delivery it receives and how
 * many calls of the same branch overlapped, so tests can assert exactly-once and never-at-once.
 */
import Fastify from 'fastify';
import pg from 'pg';
import { BranchFailure, BranchOngoing, ensureBarrierTable, fastifyBranch, fastifyQueryPrepared, Tcc } from '../../sdk/index.js';

export interface BankService {
  url: string;
  pool: pg.Pool;
  /** Answers the next `n` calls of `path` with `kind` (then behaves normally). */
  failNext(path: string, n: number, kind: 'error' | 'ongoing' | 'failure'): void;
  /** Makes each branch call take this many milliseconds. */
  setLatency(ms: number): void;
  /** Deliveries received per gid and path (including duplicates the barrier absorbed). */
  received(gid: string, path: string): number;
  /** Business effects applied (rows in `transfers`) for a gid. */
  effects(gid: string): Promise<number>;
  /** The kinds of the effects applied for a gid, sorted. */
  effectKinds(gid: string): Promise<string[]>;
  /** The most calls of one branch (gid, path) that were in progress at the same moment. */
  maxOverlap(): number;
  close(): Promise<void>;
}

export const bankSchema = `create table if not exists transfers (
  id bigserial primary key, gid text not null, kind text not null, amount int not null, created_at timestamptz default now())`;

export async function startBankService(databaseUrl: string): Promise<BankService> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 20 });
  await ensureBarrierTable(pool);
  await pool.query(bankSchema);
  const failures = new Map<string, { n: number; kind: 'error' | 'ongoing' | 'failure' }>();
  const counts = new Map<string, number>();
  const running = new Map<string, number>();
  let overlap = 0;
  let latency = 0;

  const app = Fastify();
  let url = '';
  const branch = (path: string, kind: string) =>
    fastifyBranch<{ amount: number }>(async ({ barrier, body }) => {
      const key = `${barrier.call.gid} ${path}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      running.set(key, (running.get(key) ?? 0) + 1);
      overlap = Math.max(overlap, running.get(key) ?? 0);
      try {
        if (latency > 0) await new Promise((r) => setTimeout(r, latency));
        const planned = failures.get(path);
        if (planned && planned.n > 0) {
          planned.n--;
          if (planned.kind === 'failure') throw new BranchFailure('planned failure');
          if (planned.kind === 'ongoing') throw new BranchOngoing('planned ongoing');
          throw new Error('planned error');
        }
        await barrier.run<void, pg.PoolClient>(pool, async (tx) => {
          await tx.query('insert into transfers (gid, kind, amount) values ($1, $2, $3)', [barrier.call.gid, kind, body.amount]);
        });
      } finally {
        running.set(key, (running.get(key) ?? 1) - 1);
      }
    });
  app.post('/TransIn', branch('/TransIn', 'in'));
  app.post('/TransOut', branch('/TransOut', 'out'));
  app.get('/QueryPrepared', fastifyQueryPrepared(pool));
  // TCC: kinds out-try, out-confirm, out-cancel, in-try…
  for (const side of ['Out', 'In']) {
    for (const phase of ['Try', 'Confirm', 'Cancel']) {
      const path = `/Trans${side}${phase}`;
      app.post(path, branch(path, `${side.toLowerCase()}-${phase.toLowerCase()}`));
    }
  }
  // Nested TCC: this Try continues the caller's TCC with TransIn as its sub-branch (kinds
  // nested-confirm and nested-cancel for its own Confirm and Cancel).
  app.post(
    '/TransInNestedTry',
    fastifyBranch<{ amount: number }>(async ({ barrier, body, query }) => {
      const key = `${barrier.call.gid} /TransInNestedTry`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      await Tcc.fromQuery(query).callBranch(body, `${url}/TransInTry`, `${url}/TransInConfirm`, `${url}/TransInCancel`);
    }),
  );
  app.post('/TransInNestedConfirm', branch('/TransInNestedConfirm', 'nested-confirm'));
  app.post('/TransInNestedCancel', branch('/TransInNestedCancel', 'nested-cancel'));
  url = await app.listen({ port: 0, host: '127.0.0.1' });

  return {
    url,
    pool,
    failNext: (path, n, kind) => failures.set(path, { n, kind }),
    setLatency: (ms) => (latency = ms),
    received: (gid, path) => counts.get(`${gid} ${path}`) ?? 0,
    effects: async (gid) => Number((await pool.query('select count(*) from transfers where gid = $1', [gid])).rows[0].count),
    effectKinds: async (gid) =>
      (await pool.query<{ kind: string }>('select kind from transfers where gid = $1 order by kind', [gid])).rows.map((r) => r.kind),
    maxOverlap: () => overlap,
    async close() {
      await app.close();
      await pool.end();
    },
  };
}
