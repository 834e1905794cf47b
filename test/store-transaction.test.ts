/**
 * The store's transactions (database.transaction), on Postgres and on PGlite: the statements of
 * one commit together or not at all, and a statement run meanwhile outside it is not part of it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, statement, type Database } from '../coordinator/store/database.js';
import { freshDatabase } from './helpers/db.js';

const insert = statement(sql`insert into tx_probe (name) values (${sql.placeholder('name')}) returning name`);

describe.each(['postgres', 'pglite'] as const)('a store transaction on %s', (kind) => {
  let database: Database;
  let dir: string | undefined;

  beforeAll(async () => {
    dir = kind === 'pglite' ? await mkdtemp(join(tmpdir(), 'concord-tx-')) : undefined;
    const store = dir ? join(dir, 'data') : await freshDatabase();
    database = await openDatabase(store, { poolSize: 4, logger: pino({ level: 'silent' }), lockTimeout: 5 });
    await database.rows(sql`create table tx_probe (name text primary key)`);
  }, 60_000);
  afterAll(async () => {
    await database?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const names = async () => (await database.rows<{ name: string }>(sql`select name from tx_probe order by name`)).map((r) => r.name);

  it('commits its statements together, compiled ones and built ones, and answers what its work answered', async () => {
    const answer = await database.transaction(async (tx) => {
      const [first] = await tx.rows<{ name: string }>(insert, { name: 'a1' });
      await tx.rows(sql`insert into tx_probe (name) values (${'a2'})`);
      // The transaction sees its own rows.
      const seen = await tx.rows<{ n: number }>(sql`select count(*)::int as n from tx_probe where name like 'a%'`);
      return { first: first?.name, seen: seen[0]?.n };
    });
    expect(answer).toEqual({ first: 'a1', seen: 2 });
    expect(await names()).toEqual(['a1', 'a2']);
  });

  it('writes nothing when its work throws, and a statement run meanwhile outside it stays', async () => {
    let outside: Promise<unknown> | undefined;
    await expect(
      database.transaction(async (tx) => {
        await tx.rows(insert, { name: 'b1' });
        outside = database.rows(insert, { name: 'c1' });
        await tx.rows(insert, { name: 'b2' });
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    await outside;
    expect(await names()).toEqual(['a1', 'a2', 'c1']);
  });

  it('rolls back when one of its statements fails, and the store works on', async () => {
    await expect(
      database.transaction(async (tx) => {
        await tx.rows(insert, { name: 'd1' });
        await tx.rows(insert, { name: 'a1' }); // already there
      }),
    ).rejects.toThrow();
    expect(await names()).toEqual(['a1', 'a2', 'c1']);
    await database.transaction((tx) => tx.rows(insert, { name: 'e1' }));
    expect(await names()).toEqual(['a1', 'a2', 'c1', 'e1']);
  });
});
