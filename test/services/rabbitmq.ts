import { probeAmqp } from './amqp-probe.js';
import { dockerAnswers } from './docker.js';
import { startLocalRabbitMQ } from './rabbitmq-node.js';
import { waitUntilReady } from './supervised-process.js';

export { findRabbitMQ, rabbitMQBinaries } from './rabbitmq-install.js';

export interface RabbitMQService {
  /** AMQP URL with credentials, e.g. amqp://guest:guest@127.0.0.1:PORT */
  url: string;
  /** Stops the broker and removes its files; does nothing for a broker given by CONCORD_TEST_AMQP_URL. */
  stop(): Promise<void>;
}

const IMAGE = 'rabbitmq:3';
/** A broker given by the environment is already running: it only has to answer. */
const GIVEN_TIMEOUT_MS = 30_000;

/**
 * Provides a RabbitMQ broker, in this order:
 * 1. the broker at `CONCORD_TEST_AMQP_URL` when that is set (an amqp:// URL with credentials);
 * 2. a `rabbitmq:3` container through testcontainers when a Docker engine answers;
 * 3. a throwaway node from Debian's packages, which are installed with apt-get if missing.
 * It resolves once the broker accepts an AMQP connection.
 */
export async function startRabbitMQ(): Promise<RabbitMQService> {
  const given = process.env.CONCORD_TEST_AMQP_URL;
  if (given !== undefined && given !== '') {
    await waitUntilReady(() => probeAmqp(given), {
      what: `RabbitMQ at CONCORD_TEST_AMQP_URL=${redact(given)}`,
      timeoutMs: GIVEN_TIMEOUT_MS,
    });
    return { url: given, stop: () => Promise.resolve() };
  }
  if (await dockerAnswers()) {
    try {
      return await startContainer();
    } catch (error) {
      console.warn(
        `[concord test services] Docker answers but ${IMAGE} did not start (${(error as Error).message}); using Debian's RabbitMQ instead`,
      );
    }
  }
  return startLocalRabbitMQ();
}

async function startContainer(): Promise<RabbitMQService> {
  // Loaded only here: testcontainers is slow to import and unused on the other paths.
  const { RabbitMQContainer } = await import('@testcontainers/rabbitmq');
  // Its wait strategy reads "Server startup complete" in the log; 30 s is short for a loaded machine.
  const container = await new RabbitMQContainer(IMAGE).withStartupTimeout(120_000).start();
  return {
    url: `amqp://guest:guest@${container.getHost()}:${container.getMappedPort(5672)}`,
    stop: async () => {
      await container.stop();
    },
  };
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}
