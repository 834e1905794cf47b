import { existsSync, readFileSync } from 'node:fs';
import { aptInstall } from './apt-install.js';
import { runCommand } from './run-command.js';

/** Debian's (and RabbitMQ's own .deb) start script, which runs the node in the foreground. */
const SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server';

export interface RabbitMQBinaries {
  server: string;
  /** The Erlang port mapper daemon, from erlang-base. */
  epmd: string;
}

/** The installed rabbitmq-server and epmd, if any. */
export function findRabbitMQ(): RabbitMQBinaries | undefined {
  if (!existsSync(SERVER)) return undefined;
  const epmd = ['/usr/bin/epmd', '/usr/lib/erlang/bin/epmd'].find((path) => existsSync(path));
  return epmd === undefined ? undefined : { server: SERVER, epmd };
}

let installing: Promise<void> | undefined;

/** rabbitmq-server and epmd, installing Debian's `rabbitmq-server` package with apt-get first when it is missing and we are root. */
export async function rabbitMQBinaries(): Promise<RabbitMQBinaries> {
  const found = findRabbitMQ();
  if (found !== undefined) return found;
  // One install per process, however many callers ask at once.
  installing ??= installRabbitMQ().finally(() => (installing = undefined));
  await installing;
  const installed = findRabbitMQ();
  if (installed === undefined) throw new Error(`apt-get installed rabbitmq-server, but ${SERVER} or epmd was not found afterwards`);
  return installed;
}

async function installRabbitMQ(): Promise<void> {
  const alternatives =
    `${SERVER} was not found. Set CONCORD_TEST_AMQP_URL to the URL of a RabbitMQ broker (e.g. amqp://guest:guest@127.0.0.1:5672), ` +
    'or start a Docker engine, or install RabbitMQ yourself (apt-get install rabbitmq-server).';
  await aptInstall(['rabbitmq-server'], 'RabbitMQ', alternatives);
  await stopPackageService();
}

/**
 * The package's postinst starts the system node (rabbit@<host> on port 5672) where the init
 * system lets it, and enables it at boot. Tests run their own throwaway nodes, so stop and disable
 * that one rather than leave a broker behind. (Machines whose policy-rc.d denies service starts,
 * as in containers, never start it.)
 */
async function stopPackageService(): Promise<void> {
  const quietly = (command: string, args: string[]): Promise<unknown> =>
    runCommand(command, args, { timeoutMs: 60_000 }).catch(() => undefined);
  if (existsSync('/run/systemd/system')) {
    await quietly('systemctl', ['disable', '--now', 'rabbitmq-server.service']);
    return;
  }
  if (packageNodeRuns()) await quietly('/etc/init.d/rabbitmq-server', ['stop']);
  await quietly('update-rc.d', ['rabbitmq-server', 'disable']);
}

/** Whether the pid file that /etc/init.d/rabbitmq-server writes names a live process. */
function packageNodeRuns(): boolean {
  for (const file of ['/run/rabbitmq/pid', '/var/run/rabbitmq/pid']) {
    try {
      process.kill(Number(readFileSync(file, 'utf8').trim()), 0);
      return true;
    } catch {
      // no pid file, or no such process
    }
  }
  return false;
}
