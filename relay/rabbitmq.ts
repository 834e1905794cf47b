/**
 * RabbitMQ publisher on amqplib: a confirm channel per connection, persistent messages, and
 * `mandatory`, so a message no queue is bound for comes back as a visible failure instead of
 * vanishing. A delivery succeeds only on the broker's confirm. A lost connection is reopened on
 * the next delivery.
 *
 * Destination: rabbitmq://<connection>/<exchange>/<routing key> (an empty exchange is the default
 * exchange, whose routing key is the queue name).
 */
import type { ChannelModel, ConfirmChannel } from 'amqplib';
import type { Logger } from 'pino';
import { messageHeaders, parseDestination, withTimeout } from './destination.js';
import { brokerHeaders } from '../schemas/broker-messages.js';
import { asBytes } from '../schemas/payload-bytes.js';
import { ConnectionStates, type Delivery, type DeliveryResult, type Publisher } from './publisher.js';

interface Link {
  model: ChannelModel;
  channel: ConfirmChannel;
  /** Message ids the broker returned as unroutable, until their confirm arrives. */
  returned: Map<string, string>;
}

export function createRabbitPublisher(connections: Record<string, string>, logger: Logger): Publisher {
  const links = new Map<string, Promise<Link>>();
  const states = new ConnectionStates('rabbitmq');
  let closing = false;

  const linkFor = (name: string): Promise<Link> => {
    let link = links.get(name);
    if (!link) {
      const url = connections[name];
      if (!url) return Promise.reject(new Error(`no RabbitMQ connection named "${name}"`));
      link = (async () => {
        // Loaded on first use: a coordinator without RabbitMQ destinations does not carry the client.
        const { connect } = await import('amqplib');
        const model = await connect(url);
        const channel = await model.createConfirmChannel();
        const returned = new Map<string, string>();
        channel.on('return', (msg: { properties: { messageId?: string }; fields: { replyText?: string; routingKey: string } }) => {
          if (msg.properties.messageId) returned.set(msg.properties.messageId, msg.fields.replyText ?? 'NO_ROUTE');
        });
        const drop = (err?: unknown) => {
          if (err) logger.warn({ err, connection: name }, 'rabbitmq connection lost');
          // Closed by close() is no outage; anything else is until the next delivery reconnects.
          if (!closing) states.down(name, err ?? new Error('connection closed'));
          links.delete(name);
        };
        model.on('close', () => drop());
        model.on('error', drop);
        channel.on('error', drop);
        channel.on('close', () => drop());
        states.up(name);
        return { model, channel, returned };
      })();
      link.catch((err: unknown) => {
        states.down(name, err);
        links.delete(name);
      });
      links.set(name, link);
    }
    return link;
  };

  const problem = (url: string): string | undefined => {
    const dest = parseDestination(url);
    if (!dest || dest.path.length !== 2) return `bad RabbitMQ destination "${url}": use rabbitmq://<connection>/<exchange>/<routing key>`;
    if (!connections[dest.connection]) return `no RabbitMQ connection named "${dest.connection}" (configure amqpUrl or connections)`;
    return undefined;
  };

  return {
    schemes: ['rabbitmq'],
    problem,
    async publish(delivery: Delivery): Promise<DeliveryResult> {
      const bad = problem(delivery.url);
      const dest = parseDestination(delivery.url);
      if (bad || !dest) return { outcome: 'ERROR', detail: bad ?? 'bad destination' };
      const [exchange, routingKey] = dest.path as [string, string];
      const headers = messageHeaders(delivery);
      const messageId = headers[brokerHeaders.messageId]!;
      const confirmed = (async (): Promise<DeliveryResult> => {
        try {
          const link = await linkFor(dest.connection);
          await new Promise<void>((resolve, reject) => {
            link.channel.publish(
              exchange,
              routingKey,
              asBytes(delivery.payload),
              { persistent: true, mandatory: true, messageId, contentType: 'application/json', headers },
              (err: unknown) => (err ? reject(err instanceof Error ? err : new Error('nacked by the broker')) : resolve()),
            );
          });
          // A returned message is confirmed too (it was "handled"): the return, sent first, decides.
          const reason = link.returned.get(messageId);
          link.returned.delete(messageId);
          if (reason)
            return { outcome: 'ERROR', detail: `rabbitmq: unroutable (${reason}) to exchange "${exchange}" with key "${routingKey}"` };
          return { outcome: 'SUCCESS', detail: `rabbitmq confirm ${exchange}/${routingKey}` };
        } catch (err) {
          links.delete(dest.connection);
          return { outcome: 'ERROR', detail: `rabbitmq: ${(err as Error).message}` };
        }
      })();
      return withTimeout(confirmed, delivery.timeoutMs);
    },
    async close() {
      closing = true;
      await Promise.all([...links.values()].map((l) => l.then((link) => link.model.close()).catch(() => undefined)));
    },
    connections: () => states.list(),
    reconnect: (name) =>
      linkFor(name).then(
        () => undefined,
        () => undefined,
      ),
  };
}
