/**
 * The relay's one interface: get a payload to a destination and report how it was taken. The
 * engine picks a publisher by the destination's URL scheme and knows nothing else of it.
 */
import type { DtmOutcome } from '../schemas/dtm.js';
import { isGrpcTarget } from '../schemas/grpc-target.js';

export interface Delivery {
  /** Destination; its scheme picks the publisher (http:, https:, kafka:, rabbitmq:), or gRPC's scheme-less host:port/package.Service/Method. */
  url: string;
  /** Query parameters the destination gets besides its own (DTM: gid, trans_type, branch_id, op). */
  params: Record<string, string>;
  /** Raw payload: text goes out as its UTF-8 bytes, bytes unchanged; empty means none. */
  payload: string | Buffer;
  /** HTTP: POST even without a payload (DTM's XA phase two); otherwise an empty payload is a GET. */
  post?: boolean;
  headers: Record<string, string>;
  /** The call is abandoned after this many milliseconds. */
  timeoutMs: number;
  /** Broker message key (Kafka partitioning); HTTP ignores it. */
  key?: string;
}

export interface DeliveryResult {
  outcome: DtmOutcome;
  /** A short human description of the answer, for logs and last_error. */
  detail: string;
}

/** The state of one broker connection a publisher has opened (connections never used are not listed). */
export interface ConnectionState {
  kind: 'kafka' | 'rabbitmq';
  /** The connection's name in destinations (kafka://<name>/…). */
  name: string;
  up: boolean;
  /** Why it is down. */
  error?: string;
}

/** Connection states by name, kept by a broker publisher as it connects, sends and loses connections. */
export class ConnectionStates {
  private readonly states = new Map<string, ConnectionState>();

  constructor(private readonly kind: ConnectionState['kind']) {}

  up(name: string): void {
    this.states.set(name, { kind: this.kind, name, up: true });
  }

  down(name: string, err: unknown): void {
    this.states.set(name, { kind: this.kind, name, up: false, error: err instanceof Error ? err.message : String(err) });
  }

  list(): ConnectionState[] {
    return [...this.states.values()];
  }
}

export interface Publisher {
  /** URL schemes this publisher serves, without the colon. */
  readonly schemes: readonly string[];
  /** Why this destination can never be delivered (unknown connection, bad shape), or undefined. */
  problem(url: string): string | undefined;
  publish(delivery: Delivery): Promise<DeliveryResult>;
  /** Optional: many deliveries at once, in order, cheaper than one publish each; results in the same order. */
  publishMany?(deliveries: Delivery[]): Promise<DeliveryResult[]>;
  close(): Promise<void>;
  /** Broker publishers: the connections opened so far and whether they are up. */
  connections?(): ConnectionState[];
  /** Broker publishers: tries to open a connection that is down again (resolves either way; connections() tells). */
  reconnect?(name: string): Promise<void>;
}

/** Routes each delivery to the publisher serving its scheme. */
export class Relay {
  private readonly byScheme = new Map<string, Publisher>();

  constructor(private readonly publishers: Publisher[]) {
    for (const publisher of publishers) for (const scheme of publisher.schemes) this.byScheme.set(scheme, publisher);
  }

  /** Why a destination can never be delivered, or undefined when it can; checked before anything is stored. */
  problem(url: string): string | undefined {
    const publisher = this.byScheme.get(schemeOf(url));
    if (!publisher)
      return `no destination for "${url}": use http(s)://, kafka://<connection>/<topic>, rabbitmq://<connection>/<exchange>/<routing key> or gRPC's host:port/package.Service/Method`;
    return publisher.problem(url);
  }

  publish(delivery: Delivery): Promise<DeliveryResult> {
    const publisher = this.byScheme.get(schemeOf(delivery.url));
    if (!publisher) return Promise.resolve({ outcome: 'ERROR', detail: `no publisher for ${delivery.url}` });
    return publisher.publish(delivery);
  }

  /** Many deliveries, in order per publisher; results in the order of `deliveries`. */
  async publishMany(deliveries: Delivery[]): Promise<DeliveryResult[]> {
    const byPublisher = new Map<Publisher | undefined, number[]>();
    deliveries.forEach((d, i) => {
      const publisher = this.byScheme.get(schemeOf(d.url));
      const indexes = byPublisher.get(publisher);
      if (indexes) indexes.push(i);
      else byPublisher.set(publisher, [i]);
    });
    const results = new Array<DeliveryResult>(deliveries.length);
    await Promise.all(
      [...byPublisher].map(async ([publisher, indexes]) => {
        const mine = indexes.map((i) => deliveries[i]!);
        const answers = publisher?.publishMany ? await publisher.publishMany(mine) : await Promise.all(mine.map((d) => this.publish(d)));
        indexes.forEach((i, n) => (results[i] = answers[n]!));
      }),
    );
    return results;
  }

  /** Every broker connection opened so far, with its state (for readiness and metrics). */
  connections(): ConnectionState[] {
    return this.publishers.flatMap((p) => p.connections?.() ?? []);
  }

  /**
   * Tries to reopen every connection that is down, so one whose last delivery failed does not
   * stay "down" once its broker is back though nothing is sent to it any more.
   */
  async reconnectDown(): Promise<void> {
    const attempts: Promise<void>[] = [];
    for (const p of this.publishers) {
      for (const c of p.connections?.() ?? []) if (!c.up && p.reconnect) attempts.push(p.reconnect(c.name));
    }
    await Promise.all(attempts);
  }

  async close(): Promise<void> {
    await Promise.all(this.publishers.map((p) => p.close()));
  }
}

/** The URL's scheme; DTM's gRPC form has none (`new URL` would read its host as one), and the gRPC publisher serves it as "grpc". */
function schemeOf(url: string): string {
  if (isGrpcTarget(url)) return 'grpc';
  const colon = url.indexOf(':');
  return colon > 0 ? url.slice(0, colon).toLowerCase() : '';
}
