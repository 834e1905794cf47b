/**
 * The checkout example runs as users would run it: a saga over three Kafka participants, against
 * a real coordinator, Kafka and Postgres. One checkout goes through; the other's payment is
 * refused, and its stock reservation is released.
 */
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query } from './helpers/poll.js';

let coordinator: TestCoordinator;
beforeAll(async () => {
  coordinator = await inProcessCoordinator({
    store: await freshDatabase(),
    env: {
      ...fastCoordinator,
      CONCORD_KAFKA_BROKERS: inject('kafkaBrokers'),
      // A reply topic of its own: coordinators of other test files on this Kafka share the consumer
      // group of the default topic, and one of them could be handed the replies meant for this one.
      CONCORD_REPLY_TOPIC: `concord.saga.replies.${randomUUID()}`,
    },
  });
});
afterAll(async () => {
  await coordinator?.stop();
});

it('runs the checkout example: alice is charged and shipped, bob is refused and his stock released', async () => {
  const script = fileURLToPath(new URL('../dist/examples/checkout/index.js', import.meta.url));
  const result = await promisify(execFile)(process.execPath, [script], {
    env: {
      ...process.env,
      CONCORD_URL: coordinator.dtm,
      DATABASE_URL: await freshDatabase(),
      KAFKA_BROKERS: inject('kafkaBrokers'),
      CHECKOUT_TOPIC_PREFIX: `checkout-${randomUUID()}`,
    },
    // Three consumer groups join first (seconds each on a loaded machine); the example itself gives each saga 120 s.
    timeout: 150_000,
  }).catch((err: { code?: number; stdout?: string; stderr?: string }) => {
    throw new Error(
      `example exited with ${err.code}\nstdout:\n${err.stdout}\nstderr:\n${err.stderr}\ncoordinator:\n${coordinator.output()}`,
    );
  });
  const { stdout } = result;
  expect(stdout).toContain('alice: checkout succeed (2 x lamp, 90)');
  expect(stdout).toMatch(/bob: checkout failed \(1 x sofa, 900\): .*charge of 900 is above bob's limit of 500/);
  expect(stdout).toContain('stock [{"sku":"lamp","available":8},{"sku":"sofa","available":3}]');
  expect(stdout).toContain('reservations [{"sku":"lamp","qty":2,"status":"reserved"},{"sku":"sofa","qty":1,"status":"released"}]');
  expect(stdout).toContain('payments [{"customer":"alice","amount":90,"status":"charged"}]');
  expect(stdout).toContain('shipments [{"customer":"alice","address":"1 Elm Street","status":"created"}]');
  expect(stdout).toContain('state is consistent');

  // The coordinator's view of bob's saga (the only failed one in its fresh store): shipping was never
  // asked, and both earlier steps were compensated (payment's refund as a null compensation).
  const failed = (await (await fetch(`${coordinator.dtm}/all?status=failed`)).json()) as { transactions: { gid: string }[] | null };
  expect(failed.transactions).toHaveLength(1);
  const bob = await query(coordinator.dtm, failed.transactions![0]!.gid);
  expect(bob.transaction?.rollback_reason).toContain("charge of 900 is above bob's limit of 500");
  const branch = (id: string, op: string) => bob.branches.find((b) => b.branch_id === id && b.op === op);
  expect(branch('01', 'action')?.status).toBe('succeed');
  expect(branch('01', 'compensate')?.status).toBe('succeed');
  expect(branch('02', 'action')?.status).toBe('failed');
  expect(branch('02', 'compensate')?.status).toBe('succeed');
  expect(branch('03', 'action')).toMatchObject({ status: 'prepared', attempts: 0 });
  expect(branch('03', 'compensate')).toMatchObject({ status: 'prepared', attempts: 0 });
}, 180_000);
