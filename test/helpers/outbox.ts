/** Drains for the outbox tests: the real publishers, and an HTTP receiver that records what arrives. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import { pino } from 'pino';
import { createHttpPublisher } from '../../relay/http.js';
import { createKafkaPublisher } from '../../relay/kafka.js';
import { checkMapping, parseMapping } from '../../relay/outbox/mapping-check.js';
import { OutboxDrain, type DrainOptions } from '../../relay/outbox/drain.js';
import { Relay } from '../../relay/publisher.js';
import { createRabbitPublisher } from '../../relay/rabbitmq.js';

export function testRelay(kafkaBrokers?: string, amqpUrl?: string): Relay {
  const logger = pino({ level: 'silent' });
  return new Relay([
    createHttpPublisher(),
    createKafkaPublisher(kafkaBrokers ? { default: kafkaBrokers.split(',') } : {}, logger),
    createRabbitPublisher(amqpUrl ? { default: amqpUrl } : {}, logger),
  ]);
}

/** Starts a drain in this process; `stop` aborts it and waits for it to end. */
export async function startDrain(pool: pg.Pool, mapping: unknown, relay: Relay, options: Partial<DrainOptions> = {}) {
  const checked = await checkMapping(pool, parseMapping(mapping));
  const abort = new AbortController();
  const drain = new OutboxDrain({ pool, mapping: checked, relay, logger: pino({ level: 'silent' }), signal: abort.signal, ...options });
  const running = drain.run();
  return {
    drain,
    running,
    stop: async () => {
      abort.abort();
      await running;
    },
  };
}

export interface Received {
  messageId: string;
  body: string;
}

/** An HTTP endpoint that answers 200 to everything and keeps what it got; `refuse` answers 409 for a body. */
export async function receiver(refuse: (body: string) => boolean = () => false): Promise<{ url: string; got: Received[]; server: Server }> {
  const got: Received[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (refuse(body)) {
        res.writeHead(409).end('{"dtm_result":"FAILURE"}');
        return;
      }
      got.push({ messageId: String(req.headers['message-id']), body });
      res.writeHead(200).end('{"dtm_result":"SUCCESS"}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, got, server };
}
