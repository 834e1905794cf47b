import { randomBytes } from 'node:crypto';
import { dockerAnswers } from './docker.js';
import { kafkaVersion, startLocalKafka } from './kafka-local.js';
import { probeKafka } from './kafka-probe.js';
import { waitUntilReady } from './supervised-process.js';

export { kafkaScriptDir, kafkaVersion } from './kafka-local.js';

export interface KafkaService {
  /** Comma-separated host:port list for kafkajs' `brokers` (split on ","). */
  brokers: string;
  /** Stops the broker and removes its files; does nothing for brokers given by CONCORD_TEST_KAFKA_BROKERS. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 120_000;
/** A broker given by the environment is already running: it only has to answer. */
const GIVEN_TIMEOUT_MS = 30_000;

/**
 * Provides a single-node Kafka broker, in this order:
 * 1. the brokers at `CONCORD_TEST_KAFKA_BROKERS` when that is set (host:port[,host:port...]);
 * 2. an `apache/kafka` container (the version of test/services/kafka/pom.xml) through
 *    testcontainers when a Docker engine answers;
 * 3. a throwaway KRaft broker from Kafka's jars on Maven Central (test/services/kafka/start-kafka.sh).
 * It resolves once the broker answers a metadata request; topics are created on first use.
 */
export async function startKafka(): Promise<KafkaService> {
  const given = process.env.CONCORD_TEST_KAFKA_BROKERS;
  if (given !== undefined && given !== '') {
    await waitUntilReady(() => probeKafka(given), { what: `Kafka at CONCORD_TEST_KAFKA_BROKERS=${given}`, timeoutMs: GIVEN_TIMEOUT_MS });
    return { brokers: given, stop: () => Promise.resolve() };
  }
  if (await dockerAnswers()) {
    try {
      return await startContainer();
    } catch (error) {
      console.warn(
        `[concord test services] Docker answers but apache/kafka did not start (${(error as Error).message}); using Kafka's jars instead`,
      );
    }
  }
  return startLocalKafka();
}

const CONTAINER_PORT = 9092;
const START_SCRIPT = '/tmp/concord-start-kafka.sh';
const WAITING = 'concord: waiting for the start script';

/**
 * The advertised listener must name the port that Docker maps on the host, which is known only
 * once the container runs: the container waits for a start script that we copy in then (the
 * testcontainers Kafka module does the same, but only for Confluent's images).
 */
async function startContainer(): Promise<KafkaService> {
  // Loaded only here: testcontainers is slow to import and unused on the other paths.
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer(`apache/kafka:${await kafkaVersion()}`)
    .withExposedPorts(CONTAINER_PORT)
    .withEnvironment({
      CLUSTER_ID: randomBytes(16).toString('base64url').replace(/^-/, 'A'),
      KAFKA_NODE_ID: '1',
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_LISTENERS: `PLAINTEXT://0.0.0.0:${CONTAINER_PORT},BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094`,
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT',
      KAFKA_INTER_BROKER_LISTENER_NAME: 'BROKER',
      KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
      KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9094',
      // The same settings as start-kafka.sh writes.
      KAFKA_NUM_PARTITIONS: '1',
      KAFKA_DEFAULT_REPLICATION_FACTOR: '1',
      KAFKA_MIN_INSYNC_REPLICAS: '1',
      KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'true',
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
      KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS: '1',
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
      KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS: '1',
      KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR: '1',
      KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR: '1',
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
      KAFKA_HEAP_OPTS: '-Xms512m -Xmx512m',
    })
    .withEntrypoint(['sh', '-c'])
    .withCommand([`echo '${WAITING}'; while [ ! -f ${START_SCRIPT} ]; do sleep 0.05; done; exec sh ${START_SCRIPT}`])
    .withWaitStrategy(Wait.forLogMessage(WAITING))
    .start();
  const brokers = `${container.getHost()}:${container.getMappedPort(CONTAINER_PORT)}`;
  const stop = async (): Promise<void> => {
    await container.stop();
  };
  try {
    await container.copyContentToContainer([
      {
        content: `export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://${brokers},BROKER://localhost:9093\nexec /etc/kafka/docker/run\n`,
        target: START_SCRIPT,
        mode: 0o755,
      },
    ]);
    await waitUntilReady(() => probeKafka(brokers), { what: `Kafka container on ${brokers}`, timeoutMs: READY_TIMEOUT_MS });
  } catch (error) {
    await stop();
    throw error;
  }
  return { brokers, stop };
}
