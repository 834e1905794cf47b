import { runChecked, runCommand } from './run-command.js';

let queue: Promise<unknown> = Promise.resolve();
let updated = false;

/**
 * Installs Debian packages with apt-get as root, for test services that are missing on a fresh
 * machine. Calls run one at a time (PostgreSQL, RabbitMQ and Java may all be missing at once, and
 * apt-get takes a lock), and `apt-get update` runs once per process.
 *
 * @param what names the service in messages, e.g. "RabbitMQ"
 * @param alternatives tells the user how to do without the install (env variable, Docker, ...)
 */
export function aptInstall(packages: string[], what: string, alternatives: string): Promise<void> {
  const run = queue.then(() => install(packages, what, alternatives));
  queue = run.catch(() => {});
  return run;
}

async function install(packages: string[], what: string, alternatives: string): Promise<void> {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    throw new Error(`${what} is not installed, and installing it (apt-get install ${packages.join(' ')}) needs root. ${alternatives}`);
  }
  if ((await runCommand('sh', ['-c', 'command -v apt-get']).catch(() => ({ code: 1 }))).code !== 0) {
    throw new Error(`${what} is not installed, and apt-get is not available to install it. ${alternatives}`);
  }
  const started = Date.now();
  console.log(`[concord test services] ${what} is not installed; installing it as root with apt-get (${packages.join(' ')})`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // Wait for a concurrent apt/dpkg run (another process's) rather than failing on its lock.
  const lock = ['-o', 'DPkg::Lock::Timeout=300'];
  const timeoutMs = 15 * 60_000;
  if (!updated) {
    await runChecked('apt-get', [...lock, 'update'], { env, timeoutMs });
    updated = true;
  }
  await runChecked('apt-get', [...lock, 'install', '-y', '--no-install-recommends', ...packages], { env, timeoutMs });
  console.log(`[concord test services] ${what} installed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
