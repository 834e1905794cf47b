/**
 * The database holding an outbox table: Postgres or MySQL/MariaDB. The drain needs little of it:
 * statements (outbox-sql writes them per dialect, with $n placeholders), Concord's state tables,
 * and a session that holds the drain's lock for as long as it runs (and, on Postgres, LISTENs).
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type mysql from 'mysql2/promise';
import pg from 'pg';
import { outboxStateDdlMysql, outboxStateDdlPostgres } from '../../schemas/db/outbox.js';
import { quoteIdent } from './outbox-sql.js';

export type OutboxDialect = 'postgres' | 'mysql';

/** What callers hand the drain: a pg pool, or a mysql2 promise pool. */
export type OutboxPool = pg.Pool | mysql.Pool;

export interface Queryable {
  /** rowCount: rows returned, or changed by an update or delete. */
  query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[]; rowCount: number }>;
}

export interface OutboxDb extends Queryable {
  dialect: OutboxDialect;
  /** Creates concord_outbox_parked and concord_outbox_stats (and, on Postgres, concord_outbox_cursor) if missing. */
  ensureState(): Promise<void>;
  /** A connection of its own, for the drain's lock. */
  session(): Promise<OutboxSession>;
}

export interface OutboxSession {
  /** Takes the named lock (concord_outbox:<drain>[:<part>]) unless another session holds it. */
  tryLock(name: string): Promise<boolean>;
  /**
   * Joins the members of `name` (every coordinator running one outbox holds this for as long as it
   * runs it) and returns how many hold it now: a shared advisory lock on Postgres, one of a few
   * GET_LOCK slots on MySQL (which has no shared locks). Called again, it only counts.
   */
  members(name: string): Promise<number>;
  /** Postgres: calls `onNotify` on each NOTIFY of the channel. */
  listen(channel: string, onNotify: () => void): Promise<void>;
  /** Why the connection was lost, if it was: the lock went with it. */
  lost(): Error | undefined;
  /** Closes the connection (never reused: it held the lock). */
  release(): void;
}

/** Opens a pool on a postgres:// or mysql:// URL (mariadb:// too). */
export function openOutboxPool(url: string, max: number): OutboxPool {
  const scheme = url.slice(0, url.indexOf(':'));
  if (scheme === 'mysql' || scheme === 'mariadb') {
    const parsed = new URL(url);
    parsed.protocol = 'mysql:';
    // Required here, not imported: a Postgres outbox's drain does not carry the MySQL client (17 MB).
    const { createPool } = createRequire(import.meta.url)('mysql2/promise') as typeof mysql;
    return createPool({ uri: parsed.toString(), connectionLimit: max, supportBigNumbers: true, bigNumberStrings: true });
  }
  return new pg.Pool({ connectionString: url, max });
}

export function isMysqlPool(pool: OutboxPool | pg.ClientBase): pool is mysql.Pool {
  return !(pool instanceof pg.Pool) && !(pool instanceof pg.Client) && 'getConnection' in pool;
}

/** The database behind a pool (or, for one-off statements, a pg client). */
export function outboxDb(pool: OutboxPool | pg.ClientBase): OutboxDb {
  return isMysqlPool(pool) ? new MysqlOutboxDb(pool) : new PostgresOutboxDb(pool);
}

class PostgresOutboxDb implements OutboxDb {
  readonly dialect = 'postgres';
  constructor(private readonly pool: pg.Pool | pg.ClientBase) {}

