/**
 * What Postgres was doing during the window, per database: commits, and what its sessions were
 * waiting for, sampled from pg_stat_activity every 50 ms. Many sessions idle in a transaction mean
 * Postgres waits for its clients; many on IO or locks mean the clients wait for Postgres.
 */
import pg from 'pg';

/** Mean number of sessions in each state over the samples. */
export interface SessionStates {
  /** Running a statement, not waiting (on a CPU or in its run queue). */
  running: number;
  /** Waiting for IO: WAL writes and flushes, data files. */
  io: number;
  /** Waiting for a lock or a lightweight lock (WALWrite among them). */
  lock: number;
  /** Inside a transaction, waiting for the client's next statement. */
  idleInTransaction: number;
}

export interface DatabaseActivity {
  commits: number;
  sessions: SessionStates;
}

export interface ActivityWatch {
  /** Stops sampling; activity per database name. */
  stop(): Promise<Map<string, DatabaseActivity>>;
}

const sampleEveryMs = 50;

export async function watchPostgres(adminUrl: string, databases: string[]): Promise<ActivityWatch> {
  const client = new pg.Client({ connectionString: adminUrl });
  client.on('error', () => {});
  await client.connect();
  const commits = async () => {
    const { rows } = await client.query<{ datname: string; commits: string }>(
      'select datname, xact_commit::text as commits from pg_stat_database where datname = any($1)',
      [databases],
    );
    return new Map(rows.map((r) => [r.datname, Number(r.commits)]));
  };
  // pg_stat_database lags: a busy backend reports its counts about once a second (PG 15). The lag
  // is the same at both ends of the window, so in a steady state the difference is still right.
  const before = await commits();
  const sums = new Map<string, SessionStates>(databases.map((d) => [d, { running: 0, io: 0, lock: 0, idleInTransaction: 0 }]));
  let samples = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const started = performance.now();
      const result = await client
        .query<{ datname: string; state: string | null; wait: string | null }>(
          `select datname, state, wait_event_type as wait from pg_stat_activity
           where datname = any($1) and pid <> pg_backend_pid() and state is not null and state <> 'idle'`,
          [databases],
        )
        .catch(() => undefined);
      if (result === undefined) break; // the server went away (Ctrl-C stops it too); stop() reports what was seen
      const { rows } = result;
      samples++;
      for (const row of rows) {
        const sum = sums.get(row.datname);
        if (sum === undefined) continue;
        if (row.state === 'idle in transaction' || row.wait === 'Client') sum.idleInTransaction++;
        else if (row.wait === 'IO') sum.io++;
        else if (row.wait === 'LWLock' || row.wait === 'Lock') sum.lock++;
        else if (row.wait === null) sum.running++;
      }
      await new Promise((r) => setTimeout(r, Math.max(0, sampleEveryMs - (performance.now() - started))));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      const after = await commits().catch(() => new Map<string, number>());
      await client.end().catch(() => undefined);
      const n = Math.max(1, samples);
      return new Map(
        databases.map((d) => {
          const s = sums.get(d) ?? { running: 0, io: 0, lock: 0, idleInTransaction: 0 };
          const sessions = { running: s.running / n, io: s.io / n, lock: s.lock / n, idleInTransaction: s.idleInTransaction / n };
          return [d, { commits: (after.get(d) ?? 0) - (before.get(d) ?? 0), sessions }];
        }),
      );
    },
  };
}
