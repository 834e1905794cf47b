import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { aptInstall } from './apt-install.js';
import { runCommand } from './run-command.js';

const DEBIAN_PG_ROOT = '/usr/lib/postgresql';

/** The bin directory of the newest Debian PostgreSQL install (`/usr/lib/postgresql/<version>/bin`), if any. */
export function findPgBinDir(): string | undefined {
  let versions: string[];
  try {
    versions = readdirSync(DEBIAN_PG_ROOT);
  } catch {
    return undefined;
  }
  const usable = versions
    .filter((v) => /^\d+(\.\d+)?$/.test(v))
    .filter((v) => existsSync(join(DEBIAN_PG_ROOT, v, 'bin', 'postgres')) && existsSync(join(DEBIAN_PG_ROOT, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return usable[0] === undefined ? undefined : join(DEBIAN_PG_ROOT, usable[0], 'bin');
}

let installing: Promise<void> | undefined;

/**
 * The bin directory of Debian's PostgreSQL (postgres, initdb, pgbench, ...), installing the
 * `postgresql` package with apt-get first when it is missing and we are root.
 */
export async function pgBinDir(): Promise<string> {
  const found = findPgBinDir();
  if (found !== undefined) return found;
  // One install per process, however many callers ask at once.
  installing ??= installPostgres().finally(() => (installing = undefined));
  await installing;
  const installed = findPgBinDir();
  if (installed === undefined) {
    throw new Error(`apt-get installed postgresql, but no ${DEBIAN_PG_ROOT}/<version>/bin/postgres was found afterwards`);
  }
  return installed;
}

async function installPostgres(): Promise<void> {
  const alternatives =
    `No server binaries were found under ${DEBIAN_PG_ROOT}/<version>/bin. ` +
    'Set CONCORD_TEST_PG_URL to the URL of a PostgreSQL superuser (e.g. postgres://postgres@127.0.0.1:5432/postgres), ' +
    'or start a Docker engine, or install PostgreSQL yourself (apt-get install postgresql).';
  await aptInstall(['postgresql'], 'PostgreSQL', alternatives);
  await stopPackageClusters();
}

/**
 * The package creates a "main" cluster and, on machines whose init system lets it, starts it on
 * port 5432. Tests use their own throwaway cluster, so stop any cluster the install left running
 * rather than leave a server behind.
 */
async function stopPackageClusters(): Promise<void> {
  const listing = await runCommand('pg_lsclusters', ['--no-header']).catch(() => undefined);
  if (listing === undefined || listing.code !== 0) return;
  for (const line of listing.output.split('\n')) {
    const [version, cluster, , status] = line.trim().split(/\s+/);
    if (version === undefined || cluster === undefined || status !== 'online') continue;
    await runCommand('pg_ctlcluster', [version, cluster, 'stop']).catch(() => undefined);
  }
}
