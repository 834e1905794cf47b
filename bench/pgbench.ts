/**
 * The ceiling: how many one-row INSERT commits per second the same Postgres takes at the same
 * concurrency, measured by pgbench. A message costs at least one such commit in the service's
 * database and more in the coordinator's store, so it cannot go faster than this.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { tail } from '../test/services/run-command.js';

export const pgbenchTableDdl = 'create table if not exists bench_rows (id bigserial primary key, v int not null)';

export interface PgbenchRunner {
  /** Commits per second at `clients` connections over `seconds`. */
  run(clients: number, seconds: number, signal?: AbortSignal): Promise<number>;
  close(): Promise<void>;
}

/** Prepares the table in the database of `databaseUrl` and a script file for pgbench. */
export async function preparePgbench(bin: string, databaseUrl: string): Promise<PgbenchRunner> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(pgbenchTableDdl);
  } finally {
    await client.end();
  }
  const dir = await mkdtemp(join(tmpdir(), 'concord-pgbench-'));
  const script = join(dir, 'insert.sql');
  await writeFile(script, 'INSERT INTO bench_rows(v) VALUES (1);\n');
  return {
    async run(clients, seconds, signal) {
      // -n: no vacuum of pgbench's own tables (we have none); -j: at most one thread per client.
      const args = ['-n', '-c', String(clients), '-j', String(Math.min(2, clients)), '-T', String(Math.ceil(seconds)), '-f', script];
      const output = await runPgbench(join(bin, 'pgbench'), [...args, databaseUrl], signal);
      const tps = /^tps = ([\d.]+)/m.exec(output)?.[1];
      if (tps === undefined) throw new Error(`pgbench printed no tps:\n${tail(output)}`);
      return Number(tps);
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

function runPgbench(command: string, args: string[], signal: AbortSignal | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], signal, killSignal: 'SIGKILL' });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(output);
      else reject(new Error(`pgbench exited with ${code}:\n${tail(output)}`));
    });
  });
}
