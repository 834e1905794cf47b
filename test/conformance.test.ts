/**
 * The conformance suite (test/conformance-suite.ts) for Kafka, RabbitMQ and HTTP destinations:
 * order per key, a coordinator killed with SIGKILL, a consumer killed mid-handler, a poison
 * message, an unroutable RabbitMQ message. The broker outage runs in conformance-outage.test.ts,
 * in parallel, on its own dedicated brokers.
 */
import { conformanceSuite } from './conformance-suite.js';

conformanceSuite([1, 3, 4, 5, 6]);
