/**
 * Migrations and rolling upgrades. Every migration is marked compatible or breaking
 * (schemas/db/migrations/marks.json), and the marks of those applied are kept in the store
 * (concord_migrations). A node that finds migrations newer than it knows starts with a warning
 * when all of them are compatible, so old and new nodes run side by side through a deploy, and
 * refuses to start when one is breaking.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import type { Logger } from 'pino';
import { ConcordError } from '../../schemas/errors.js';
import { concordMigrations } from '../../schemas/db/tables.js';
import { version } from '../version.js';
import type { Database } from './database.js';

export type Mark = 'compatible' | 'breaking';

export interface Migration {
  tag: string;
  /** drizzle's folderMillis: the order of migrations, and what drizzle records as created_at. */
  when: number;
  mark: Mark;
}

export const migrationsFolder = findMigrations();

/** This build's migrations, in order, each with its mark. */
export const migrations: Migration[] = (() => {
  const journal = JSON.parse(readFileSync(join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as {
    entries: { when: number; tag: string }[];
  };
  const marks = JSON.parse(readFileSync(join(migrationsFolder, 'marks.json'), 'utf8')) as Record<string, string>;
  return journal.entries.map(({ tag, when }) => {
    const mark = marks[tag];
    if (mark !== 'compatible' && mark !== 'breaking')
      throw new Error(`schemas/db/migrations/marks.json: mark ${tag} compatible or breaking`);
    return { tag, when, mark };
  });
})();

/**
 * Before migrating: a store migrated by a newer Concord is refused if any of the migrations this
 * build does not know is breaking (or unmarked: written before marks existed), and accepted with
 * a warning otherwise.
 */
export async function checkNewerMigrations(database: Database, logger: Logger): Promise<void> {
  const known = new Set(migrations.map((m) => m.tag));
  const newest = Math.max(...migrations.map((m) => m.when));
  const [drizzleTable] = await database.rows<{ t: string | null }>(sql`select to_regclass('drizzle.__drizzle_migrations')::text as t`);
  if (!drizzleTable?.t) return; // a new store
  const [latest] = await database.rows<{ created_at: string }>(
    sql`select created_at::text from drizzle.__drizzle_migrations order by created_at desc limit 1`,
  );
  if (Number(latest?.created_at ?? 0) <= newest) return;
  const [marksTable] = await database.rows<{ t: string | null }>(sql`select to_regclass('concord_migrations')::text as t`);
  const marked = marksTable?.t
    ? await database.rows<{ tag: string; breaking: boolean; applied_by: string }>(
        sql`select tag, breaking, applied_by from ${concordMigrations} order by tag`,
      )
    : [];
  const unknown = marked.filter((m) => !known.has(m.tag));
  const breaking = unknown.filter((m) => m.breaking);
  if (unknown.length === 0 || breaking.length > 0) {
    const which =
      breaking.length > 0
        ? `its breaking migration ${breaking.map((m) => `${m.tag} (by ${m.applied_by})`).join(', ')}`
        : 'an unmarked migration';
    throw new ConcordError(
      'UNSUPPORTED',
      `the store was migrated by a newer Concord with ${which}, which this version (${version}) cannot run on; upgrade this coordinator`,
      { field: 'store' },
    );
  }
  logger.warn(
    { migrations: unknown.map((m) => `${m.tag} (by ${m.applied_by})`) },
    'the store has compatible migrations from a newer Concord; running beside newer nodes (upgrade this one when the deploy completes)',
  );
}

/** After migrating: the marks of this build's migrations, for older nodes to read. */
export async function recordMigrations(database: Database): Promise<void> {
  await database.db
    .insert(concordMigrations)
    .values(migrations.map((m) => ({ tag: m.tag, breaking: m.mark === 'breaking', appliedBy: version })))
    .onConflictDoNothing();
}

function findMigrations(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'schemas', 'db', 'migrations');
    if (existsSync(join(candidate, 'meta', '_journal.json'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('schemas/db/migrations not found');
    dir = parent;
  }
}
