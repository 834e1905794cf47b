/** What arrives on fresh Kafka topics, read from their beginning with kafkajs, as a service's consumer would. */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, type Consumer } from 'kafkajs';

export interface KafkaRecord {
  key: string | undefined;
  value: string;
  partition: number;
  headers: Record<string, string>;
}

export interface TopicReader {
  /** Creates `topic` with three partitions and returns the array its records are pushed into as they arrive. */
  collect(topic: string): Promise<KafkaRecord[]>;
  /** Disconnects every consumer `collect` started. */
  close(): Promise<void>;
}

export function topicReader(brokers: string[]): TopicReader {
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  const consumers: Consumer[] = [];
  return {
    async collect(topic) {
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
      await admin.disconnect();
      const seen: KafkaRecord[] = [];
      const consumer = kafka.consumer({ groupId: `g-${randomUUID()}` });
      consumers.push(consumer);
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ message, partition }) => {
          const headers = Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]));
          seen.push({ key: message.key?.toString(), value: String(message.value), partition, headers });
        },
      });
      return seen;
    },
    async close() {
      await Promise.all(consumers.map((c) => c.disconnect()));
    },
  };
}
