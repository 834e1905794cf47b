/**
 * Makes an embedded store directory exclusive to one process. PGlite has no lock of its own: two
 * processes on one directory each keep their own pages in memory and overwrite each other's writes,
 * so acknowledged transactions vanish.
 *
 * The lock is a file `concord-lock.<n>` in the directory, holding the holder's pid, start time and
 * host. It is created complete and exclusively (written aside, then hard-linked: link fails when the
 * name exists). A holder that died (SIGKILL, crash) leaves its file behind; the next process sees
 * that the pid is gone, or now names another process (its start time in /proc differs), and takes
 * over. Taking over never deletes a live file: it creates the next generation `concord-lock.<n+1>`,
 * again exclusively, so of several processes taking over at once exactly one wins. The highest
 * generation is the lock; a clean release marks it released in place (an atomic rename).
 *
 * Node has no flock(), so the lock is not held by a file descriptor; pid and start time are the
 * next best proof of life, and they are exact on one host. A lock written on another host (a shared
 * volume) cannot be checked and counts as held: the message says which file to delete.
 */
import { link, mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join, resolve as absolute } from 'node:path';
import { ConcordError } from '../../schemas/errors.js';

const prefix = 'concord-lock.';

interface Holder {
  pid: number;
  /** Start time of the process in clock ticks since boot (/proc/<pid>/stat), null without /proc. */
  start: number | null;
  host: string;
  since: string;
  released?: boolean;
}

export interface DirectoryLock {
  readonly file: string;
  release(): Promise<void>;
}

/** Takes the lock of `dir` (created if missing), waiting up to `waitMs` for a live holder to exit. */
export async function lockDirectory(dir: string, waitMs: number): Promise<DirectoryLock> {
  await mkdir(dir, { recursive: true });
  const me: Holder = { pid: process.pid, start: await startTime(process.pid), host: hostname(), since: new Date().toISOString() };
  const deadline = Date.now() + waitMs;
  for (;;) {
    const generation = await newestGeneration(dir);
    const current = generation === undefined ? undefined : await readHolder(join(dir, prefix + generation));
    if (generation !== undefined && current === undefined) continue; // replaced meanwhile: look again
    if (current === undefined || !(await isAlive(current))) {
      const next = (generation ?? 0) + 1;
      const file = join(dir, prefix + next);
      if (await createExclusive(file, me)) {
        await removeOlder(dir, next);
        return { file, release: () => markReleased(file, me) };
      }
      continue; // another process took this generation first
    }
    if (Date.now() >= deadline) {
      const holder = current;
      const where = holder.host === me.host ? '' : ` on host ${holder.host}`;
      throw new ConcordError(
        'STORE_UNAVAILABLE',
        `the store directory ${absolute(dir)} is in use by another coordinator (pid ${holder.pid}${where}, since ${holder.since}); ` +
          `waited ${waitMs / 1000} s for it to exit. Stop that process` +
          (where ? `, or delete ${join(dir, prefix + generation)} if it no longer runs` : '') +
          '; one embedded store serves one coordinator (use Postgres for several)',
        { field: 'store' },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function newestGeneration(dir: string): Promise<number | undefined> {
  let newest: number | undefined;
  for (const name of await readdir(dir)) {
    const match = /^concord-lock\.(\d+)$/.exec(name);
    if (match) newest = Math.max(newest ?? 0, Number(match[1]));
  }
  return newest;
}

/** The holder named in a lock file; undefined when the file is gone. */
async function readHolder(file: string): Promise<Holder | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return JSON.parse(text) as Holder;
  } catch {
    // Only a crash of the file system can leave a lock file unreadable (it is linked complete).
    return { pid: 0, start: null, host: hostname(), since: '', released: true };
  }
}

/** Written aside and linked into place, so no reader ever sees a half-written lock. */
async function createExclusive(file: string, holder: Holder): Promise<boolean> {
  const aside = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(aside, JSON.stringify(holder));
  try {
    await link(aside, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(aside).catch(() => undefined);
  }
}

async function markReleased(file: string, holder: Holder): Promise<void> {
  const aside = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(aside, JSON.stringify({ ...holder, released: true }));
  await rename(aside, file);
}

/** Older generations are history; so are files left aside by a process killed while locking. */
async function removeOlder(dir: string, generation: number): Promise<void> {
  for (const name of await readdir(dir)) {
    const match = /^concord-lock\.(\d+)(\.[\w-]+\.tmp)?$/.exec(name);
    if (!match) continue;
    const file = join(dir, name);
    const aside = match[2] !== undefined;
    const stale = aside
      ? Date.now() - ((await stat(file).catch(() => undefined))?.mtimeMs ?? Date.now()) > 60_000
      : Number(match[1]) < generation;
    if (stale) await unlink(file).catch(() => undefined);
  }
}

async function isAlive(holder: Holder): Promise<boolean> {
  if (holder.released) return false;
  if (holder.host !== hostname()) return true; // cannot be checked from here
  if (holder.start !== null) return (await startTime(holder.pid)) === holder.start;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The start time of a running process from /proc/<pid>/stat (field 22), which tells a reused pid
 * from the original; null when the process is gone or a zombie, or /proc does not exist.
 */
async function startTime(pid: number): Promise<number | null> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return null;
  return Number(fields[19]);
}
