/** Broker destinations as URLs, and the headers every broker message carries. */
import { brokerHeaders, dtmHeaders } from '../schemas/broker-messages.js';
import type { Delivery, DeliveryResult } from './publisher.js';

/** kafka://main/orders → { connection: 'main', path: ['orders'] }; rabbitmq://main/ex/rk → path ['ex', 'rk']. */
export function parseDestination(url: string): { scheme: string; connection: string; path: string[] } | undefined {
  const match = /^([a-z]+):\/\/([^/]+)\/(.*)$/.exec(url);
  if (!match) return undefined;
  const [, scheme, connection, rest] = match as unknown as [string, string, string, string];
  return { scheme, connection, path: rest.split('/').map(decodeURIComponent) };
}

/**
 * Headers of a broker message: a stable id (the same on every redelivery, so consumers can
 * de-duplicate), the content type, the DTM coordinates, and a W3C traceparent when the sender gave one.
 */
export function messageHeaders(delivery: Delivery): Record<string, string> {
  const { gid, branch_id, trans_type } = delivery.params;
  // An outbox row is no DTM transaction: its own headers (with its message-id) are all it carries,
  // and its payload need not be JSON. Taken as they are: a drain sends tens of thousands a second.
  if (gid === undefined) return delivery.headers;
  const headers: Record<string, string> = {
    [brokerHeaders.messageId]: `${gid}/${branch_id ?? ''}`,
    ...dtmHeaders({ gid, branch_id, trans_type }),
  };
  for (const [name, value] of Object.entries(delivery.headers)) headers[name.toLowerCase()] = value;
  return headers;
}

/**
 * The engine's leases assume a delivery ends within its timeout; a broker call that takes longer
 * is reported as an error (and retried: at least once) rather than left running.
 */
export function withTimeout(result: Promise<DeliveryResult>, timeoutMs: number): Promise<DeliveryResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<DeliveryResult>((resolve) => {
    timer = setTimeout(() => resolve({ outcome: 'ERROR', detail: `timeout: no broker ack within ${timeoutMs} ms` }), timeoutMs);
  });
  return Promise.race([result, timeout]).finally(() => clearTimeout(timer));
}
