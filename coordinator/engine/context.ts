/** What every engine module is given: configuration, store, relay, logger, metrics and the passes in flight. */
import type { Logger } from 'pino';
import type { Config } from '../../schemas/config.js';
import type { Relay } from '../../relay/publisher.js';
import type { ReplyListener } from './saga-replies.js';
import type { Metrics } from '../metrics.js';
import type { Database } from '../store/database.js';
import type { InFlight } from './in-flight.js';

export interface EngineContext {
  readonly config: Config;
  readonly database: Database;
  readonly relay: Relay;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** This coordinator's name in row claims (the owner column). */
  readonly nodeId: string;
  /** Passes running on this node; shutdown waits for them. */
  readonly inFlight: InFlight;
  /** Where saga participants reply (config replyTopic, or one named after the store); '' when off. */
  readonly replyTopic: string;
  /** Reads the replies; a saga pass makes it listen on the connections of its broker steps. */
  readonly replies: Pick<ReplyListener, 'listen'>;
}

/** Seconds a node holds a transaction: at least minLease, and long enough for two calls. */
export function leaseSeconds(config: Pick<Config, 'minLease'>, requestTimeout: number): number {
  return Math.max(config.minLease, 2 * requestTimeout + 1);
}