  async query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[]; rowCount: number }> {
    const { rows, rowCount } = await this.pool.query(sql, params);
    return { rows: rows as T[], rowCount: rowCount ?? 0 };
  }

  async ensureState(): Promise<void> {
    // One implicit transaction: drains starting together would race on CREATE ... IF NOT EXISTS.
    await this.pool.query(`select pg_advisory_xact_lock(4244); ${outboxStateDdlPostgres}`);
  }

  async session(): Promise<OutboxSession> {
    if (!(this.pool instanceof pg.Pool)) throw new Error('a drain needs a pool');
    const client = await this.pool.connect();
    let lost: Error | undefined;
    let joined = false;
    client.on('error', (err) => (lost = err));
    return {
      tryLock: async (name) => {
        const { rows } = await client.query<{ ok: boolean }>(`select pg_try_advisory_lock(hashtextextended($1, 0)) as ok`, [name]);
        return rows[0]!.ok;
      },
      members: async (name) => {
        if (!joined) await client.query('select pg_advisory_lock_shared(hashtextextended($1, 0))', [name]);
        joined = true;
        const { rows } = await client.query<{ n: number }>(
          `with k as (select hashtextextended($1, 0) as k)
           select count(*)::int as n from pg_locks, k where locktype = 'advisory' and objsubid = 1 and granted
             and classid = ((k.k >> 32) & 4294967295)::oid and objid = (k.k & 4294967295)::oid`,
          [name],
        );
        return rows[0]!.n;
      },
      listen: async (channel, onNotify) => {
        client.on('notification', onNotify);
        await client.query(`listen ${quoteIdent(channel)}`);
      },
      lost: () => lost,
      release: () => client.release(lost ?? true),
    };
  }
}

class MysqlOutboxDb implements OutboxDb {
  readonly dialect = 'mysql';
  constructor(private readonly pool: mysql.Pool) {}

  async query<T>(sql: string, params: unknown[] = []): Promise<{ rows: T[]; rowCount: number }> {
    const [text, values] = positional(sql, params);
    const [result] = await this.pool.query(text, values);
    if (Array.isArray(result)) return { rows: result as T[], rowCount: result.length };
    return { rows: [], rowCount: result.affectedRows };
  }

  async ensureState(): Promise<void> {
    for (const ddl of outboxStateDdlMysql) await this.pool.query(ddl);
  }

  async session(): Promise<OutboxSession> {
    const connection = await this.pool.getConnection();
    let lost: Error | undefined;
    connection.connection.on('error', (err: Error) => (lost = err));
    // GET_LOCK is server-wide and its names are at most 64 characters: a hash of database and name.
    const lockName = (name: string) =>
      `concord:${createHash('sha1')
        .update(`${connection.config.database ?? ''}:${name}`)
        .digest('hex')}`;
    const tryLock = async (name: string) => {
      const [rows] = await connection.query<mysql.RowDataPacket[]>(`select get_lock(?, 0) as ok`, [lockName(name)]);
      return Number(rows[0]!.ok) === 1;
    };
    const slots = (name: string) => Array.from({ length: memberSlots }, (_, i) => lockName(`${name}#${i}`));
    let joined = false;
    return {
      tryLock,
      members: async (name) => {
        for (let i = 0; !joined && i < memberSlots; i++) joined = await tryLock(`${name}#${i}`);
        const [rows] = await connection.query<mysql.RowDataPacket[]>(
          `select ${slots(name)
            .map(() => '(is_used_lock(?) is not null)')
            .join(' + ')} as n`,
          slots(name),
        );
        return Number(rows[0]!.n);
      },
      listen: () => Promise.reject(new Error('MySQL has no LISTEN/NOTIFY')),
      lost: () => lost,
      release: () => connection.destroy(),
    };
  }
}

/** MySQL: how many coordinators can count themselves as members of one outbox (more run, uncounted). */
const memberSlots = 32;

/**
 * outbox-sql writes $1, $2, … for both dialects; mysql2 takes `?` in order of appearance, and
 * expands an array into a list (for `in ($1)`). Quoted identifiers and strings are left alone.
 */
function positional(sql: string, params: unknown[]): [string, unknown[]] {
  const values: unknown[] = [];
  const text = sql.replace(/`[^`]*`|'[^']*'|\$(\d+)/g, (match, n: string | undefined) => {
    if (n === undefined) return match;
    values.push(params[Number(n) - 1]);
    return '?';
  });
  return [text, values];
}
