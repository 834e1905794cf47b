/**
 * The embedded store's footprint. PGlite as it comes costs 700-850 MB of RSS on a first start and
 * about 260 MB after: initdb runs as a second WASM instance, the postgres module is compiled twice
 * (Liftoff, then TurboFan), and shared_buffers is Postgres's 128 MB. Here a new directory is
 * unpacked from a data directory made at build time (no initdb in the coordinator), the module is
 * compiled once with Liftoff (about 10 % slower SQL, 70 MB less), and Postgres's shared memory is
 * cut to what one backend needs (pgliteSettings). Durability is PGlite's, unchanged.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { PGlite } from '@electric-sql/pglite';

/**
 * Settings the embedded store runs with; written into the directory (ALTER SYSTEM), so Postgres reads
 * them at start. Every page of Postgres's shared memory the store touches stays in the WASM heap,
 * which never shrinks. shared_buffers: 2 MB, not Postgres's 128: a page it lacks is one read from
 * the operating system's cache (the burst of docs/benchmarks.md read 13 pages with 8 MB, 16 with
 * 2 MB, and wrote 15 % more). max_connections: PGlite runs one backend, and the lock and process
 * tables are sized for 100 (4 MB touched).
 */
export const pgliteSettings = { shared_buffers: '2MB', max_connections: '5' } as const;

const pgliteVersion = (
  JSON.parse(readFileSync(join(dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite')), '..', 'package.json'), 'utf8')) as {
    version: string;
  }
).version;

/** Where the build keeps the data directory template: one per PGlite version (its files are that version's) and settings. */
export const templatePath = join(
  dirname(fileURLToPath(import.meta.url)),
  `pglite-${pgliteVersion}-${createHash('sha1').update(JSON.stringify(pgliteSettings)).digest('hex').slice(0, 8)}.tgz`,
);

/** Opens (creating if new) the embedded store in `dir`. */
export async function openPgliteStore(dir: string): Promise<PGlite> {
  // Set before PGlite compiles its module. V8 takes these WASM flags at run time (node's docs
  // warn that flags set after start may not apply: these do, and the footprint bench shows it).
  v8.setFlagsFromString('--liftoff-only');
  v8.setFlagsFromString('--wasm-lazy-compilation');
  if (!existsSync(join(dir, 'PG_VERSION')) && existsSync(templatePath)) {
    // Without a working tar PGlite runs initdb itself: slower and larger, but the same store.
    await unpackTemplate(dir).catch(() => rm(join(dir, stagingName), { recursive: true, force: true }));
  }
  const client = await PGlite.create(dir);
  await applySettings(client);
  return client;
}

/**
 * Writes the settings a directory lacks; they apply from its next start. A directory made from the
 * template has them already; one made by initdb (no template: running from sources) or by an
 * older Concord gets them here.
 */
export async function applySettings(client: PGlite): Promise<boolean> {
  let changed = false;
  for (const [name, value] of Object.entries(pgliteSettings)) {
    const { rows } = await client.query(
      `select 1 from pg_file_settings where name = $1 and setting = $2 and sourcefile like '%postgresql.auto.conf'`,
      [name, value],
    );
    if (rows.length > 0) continue;
    await client.exec(`alter system set ${name} = '${value}'`);
    changed = true;
  }
  return changed;
}

/**
 * Unpacks the template beside the files, then moves them in with PG_VERSION last: a directory is
 * whole once PG_VERSION exists, and a crash before that redoes the unpacking on the next start.
 */
async function unpackTemplate(dir: string): Promise<void> {
  const staging = join(dir, stagingName);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  // The system's tar (Linux, macOS and Windows 10+ have one): unpacking in-process left 25 MB of RSS behind.
  await run('tar', ['-xzf', templatePath, '-C', staging]);
  const entries = (await readdir(staging)).sort((a, b) => Number(a === 'PG_VERSION') - Number(b === 'PG_VERSION'));
  for (const entry of entries) {
    await rm(join(dir, entry), { recursive: true, force: true });
    await rename(join(staging, entry), join(dir, entry));
  }
  await rm(staging, { recursive: true, force: true });
}

const run = promisify(execFile);
const stagingName = '.concord-template';
