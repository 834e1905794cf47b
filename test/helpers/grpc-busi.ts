/**
 * The gRPC branch service of the compat tests: its tables (shared by the Go service, mode grpcb-busi
 * of test/compat/go, and the TypeScript one of test/compat-grpc.test.ts), its plan and what it saw.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import pg from 'pg';
import { BranchFailure, BranchOngoing, ensureBarrierTable, grpcBranch, grpcBranchService } from '../../sdk/index.js';

const tables = `
create table if not exists busi_calls (id serial primary key, gid text, branch_id text, op text, method text,
  payload bytea, metadata text, started timestamptz, ended timestamptz, answer text);
create table if not exists busi_effects (id serial primary key, gid text, branch_id text, op text, method text);
create table if not exists busi_plan (gid text, method text, result text, times int, primary key (gid, method));`;

export interface BusiCall {
  branch_id: string;
  op: string;
  method: string;
  payload: Buffer;
  metadata: string;
  started: Date;
  ended: Date | null;
  answer: string | null;
}

/** The busi database: DTM's barrier table (as `concord barrier-sql` makes it) and busi's own. */
export class BusiDb {
  readonly pool: pg.Pool;
  constructor(readonly url: string) {
    this.pool = new pg.Pool({ connectionString: url, max: 3 });
  }

  async init(): Promise<this> {
    await ensureBarrierTable(this.pool);
    await this.pool.query(tables);
    return this;
  }

  /** `method` answers `result` for `gid`, `times` more times (null: always). */
  async plan(gid: string, method: string, result: 'failure' | 'ongoing' | 'error', times: number | null = null): Promise<void> {
    await this.pool.query(
      `insert into busi_plan (gid, method, result, times) values ($1, $2, $3, $4)
       on conflict (gid, method) do update set result = excluded.result, times = excluded.times`,
      [gid, method, result, times],
    );
  }

  async heal(gid: string): Promise<void> {
    await this.pool.query('delete from busi_plan where gid = $1', [gid]);
  }

  /** The effects, as "branch_id op method", in order. */
  async effects(gid: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ e: string }>(
      `select branch_id || ' ' || op || ' ' || method as e from busi_effects where gid = $1 order by id`,
      [gid],
    );
    return rows.map((r) => r.e);
  }

  async calls(gid: string): Promise<BusiCall[]> {
    const { rows } = await this.pool.query<BusiCall>(
      'select branch_id, op, method, payload, metadata, started, ended, answer from busi_calls where gid = $1 order by id',
      [gid],
    );
    return rows;
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}

export interface GoBusi {
  /** host:port */
  address: string;
  proc: ChildProcess;
  stderr(): string;
  kill(): void;
}

/** Starts the Go driver's gRPC branch service on `db` (its tables made), talking to the coordinator's gRPC API `dtm`. */
export async function startGoBusi(bin: string, dtm: string, db: string): Promise<GoBusi> {
  const proc = spawn(bin, ['-mode', 'grpcb-busi', '-dtm', dtm, '-db', db], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' },
  });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: proc.stdout });
  const first = await Promise.race([once(lines, 'line'), once(proc, 'exit').then(() => [undefined])]);
  const address = first[0] as string | undefined;
  if (!address || !/^127\.0\.0\.1:\d+$/.test(address)) throw new Error(`grpcb-busi did not start: ${address ?? ''}\n${stderr}`);
  return { address, proc, stderr: () => stderr, kill: () => proc.kill('SIGKILL') };
}

export interface TsBusi {
  /** host:port */
  address: string;
  close(): Promise<void>;
}

/**
 * The same service in TypeScript, with the SDK's gRPC adapter (grpcBranchService, grpcBranch and the
 * barrier) on the same tables: busi.Busi's saga methods TransOut, TransIn and their Revert. It records
 * each request's raw bytes as `payload` (the Go service records the BytesValue's value).
 */
export async function startTsBusi(db: BusiDb): Promise<TsBusi> {
  const method = (name: string) =>
    grpcBranch(async ({ barrier, body, metadata }) => {
      const { gid, branch_id, op } = barrier.call;
      const { rows } = await db.pool.query<{ id: number }>(
        `insert into busi_calls (gid, branch_id, op, method, payload, metadata, started)
         values ($1, $2, $3, $4, $5, $6, clock_timestamp()) returning id`,
        [gid, branch_id, op, name, body, JSON.stringify(metadata)],
      );
      let answer = 'OK';
      try {
        const planned = await db.pool.query<{ result: string }>(
          `update busi_plan set times = times - 1
           where gid = $1 and method = $2 and (times is null or times > 0) returning result`,
          [gid, name],
        );
        const result = planned.rows[0]?.result;
        if (result === 'failure') throw new BranchFailure('planned FAILURE');
        if (result === 'ongoing') throw new BranchOngoing('planned ONGOING');
        if (result) throw new Error('planned error');
        await barrier.run(db.pool, (tx: pg.PoolClient) =>
          tx.query('insert into busi_effects (gid, branch_id, op, method) values ($1, $2, $3, $4)', [gid, branch_id, op, name]),
        );
      } catch (e) {
        answer = e instanceof BranchFailure ? 'Aborted' : e instanceof BranchOngoing ? 'FailedPrecondition' : 'Internal';
        throw e;
      } finally {
        await db.pool.query('update busi_calls set ended = clock_timestamp(), answer = $2 where id = $1', [rows[0]!.id, answer]);
      }
    });
  const names = ['TransOut', 'TransIn', 'TransOutRevert', 'TransInRevert'];
  const { definition, implementation } = grpcBranchService('busi.Busi', Object.fromEntries(names.map((n) => [n, method(n)])));
  const server = new Server();
  server.addService(definition, implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.tryShutdown(() => resolve())),
  };
}
