/** The order-events example runs as users would run it, against a real coordinator, Kafka and Postgres. */
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

let coordinator: TestCoordinator;
beforeAll(async () => {
  coordinator = await inProcessCoordinator({
    store: await freshDatabase(),
    env: { ...fastCoordinator, CONCORD_KAFKA_BROKERS: inject('kafkaBrokers') },
  });
});
afterAll(async () => {
  await coordinator?.stop();
});

it('runs the order-events example: each OrderPlaced counts once in the read model, the redelivered one too, and a burst shares requests', async () => {
  const script = fileURLToPath(new URL('../dist/examples/order-events/index.js', import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [script], {
    env: {
      ...process.env,
      CONCORD_URL: coordinator.dtm,
      DATABASE_URL: await freshDatabase(),
      KAFKA_BROKERS: inject('kafkaBrokers'),
      ORDER_TOPIC: `order-placed-${randomUUID()}`,
    },
    timeout: 50_000,
  });
  expect(stdout).toContain('placed 3 orders and redelivered one event');
  expect(stdout).toContain(
    'customer totals [{"customer":"alice","orders":2,"total":35},{"customer":"bob","orders":1,"total":12},{"customer":"carol","orders":20,"total":20}]',
  );
  // The burst's 20 prepares and 20 submits shared requests.
  const requests = Number(/placed 20 orders at once in (\d+) coordinator requests/.exec(stdout)?.[1]);
  expect(requests).toBeLessThan(40);
  expect(stdout).toContain('parked 0');
});
