import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { freshDatabase } from './helpers/db.js';

const clients: pg.Client[] = [];

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  clients.push(client);
  await client.connect();
  return client;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.end()));
});

describe('freshDatabase', () => {
  it('gives a working, empty database', async () => {
    const db = await connect(await freshDatabase());
    const tables = await db.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`);
    expect(tables.rows[0]).toEqual({ n: 0 });

    await db.query('CREATE TABLE greeting (id int PRIMARY KEY, text text NOT NULL)');
    await db.query('INSERT INTO greeting VALUES ($1, $2)', [1, 'hello']);
    const { rows } = await db.query('SELECT text FROM greeting WHERE id = 1');
    expect(rows).toEqual([{ text: 'hello' }]);
  });

  it('gives a different database on each call', async () => {
    const [firstUrl, secondUrl] = await Promise.all([freshDatabase(), freshDatabase()]);
    expect(firstUrl).not.toBe(secondUrl);

    const first = await connect(firstUrl);
    const second = await connect(secondUrl);
    await first.query('CREATE TABLE only_in_first (id int)');
    const names = await Promise.all(
      [first, second].map(async (db) => (await db.query<{ name: string }>('SELECT current_database() AS name')).rows[0]),
    );
    expect(names[0]).not.toEqual(names[1]);
    const seen = await second.query(`SELECT to_regclass('public.only_in_first') AS t`);
    expect(seen.rows[0]).toEqual({ t: null });
  });
});
