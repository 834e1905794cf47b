/**
 * From a hand-rolled outbox to Concord, numbered as the steps of docs/outbox-migration.md:
 *
 * 0. The starting point: the shop writes each order and an `outbox` row in one transaction, and
 *    its old poller (old-poller.ts) publishes the rows to Kafka.
 * 1. The billing consumer keeps a read model through the SDK's inbox, and the old poller sets the
 *    message-id header Concord sets, so a row both publish is applied once.
 * 2. `concord outbox inspect` dry-runs the mapping on the real rows.
 * 3. `concord outbox drain` runs beside the old poller: both publish, each order counts once.
 * 4. `concord outbox cutover` says when the old poller can go; it is stopped, Concord carries on.
 * 5. New code writes to the native outbox (`outbox.publish` in the order's transaction), drained
 *    by `concord outbox drain --native`.
 *
 *   DATABASE_URL=postgres://... KAFKA_BROKERS=localhost:9092 node dist/examples/outbox-migration/index.js
 */
import { execFile, spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { consume, ensureOutboxTable, outbox } from '../../sdk/index.js';
import { runOldPoller } from './old-poller.js';

const database = process.env.DATABASE_URL ?? 'postgres://postgres@localhost:5432/postgres';
const brokers = process.env.KAFKA_BROKERS ?? 'localhost:9092';
const topic = process.env.ORDER_TOPIC ?? 'orders';
const concord = fileURLToPath(new URL('../../coordinator/cli.js', import.meta.url));
const pool = new pg.Pool({ connectionString: database });

// The team's outbox, as it was (docs/outbox-migration.md, "A typical starting point").
await pool.query(`create table if not exists outbox (
  id bigserial primary key, topic text not null, aggregate_id text, payload jsonb not null, headers jsonb,
  created_at timestamptz not null default now(), published boolean not null default false)`);
await pool.query('create table if not exists orders (id text primary key, customer text not null, amount int not null)');
await pool.query('create table if not exists customer_totals (customer text primary key, orders int not null, total int not null)');
const kafka = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
await admin.disconnect();

let placed = 0;
/** The shop, before: the order and its outbox row in one transaction. */
async function placeOrderOld(customer: string, amount: number): Promise<void> {
  const id = `order-${++placed}`;
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query('insert into orders values ($1, $2, $3)', [id, customer, amount]);
    await client.query('insert into outbox (topic, aggregate_id, payload) values ($1, $2, $3)', [
      topic,
      customer,
      { id, customer, amount },
    ]);
    await client.query('commit');
  } finally {
    client.release();
  }
}
/** The shop, after: new code writes to Concord's native outbox in the same transaction. */
async function placeOrderNative(customer: string, amount: number): Promise<void> {
  const id = `order-${++placed}`;
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query('insert into orders values ($1, $2, $3)', [id, customer, amount]);
    await outbox.publish(client, `kafka://default/${topic}`, { id, customer, amount }, { key: customer });
    await client.query('commit');
  } finally {
    client.release();
  }
}
const placeOrders = async (place: typeof placeOrderOld, n: number) => {
  for (let i = 0; i < n; i++) await place(i % 3 === 0 ? 'alice' : 'bob', placed + 1);
};
const unpublished = async () => (await pool.query<{ n: number }>('select count(*)::int as n from outbox where not published')).rows[0]!.n;
const until = async (done: () => Promise<boolean>) => {
  while (!(await done())) await sleep(50);
};

// Billing: each order counts once, however many times it arrives.
const billing = await consume<pg.PoolClient>(
  { kafka: { brokers: brokers.split(','), topic, groupId: `billing-${topic}` } },
  async ({ value, tx }) => {
    const order = JSON.parse(value) as { customer: string; amount: number };
    await tx.query(
      `insert into customer_totals values ($1, 1, $2)
       on conflict (customer) do update set orders = customer_totals.orders + 1, total = customer_totals.total + $2`,
      [order.customer, order.amount],
    );
  },
  { db: pool, consumerName: 'billing' },
);

