import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { probeAmqp } from './amqp-probe.js';
import { rabbitMQBinaries } from './rabbitmq-install.js';
import { tail } from './run-command.js';
import { PortTakenError, startRestartable } from './service-dir.js';
import { freePort, startSupervised, waitUntilReady, type SupervisedProcess } from './supervised-process.js';

export interface LocalRabbitMQ {
  /** amqp://guest:guest@127.0.0.1:PORT */
  url: string;
  stop(): Promise<void>;
}

const EPMD_TIMEOUT_MS = 10_000;
/** Boot of a fresh node (Mnesia, feature flags) on a loaded 2-core machine. */
const READY_TIMEOUT_MS = 120_000;
/** SIGTERM makes the node shut down in a few seconds; SIGKILL after this. */
const STOP_GRACE_MS = 10_000;
const PORT_ATTEMPTS = 3;

/** Logs go to stdout, which the supervisor writes to rabbitmq.log; no colour codes in error messages. */
const NODE_CONFIG = `# Throwaway test node: see test/services/rabbitmq-node.ts
log.console = true
log.console.level = info
log.console.use_colors = off
log.file = false
`;

/**
 * Runs a throwaway RabbitMQ node from Debian's packages (installed with apt-get if missing): its
 * own node name, Mnesia dir, config and Erlang cookie in a temp dir, and its own epmd on a free
 * port (ERL_EPMD_PORT), so that it shares nothing with a system node or another run, and a stale
 * epmd on the standard port 4369 cannot matter. stop() ends both and removes the dir.
 */
export async function startLocalRabbitMQ(): Promise<LocalRabbitMQ> {
  // One way to start a node: the restartable one, without its halt and restart.
  const node = await startRestartableLocalRabbitMQ();
  return { url: node.url, stop: () => node.stop() };
}

/** Starts epmd, then the node, and waits until the node accepts AMQP connections; stop() leaves the files. */
interface NodeIdentity {
  epmdPort: number;
  amqpPort: number;
  distPort: number;
  nodeName: string;
}

export interface RestartableRabbitMQ extends LocalRabbitMQ {
  /** Stops the node (and its epmd) gracefully, keeping its Mnesia dir, name and ports. */
  halt(): Promise<void>;
  /** Starts the halted node again with the same name, data and ports, and waits until it accepts AMQP. */
  restart(): Promise<void>;
}

/**
 * Like startLocalRabbitMQ, but the node can be halted and restarted with the same data (durable
 * queues and persistent messages survive) on the same port, for tests of a broker outage. A
 * dedicated instance: the run's shared broker is never halted.
 */
export async function startRestartableLocalRabbitMQ(): Promise<RestartableRabbitMQ> {
  const binaries = await rabbitMQBinaries();
  const service = await startRestartable({
    prefix: 'concord-rabbitmq-',
    attempts: PORT_ATTEMPTS,
    plan: async (): Promise<NodeIdentity> => {
      const [epmdPort, amqpPort, distPort] = await threeFreePorts();
      return { epmdPort, amqpPort, distPort, nodeName: `concord-test-${randomBytes(4).toString('hex')}@localhost` };
    },
    launch: (work, identity, run) => launch(binaries, work, identity, run === 1 ? '' : `-${run}`),
  });
  return { url: service.first.url, halt: service.halt, restart: service.restart, stop: service.stop };
}

