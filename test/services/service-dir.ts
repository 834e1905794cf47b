import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onExit } from './on-exit.js';

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
  const forget = onExit(removeNow);
  let removing: Promise<void> | undefined;
  const remove = (): Promise<void> =>
    (removing ??= (async () => {
      forget();
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

/** True while a process with this pid exists (also one we may not signal). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A launch lost a port it had just found free to another process; try again on new ports. */
export class PortTakenError extends Error {}

/** A local service that can be halted and started again on the same ports and data. */
export interface RestartableService<S> {
  /** The first run, for its addresses. */
  first: S;
  halt: () => Promise<void>;
  restart: () => Promise<void>;
  /** Ends the service and removes its directory. */
  stop: () => Promise<void>;
}

/**
 * The shared life of a local broker: a service dir; up to `attempts` launches, each with fresh
 * ports (`plan`) in a fresh work dir, retried when a port was taken meanwhile; then halt and
 * restart with the same plan and work dir, and a stop that removes everything.
 */
export async function startRestartable<P, S extends { stop(): Promise<void> }>(options: {
  prefix: string;
  attempts: number;
  plan: () => Promise<P>;
  launch: (work: string, plan: P, run: number) => Promise<S>;
}): Promise<RestartableService<S>> {
  const dir = await makeServiceDir(options.prefix);
  try {
    for (let attempt = 1; ; attempt++) {
      const work = join(dir.path, `attempt-${attempt}`);
      await mkdir(work);
      const plan = await options.plan();
      let running: S | undefined;
      try {
        running = await options.launch(work, plan, 1);
      } catch (error) {
        if (!(error instanceof PortTakenError) || attempt >= options.attempts) throw error;
        continue;
      }
      const first = running;
      let runs = 1;
      let stopping: Promise<void> | undefined;
      return {
        first,
        halt: async () => {
          const current = running;
          running = undefined;
          await current?.stop();
        },
        restart: async () => {
          if (running !== undefined) throw new Error('the service is running');
          running = await options.launch(work, plan, ++runs);
        },
        stop: () =>
          (stopping ??= (async () => {
            await running?.stop();
            await dir.remove();
          })()),
      };
    }
  } catch (error) {
    await dir.remove();
    throw error;
  }
}
