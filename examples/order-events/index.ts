/**
 * Order events: an order service publishes OrderPlaced to Kafka, and a consumer keeps a read model
 * (orders and total per customer) exactly once in effect.
 *
 * The order service inserts the order and the message's barrier row in one local transaction
 * (Msg.doAndSubmit): the event goes out if and only if the order committed. Kafka delivers at
 * least once, so the consumer may see an event twice; `consume` runs its handler in the read
 * model's transaction with an inbox row keyed by the message id, and the second copy changes nothing.
 * Here a duplicate is produced on purpose, as a broker redelivery would. Then a burst of orders
 * placed at once shares coordinator requests through a MsgCoalescer (the batched SDK path).
 *
 *   CONCORD_URL=http://localhost:36789/api/dtmsvr DATABASE_URL=postgres://... KAFKA_BROKERS=localhost:9092 \
 *     node dist/examples/order-events/index.js
 *
 * The coordinator needs the same brokers (CONCORD_KAFKA_BROKERS) as its `default` Kafka connection.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify from 'fastify';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { Msg, MsgCoalescer, consume, ensureBarrierTable, fastifyQueryPrepared } from '../../sdk/index.js';

const coordinator = process.env.CONCORD_URL ?? 'http://localhost:36789/api/dtmsvr';
const brokers = (process.env.KAFKA_BROKERS ?? 'localhost:9092').split(',');
const topic = process.env.ORDER_TOPIC ?? 'order-placed';
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@localhost:5432/postgres' });

interface OrderPlaced {
  orderId: string;
  customer: string;
  amount: number;
}

// Both services share one database here for brevity; in production each has its own.
await ensureBarrierTable(pool);
await pool.query('create table if not exists orders (id text primary key, customer text not null, amount int not null)');
await pool.query('create table if not exists customer_totals (customer text primary key, orders int not null, total int not null)');
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
await admin.disconnect();

// The order service: the coordinator asks /QueryPrepared if it never heard the outcome of an order.
const app = Fastify();
app.get('/QueryPrepared', fastifyQueryPrepared(pool));
const service = await app.listen({ port: 0, host: '127.0.0.1' });

async function placeOrder(customer: string, amount: number, coalescer?: MsgCoalescer): Promise<string> {
  const order: OrderPlaced = { orderId: `order-${randomUUID()}`, customer, amount };
  // Keyed by customer: one customer's events stay in order on one partition.
  // waitResult: submit answers once the event is in Kafka. Not in the burst below: events of one key
  // go out one after another, so a submit there would answer ONGOING while the earlier ones go.
  const msg = new Msg(coordinator, order.orderId, { waitResult: !coalescer, coalescer }).add(`kafka://default/${topic}`, order, {
    key: customer,
    headers: { 'event-type': 'OrderPlaced' },
  });
  await msg.doAndSubmit<void, pg.PoolClient>(`${service}/QueryPrepared`, pool, async (tx) => {
    await tx.query('insert into orders values ($1, $2, $3)', [order.orderId, customer, amount]);
  });
  return order.orderId;
}

// The read model: one consumer group, its inbox and dead-letter table in its own database.
const consumer = await consume<pg.PoolClient>(
  { kafka: { brokers, topic, groupId: 'customer-totals' } },
  async ({ value, headers, tx }) => {
    if (headers['event-type'] !== 'OrderPlaced') return;
    const event = JSON.parse(value) as OrderPlaced;
    await tx.query(
      `insert into customer_totals values ($1, 1, $2)
       on conflict (customer) do update set orders = customer_totals.orders + 1, total = customer_totals.total + $2`,
      [event.customer, event.amount],
    );
  },
  // With the coordinator given, parked messages show in its admin UI (Consumers) and are redriven from there.
  { db: pool, consumerName: 'customer-totals', coordinator: { server: coordinator } },
);

const first = await placeOrder('alice', 30);
await placeOrder('bob', 12);
// A redelivery of alice's first event, with its stable message id: the inbox absorbs it.
const producer = kafka.producer();
await producer.connect();
await producer.send({
  topic,
  messages: [
    {
      key: 'alice',
      value: JSON.stringify({ orderId: first, customer: 'alice', amount: 30 }),
      headers: { 'message-id': `${first}/01`, 'event-type': 'OrderPlaced' },
    },
  ],
});
await producer.disconnect();
await placeOrder('alice', 5);
console.log('placed 3 orders and redelivered one event');

// A flash sale: 20 orders placed at once (20 concurrent requests of the service). One coalescer
// per process lets their prepares and submits share requests; each order is still its own local
// transaction and message, with its own outcome.
const coalescer = new MsgCoalescer(coordinator);
await Promise.all(Array.from({ length: 20 }, () => placeOrder('carol', 1, coalescer)));
console.log(`placed 20 orders at once in ${coalescer.stats.requests} coordinator requests`);

// Alice's last order is behind the duplicate on her partition: once it is counted, so was the duplicate.
const totals = async () =>
  (
    await pool.query<{ customer: string; orders: number; total: number }>(
      'select customer, orders, total from customer_totals order by customer',
    )
  ).rows;
const deadline = Date.now() + 30_000;
while (
  JSON.stringify(await totals()) !==
  JSON.stringify([
    { customer: 'alice', orders: 2, total: 35 },
    { customer: 'bob', orders: 1, total: 12 },
    { customer: 'carol', orders: 20, total: 20 },
  ])
) {
  if (Date.now() > deadline) throw new Error(`read model did not converge: ${JSON.stringify(await totals())}`);
  await sleep(100);
}
console.log('customer totals', JSON.stringify(await totals()));
console.log('parked', (await consumer.parked()).length);

await consumer.close();
await app.close();
await pool.end();