async function launch(
  binaries: { server: string; epmd: string },
  work: string,
  identity: NodeIdentity,
  logSuffix = '',
): Promise<LocalRabbitMQ> {
  const { epmdPort, amqpPort, distPort, nodeName } = identity;
  const env = isolatedEnv();
  env.ERL_EPMD_PORT = String(epmdPort);

  const epmdLog = join(work, `epmd${logSuffix}.log`);
  const epmd = startSupervised({
    command: binaries.epmd,
    args: ['-port', String(epmdPort)],
    cwd: work,
    env: { ...env, ERL_EPMD_ADDRESS: '127.0.0.1' },
    log: epmdLog,
    graceMs: 2_000,
  });
  try {
    await waitUntilReady(() => tcpAnswers(epmdPort), {
      what: `epmd on 127.0.0.1:${epmdPort}`,
      timeoutMs: EPMD_TIMEOUT_MS,
      exitStatus: epmd.exitStatus,
    });
  } catch (error) {
    await epmd.stop();
    const log = await readFile(epmdLog, 'utf8').catch(() => '');
    if (/address already in use|cannot bind|eaddrinuse/i.test(log)) throw new PortTakenError(`port ${epmdPort} was taken`);
    throw new Error(`epmd did not start: ${(error as Error).message}\n--- ${epmdLog} ---\n${tail(log)}`, { cause: error });
  }

  const serverLog = join(work, `rabbitmq${logSuffix}.log`);
  let server: SupervisedProcess | undefined;
  const url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
  const stop = async (): Promise<void> => {
    // The node first: it deregisters from epmd as it goes.
    await server?.stop();
    await epmd.stop();
  };
  try {
    await writeFile(join(work, 'rabbitmq.conf'), NODE_CONFIG);
    await writeFile(join(work, 'enabled_plugins'), '[].\n');
    await writeFile(join(work, 'rabbitmq-env.conf'), '');
    server = startSupervised({
      command: binaries.server,
      args: [],
      cwd: work,
      env: {
        ...env,
        // Erlang reads (and creates) its distribution cookie here.
        HOME: work,
        RABBITMQ_NODENAME: nodeName,
        RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
        RABBITMQ_NODE_PORT: String(amqpPort),
        RABBITMQ_DIST_PORT: String(distPort),
        RABBITMQ_MNESIA_BASE: join(work, 'mnesia'),
        RABBITMQ_LOG_BASE: join(work, 'log'),
        RABBITMQ_CONFIG_FILE: join(work, 'rabbitmq.conf'),
        RABBITMQ_ADVANCED_CONFIG_FILE: join(work, 'advanced.config'),
        RABBITMQ_CONF_ENV_FILE: join(work, 'rabbitmq-env.conf'),
        RABBITMQ_ENABLED_PLUGINS_FILE: join(work, 'enabled_plugins'),
        RABBITMQ_PID_FILE: join(work, 'rabbitmq.pid'),
      },
      log: serverLog,
      graceMs: STOP_GRACE_MS,
    });
    const node = server;
    await waitUntilReady(() => probeAmqp(url), {
      what: `RabbitMQ node ${nodeName} on 127.0.0.1:${amqpPort}`,
      timeoutMs: READY_TIMEOUT_MS,
      exitStatus: node.exitStatus,
    });
  } catch (error) {
    const exitedEarly = server?.exitStatus() !== undefined;
    await stop();
    const log = await readFile(serverLog, 'utf8').catch(() => '');
    if (exitedEarly && /eaddrinuse|address already in use/i.test(log))
      throw new PortTakenError(`port ${amqpPort} or ${distPort} was taken`);
    throw new Error(`RabbitMQ did not start: ${(error as Error).message}\n--- ${serverLog} ---\n${tail(log)}`, { cause: error });
  }
  return { url, stop };
}

/** The environment without RABBITMQ_* and ERL_* settings of the user's, which would reach the test node. */
function isolatedEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('RABBITMQ_') && !key.startsWith('ERL_')));
}

async function threeFreePorts(): Promise<[number, number, number]> {
  const first = await freePort();
  let second = await freePort();
  while (second === first) second = await freePort();
  let third = await freePort();
  while (third === first || third === second) third = await freePort();
  return [first, second, third];
}

/** Resolves once something accepts a TCP connection on the loopback port. */
function tcpAnswers(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, timeout: 1_000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('timeout', () => {
      socket.destroy();
      reject(new Error('connection timed out'));
    });
    socket.once('error', reject);
  });
}
