/** What every engine module is given: configuration, store, relay, logger and metrics. */
import type { Logger } from 'pino';
import type { Config } from '../../schemas/config.js';
import type { Relay } from '../../relay/publisher.js';
import type { Metrics } from '../metrics.js';
import type { Database } from '../store/database.js';

export interface EngineContext {
  readonly config: Config;
  readonly database: Database;
  readonly relay: Relay;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** This coordinator's name in row claims (the owner column). */
  readonly nodeId: string;
}

/** Seconds a node may hold a transaction: long enough for two calls at the given timeout. */
export function leaseSeconds(requestTimeout: number): number {
  return Math.max(30, 2 * requestTimeout + 5);
}
