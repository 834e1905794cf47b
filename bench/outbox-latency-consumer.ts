/**
 * The steady-state outbox bench's consumer (bench/outbox-latency.ts), in a worker thread of its own:
 * the writers' event loop in the main thread must not delay the receive times it takes. Notes when
 * each message id arrived (milliseconds since the epoch, sub-millisecond) and hands them over on
 * "report".
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Kafka, logLevel } from 'kafkajs';

const { brokers, topic } = workerData as { brokers: string; topic: string };
const port = parentPort!;
const arrived = new Map<string, number>();
const now = () => performance.timeOrigin + performance.now();

const consumer = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).consumer({
  groupId: `bench-outlat-${topic}`,
  maxWaitTimeInMs: 5,
});
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
await consumer.run({
  eachMessage: async ({ message }) => {
    arrived.set(String(message.headers?.['message-id']), now());
  },
});
port.on('message', (what: string) => {
  if (what === 'report') port.postMessage([...arrived]);
  if (what === 'stop') void consumer.disconnect().then(() => port.close());
});
port.postMessage('ready');
