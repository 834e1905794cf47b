import { rmSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ServiceDir {
  path: string;
  /** Removes the directory; safe to call twice. */
  remove(): Promise<void>;
}

const OWNER_FILE = 'owner.pid';
const STALE_AFTER_MS = 10 * 60_000;

/**
 * A fresh directory under the system temp dir for one throwaway service (its data, config and
 * log). It goes with remove(), or when the test process exits. Register the service's own exit
 * handler after calling this, so that the service is killed before its files go.
 */
export async function makeServiceDir(prefix: string): Promise<ServiceDir> {
  await removeStaleDirs(tmpdir(), prefix);
  const path = await mkdtemp(join(tmpdir(), prefix));
  await writeFile(join(path, OWNER_FILE), `${process.pid}\n`);
  const removeNow = (): void => rmSync(path, { recursive: true, force: true, maxRetries: 3 });
  process.on('exit', removeNow);
  let removing: Promise<void> | undefined;
  const remove = (): Promise<void> =>
    (removing ??= (async () => {
      process.off('exit', removeNow);
      await rm(path, { recursive: true, force: true, maxRetries: 3 });
    })());
  return { path, remove };
}

/**
 * A test process killed by a signal leaves its services' directories behind (the services
 * themselves stop when its pipes close). Remove such dirs once they are old and their owner is gone.
 */
async function removeStaleDirs(parent: string, prefix: string): Promise<void> {
  const entries = await readdir(parent).catch(() => []);
  for (const entry of entries.filter((name) => name.startsWith(prefix))) {
    const dir = join(parent, entry);
    const info = await stat(dir).catch(() => undefined);
    if (info === undefined || Date.now() - info.mtimeMs < STALE_AFTER_MS) continue;
    const owner = await readFile(join(dir, OWNER_FILE), 'utf8').catch(() => undefined);
    if (owner !== undefined && alive(Number(owner.trim()))) continue;
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
