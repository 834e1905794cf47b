/**
 * The gRPC branch service of the compat tests: its tables (shared by the Go service, mode grpcb-busi
 * of test/compat/go, and the TypeScript one of test/compat-grpc.test.ts), its plan and what it saw.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { ensureBarrierTable } from '../../sdk/index.js';

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