const mappingFile = join(mkdtempSync(join(tmpdir(), 'outbox-migration-')), 'outbox.json');
writeFileSync(
  mappingFile,
  JSON.stringify({
    table: 'outbox',
    destinationColumn: 'topic',
    destinationTemplate: 'kafka://default/{destination}',
    keyColumn: 'aggregate_id',
    payloadColumn: 'payload',
    payloadEncoding: 'json',
    headersColumn: 'headers',
    createdAtColumn: 'created_at',
    published: 'flag',
    publishedColumn: 'published',
  }),
);
const cli = (args: string[]) =>
  promisify(execFile)(process.execPath, [concord, 'outbox', ...args, '--database', database, '--kafka-brokers', brokers]).then(
    (r) => r.stdout,
  );

// 0. The old poller alone.
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
await producer.connect();
let stopOld = new AbortController();
let oldPoller = runOldPoller(pool, producer, stopOld.signal);
await placeOrders(placeOrderOld, 20);
await until(async () => (await unpublished()) === 0);
stopOld.abort();
let oldPublished = await oldPoller;
console.log(`step 0: the old poller published ${placed} orders`);

// 1–2. While the old poller is redeployed with the message-id header, orders keep coming: check
// the mapping on them.
await placeOrders(placeOrderOld, 5);
console.log('step 1: billing applies each message id once (its inbox); the old poller sets message-id like Concord');
console.log(`step 2: concord outbox inspect\n${await cli(['inspect', '--mapping', mappingFile, '--sample', '3'])}`);

// 3. The old poller back, and Concord's drain beside it.
stopOld = new AbortController();
oldPoller = runOldPoller(pool, producer, stopOld.signal);
const drain = spawn(
  process.execPath,
  [concord, 'outbox', 'drain', '--mapping', mappingFile, '--database', database, '--kafka-brokers', brokers],
  {
    stdio: 'ignore',
  },
);
await until(() =>
  pool.query<{ t: string | null }>(`select to_regclass('concord_outbox_stats')::text as t`).then((r) => r.rows[0]!.t !== null),
);
await placeOrders(placeOrderOld, 35);
await until(async () => (await unpublished()) === 0);
console.log(`step 3: Concord's drain and the old poller both ran; ${placed} orders published`);

// 4. The cutover report, then the old poller goes.
// (once Concord has published something: its drain creates concord_outbox_stats when it starts)
await until(() =>
  pool.query<{ n: number }>('select count(*)::int as n from concord_outbox_stats').then(
    (r) => r.rows[0]!.n > 0,
    () => false,
  ),
);
console.log(
  `step 4: concord outbox cutover\n${await cli(['cutover', '--mapping', mappingFile, '--inbox-database', database, '--consumer', 'billing'])}`,
);
stopOld.abort();
oldPublished += await oldPoller;
await producer.disconnect();
await placeOrders(placeOrderOld, 20);
await until(async () => (await unpublished()) === 0);
drain.kill('SIGTERM');
await new Promise((resolve) => drain.once('exit', resolve));
console.log(`step 4: old poller stopped after publishing ${oldPublished} rows; Concord alone published the next 20`);

// 5. New code: the native outbox.
await ensureOutboxTable(pool);
await placeOrders(placeOrderNative, 20);
await cli(['drain', '--native', '--exit-when-idle']);
console.log(
  `step 5: 20 orders through the native outbox (left in concord_outbox: ${(await pool.query<{ n: number }>('select count(*)::int as n from concord_outbox')).rows[0]!.n})`,
);

await until(
  async () => (await pool.query<{ n: number }>('select coalesce(sum(orders), 0)::int as n from customer_totals')).rows[0]!.n >= placed,
);
await sleep(500); // a duplicate still on its way would show up here
const totals = (await pool.query('select customer, orders, total from customer_totals order by customer')).rows;
const expected = (
  await pool.query('select customer, count(*)::int as orders, sum(amount)::int as total from orders group by customer order by customer')
).rows;
console.log(`orders placed ${placed}; billing read model ${JSON.stringify(totals)}`);
console.log(
  JSON.stringify(totals) === JSON.stringify(expected) ? 'each order counted once' : `MISMATCH: expected ${JSON.stringify(expected)}`,
);
await billing.close();
await pool.end();
