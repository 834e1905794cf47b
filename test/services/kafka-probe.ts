import { Kafka, logLevel } from 'kafkajs';

/** Resolves when the broker list answers a metadata request (kafkajs admin listTopics); throws otherwise. */
export async function probeKafka(brokers: string): Promise<void> {
  const kafka = new Kafka({
    clientId: 'concord-test-probe',
    brokers: brokers.split(','),
    // One quick try per call: the caller polls.
    retry: { retries: 0 },
    connectionTimeout: 1_000,
    requestTimeout: 3_000,
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    await admin.listTopics();
  } finally {
    await admin.disconnect().catch(() => {});
  }
}
