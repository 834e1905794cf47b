/** The outbox-migration example runs as users would run it, against real Kafka and Postgres, with the concord CLI. */
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { expect, inject, it } from 'vitest';
import { freshDatabase } from './helpers/db.js';

it('runs the outbox-migration example: old poller, Concord beside it, cutover, native outbox; each order counted once', async () => {
  const script = fileURLToPath(new URL('../dist/examples/outbox-migration/index.js', import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [script], {
    env: {
      ...process.env,
      CONCORD_LOG_LEVEL: 'warn',
      DATABASE_URL: await freshDatabase(),
      KAFKA_BROKERS: inject('kafkaBrokers'),
      ORDER_TOPIC: `orders-${randomUUID()}`,
    },
    timeout: 90_000,
  });
  expect(stdout).toContain('step 0: the old poller published 20 orders');
  expect(stdout).toContain('step 1: billing applies each message id once');
  expect(stdout).toMatch(/step 2: concord outbox inspect\n.*\npending rows: 5\n/);
  expect(stdout).toMatch(/^3 ok, 0 would be parked$/m);
  expect(stdout).toContain("step 3: Concord's drain and the old poller both ran; 60 orders published");
  expect(stdout).toMatch(/^published by Concord: [1-9]\d* since /m);
  expect(stdout).toMatch(/^ready: Concord keeps up/m);
  expect(stdout).toMatch(/step 4: old poller stopped after publishing \d+ rows; Concord alone published the next 20/);
  expect(stdout).toContain('step 5: 20 orders through the native outbox (left in concord_outbox: 0)');
  expect(stdout).toContain(
    'orders placed 100; billing read model [{"customer":"alice","orders":35,"total":1745},{"customer":"bob","orders":65,"total":3305}]',
  );
  expect(stdout).toContain('each order counted once');
}, 120_000);
