/**
 * Rolling upgrades: every migration is marked, the schema in schemas/db/tables.ts has no change
 * that lacks a migration, and a node runs on a store migrated by a newer Concord unless one of the
 * newer migrations is breaking.
 */
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { migrations, migrationsFolder } from '../coordinator/store/migrations.js';
import { exec, REPO_ROOT } from './compat/setup.js';
import { startCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';

let store: string;
let client: pg.Client;

beforeAll(async () => {
  store = await freshDatabase();
  const first = await startCoordinator({ store });
  expect(await first.stop()).toBe(0);
  client = new pg.Client({ connectionString: store });
  await client.connect();
}, 60_000);
afterAll(async () => {
  await client?.end();
});

it('marks every migration compatible or breaking, and records the marks in the store', async () => {
  const marks = JSON.parse(await readFile(join(migrationsFolder, 'marks.json'), 'utf8')) as Record<string, string>;
  const tags = migrations.map((m) => m.tag);
  expect(Object.keys(marks).filter((k) => !k.startsWith('$'))).toEqual(tags);
  const { rows } = await client.query<{ tag: string }>('select tag from concord_migrations order by tag');
  expect(rows.map((r) => r.tag)).toEqual(tags);
});

it('has no schema change without its migration (drizzle-kit generate writes nothing)', async () => {
  const scratch = await mkdtemp(join(tmpdir(), 'concord-drift-'));
  try {
    const out = join(scratch, 'migrations');
    await cp(migrationsFolder, out, { recursive: true });
    // drizzle-kit reads paths relative to its working directory (it prefixes ./).
    const config = join(scratch, 'drizzle.config.json');
    await writeFile(config, JSON.stringify({ dialect: 'postgresql', schema: './schemas/db/tables.ts', out: relative(REPO_ROOT, out) }));
    const run = await exec('npx', ['drizzle-kit', 'generate', '--config', config], { cwd: REPO_ROOT, timeoutMs: 120_000 });
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout + run.stderr).toContain('No schema changes');
    expect(await readdir(out)).toEqual(await readdir(migrationsFolder));
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}, 150_000);

it('runs beside a newer node after a compatible migration, and refuses a breaking one by name', async () => {
  // What a newer Concord leaves: a migration this build does not know, with its mark.
  await client.query(`insert into drizzle.__drizzle_migrations (hash, created_at) values ('future', $1)`, [Date.now() + 86_400_000]);
  await client.query(`insert into concord_migrations (tag, breaking, applied_by) values ('9999_future', false, '9.9.9')`);
  const beside = await startCoordinator({ store });
  try {
    expect((await fetch(`${beside.url}/api/health`)).status).toBe(200);
    expect(beside.output()).toContain('compatible migrations from a newer Concord');
    expect(beside.output()).toContain('9999_future (by 9.9.9)');
  } finally {
    expect(await beside.stop()).toBe(0);
  }

  await client.query(`update concord_migrations set breaking = true where tag = '9999_future'`);
  await expect(startCoordinator({ store })).rejects.toThrow(/exited with 1[\s\S]*breaking migration 9999_future \(by 9\.9\.9\)/);
}, 60_000);
