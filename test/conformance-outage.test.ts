/**
 * The conformance suite (test/conformance-suite.ts), case 2: the broker (or HTTP endpoint) halted
 * mid-flow and restarted on the same port; nothing is lost and the backlog drains by itself.
 * A file of its own, so that it runs beside conformance.test.ts, with dedicated brokers.
 */
import { conformanceSuite } from './conformance-suite.js';

conformanceSuite([2]);
