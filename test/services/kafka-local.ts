import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { aptInstall } from './apt-install.js';
import { probeKafka } from './kafka-probe.js';
import { runCommand, tail } from './run-command.js';
import { PortTakenError, startRestartable } from './service-dir.js';
import { freePort, startSupervised, waitUntilReady } from './supervised-process.js';

export interface LocalKafka {
  /** host:port of the broker's PLAINTEXT listener. */
  brokers: string;
  stop(): Promise<void>;
}

/** Resolving the jars may download ~50 MB with Maven on a cold machine; start-kafka.sh waits 15 min for another run's lock. */
const JARS_TIMEOUT_MS = 16 * 60_000;
/** From the JVM's start to an answer, on a loaded 2-core machine. */
const READY_TIMEOUT_MS = 120_000;
/** SIGTERM makes the broker shut down in a few seconds; SIGKILL after this. */
const STOP_GRACE_MS = 10_000;
const PORT_ATTEMPTS = 3;

/** The folder of pom.xml and start-kafka.sh, from the sources or from their build in dist/. */
export const kafkaScriptDir = findScriptDir();

function findScriptDir(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const candidate = join(dir, 'test', 'services', 'kafka');
    if (existsSync(join(candidate, 'start-kafka.sh'))) return candidate;
    if (dirname(dir) === dir) throw new Error('test/services/kafka/start-kafka.sh was not found above this module');
  }
}

/** The Kafka version of pom.xml, which is also the tag of the apache/kafka image. */
export async function kafkaVersion(): Promise<string> {
  const pom = await readFile(join(kafkaScriptDir, 'pom.xml'), 'utf8');
  const version = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)?.[1];
  if (version === undefined) throw new Error(`no <kafka.version> in ${join(kafkaScriptDir, 'pom.xml')}`);
  return version;
}

/**
 * Runs a throwaway single-node Kafka (KRaft) from Kafka's jars with start-kafka.sh, on free
 * loopback ports, in a temp dir. The first run on a machine downloads the jars with Maven into
 * <repo>/.cache/kafka-libs. stop() ends the broker and removes the dir.
 */
export async function startLocalKafka(): Promise<LocalKafka> {
  // One way to start a broker: the restartable one, without its halt and restart.
  const broker = await startRestartableLocalKafka();
  return { brokers: broker.brokers, stop: () => broker.stop() };
}

export interface RestartableKafka extends LocalKafka {
  /** Stops the broker (SIGTERM, as an operator would), keeping its data dir and ports. */
  halt(): Promise<void>;
  /** Starts the halted broker again on the same data and ports, and waits until it answers. */
  restart(): Promise<void>;
}

/**
 * Like startLocalKafka, but the broker can be halted and restarted on the same port and data (for
 * tests of a broker outage). A dedicated instance: the run's shared broker is never halted.
 */
export async function startRestartableLocalKafka(): Promise<RestartableKafka> {
  await ensureJavaAndMaven();
  const service = await startRestartable({
    prefix: 'concord-kafka-',
    attempts: PORT_ATTEMPTS,
    plan: async () => {
      const port = await freePort();
      let controllerPort = await freePort();
      while (controllerPort === port) controllerPort = await freePort();
      return { port, controllerPort };
    },
    launch: (work, { port, controllerPort }, run) => launch(work, port, controllerPort, run === 1 ? 'kafka.log' : `kafka-${run}.log`),
  });
  return { brokers: service.first.brokers, halt: service.halt, restart: service.restart, stop: service.stop };
}

/** Runs start-kafka.sh and waits until the broker answers; its stop() leaves the files. */
async function launch(work: string, port: number, controllerPort: number, logName = 'kafka.log'): Promise<LocalKafka> {
  const log = join(work, logName);
  const server = startSupervised({
    // Through sh, so that a checkout without the executable bit works too; the script execs java.
    command: '/bin/sh',
    args: [join(kafkaScriptDir, 'start-kafka.sh'), work, String(port), String(controllerPort)],
    cwd: work,
    log,
    graceMs: STOP_GRACE_MS,
  });
  const brokers = `127.0.0.1:${port}`;
  try {
    let announced = false;
    await waitUntilReady(
      async () => {
        const text = await readFile(log, 'utf8').catch(() => '');
        if (!announced && text.includes('[start-kafka] resolving jars')) {
          announced = true;
          console.log(
            '[concord test services] Kafka jars are not cached yet: downloading them with Maven (first run on this machine only)',
          );
        }
        if (!text.includes('[start-kafka] starting broker')) throw new Error('the jars are not resolved and the storage not formatted yet');
      },
      { what: 'start-kafka.sh (resolving jars, formatting storage)', timeoutMs: JARS_TIMEOUT_MS, exitStatus: server.exitStatus },
    );
    await waitUntilReady(() => probeKafka(brokers), {
      what: `Kafka on ${brokers}`,
      timeoutMs: READY_TIMEOUT_MS,
      exitStatus: server.exitStatus,
    });
  } catch (error) {
    const exitedEarly = server.exitStatus() !== undefined;
    await server.stop();
    const serverLog = await readFile(log, 'utf8').catch(() => '');
    if (exitedEarly && /Address already in use|BindException/.test(serverLog))
      throw new PortTakenError(`port ${port} or ${controllerPort} was taken`);
    throw new Error(`Kafka did not start on ${brokers}: ${(error as Error).message}\n--- ${log} ---\n${tail(serverLog)}`, { cause: error });
  }
  return { brokers, stop: server.stop };
}

/** Installs a JRE and Maven with apt-get when either is missing (Kafka 4 needs Java 17+). */
async function ensureJavaAndMaven(): Promise<void> {
  const java = process.env.JAVA_HOME ? join(process.env.JAVA_HOME, 'bin', 'java') : 'java';
  const found = async (command: string): Promise<boolean> =>
    (await runCommand('sh', ['-c', 'command -v "$0"', command]).catch(() => ({ code: 1 }))).code === 0;
  if ((await found(java)) && (await found('mvn'))) return;
  await aptInstall(
    ['default-jre-headless', 'maven'],
    'Java or Maven (for Kafka)',
    'Set CONCORD_TEST_KAFKA_BROKERS to a broker list (e.g. 127.0.0.1:9092), or start a Docker engine, or install Java 17+ and Maven yourself.',
  );
}
