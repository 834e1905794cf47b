/**
 * Checkout: an order saga across three services on Kafka, inventory, payment and shipping.
 *
 *   step   action           compensation      service (Kafka topic)
 *   1      reserve          release           inventory  <prefix>.inventory
 *   2      charge           refund            payment    <prefix>.payment
 *   3      create-shipment  cancel-shipment   shipping   <prefix>.shipping
 *
 * For each step the coordinator publishes a command to the service's topic and waits for the
 * participant's reply on its reply topic. The services (services.ts) run each command in a
 * transaction of their own tables, inside the branch barrier, and reply.
 *
 * Two checkouts are submitted. Alice's goes through: stock reserved, card charged, shipment
 * created. Bob's sofa costs more than his credit limit, so payment refuses the charge with
 * BranchFailure: the saga rolls back, and inventory releases his reservation (payment's refund
 * finds nothing to undo: the barrier sees that the charge never committed). The example waits for
 * both sagas to end by polling the coordinator's GET /query, prints the outcomes and the services'
 * tables, and exits with 1 if they are not what they should be.
 *
 * Start a coordinator whose `default` Kafka connection is the same Kafka, then run the example:
 *
 *   CONCORD_KAFKA_BROKERS=localhost:9092 npm start
 *   CONCORD_URL=http://localhost:36789/api/dtmsvr DATABASE_URL=postgres://... KAFKA_BROKERS=localhost:9092 \
 *     npm run example:checkout
 *
 * CHECKOUT_TOPIC_PREFIX (default `checkout`) names the topics and consumer groups; LOG_LEVEL
 * (e.g. info) shows the participants' logs on stderr.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Saga } from '../../sdk/index.js';
import { startInventory, startPayment, startShipping, type CheckoutOrder, type Service } from './services.js';

const coordinator = process.env.CONCORD_URL ?? 'http://localhost:36789/api/dtmsvr';
const databaseUrl = process.env.DATABASE_URL ?? 'postgres://postgres@localhost:5432/postgres';
const brokers = (process.env.KAFKA_BROKERS ?? 'localhost:9092').split(',');
const prefix = process.env.CHECKOUT_TOPIC_PREFIX ?? 'checkout';
/** How long a saga may take; the first commands wait for the participants to join their consumer groups. */
const sagaTimeoutMs = 120_000;
const logger = pino({ level: process.env.LOG_LEVEL ?? 'silent' }, pino.destination(2));

const topics = { inventory: `${prefix}.inventory`, payment: `${prefix}.payment`, shipping: `${prefix}.shipping` };
const initialStock = { lamp: 10, sofa: 3 };
const run = randomUUID().slice(0, 8);
const orders: CheckoutOrder[] = [
  { orderId: `order-${run}-1`, customer: 'alice', sku: 'lamp', qty: 2, amount: 90, address: '1 Elm Street' },
  { orderId: `order-${run}-2`, customer: 'bob', sku: 'sofa', qty: 1, amount: 900, address: '2 Oak Avenue' },
];

/** The saga of one checkout; the step keys route each service's commands to one partition per sku, customer or order. */
function checkout(order: CheckoutOrder): Saga {
  const url = (topic: string) => `kafka://default/${topic}`;
  return new Saga(coordinator, `checkout-${order.orderId}`)
    .add(url(topics.inventory), url(topics.inventory), order, { command: 'reserve', compensateCommand: 'release', key: order.sku })
    .add(url(topics.payment), url(topics.payment), order, { command: 'charge', compensateCommand: 'refund', key: order.customer })
    .add(url(topics.shipping), url(topics.shipping), order, {
      command: 'create-shipment',
      compensateCommand: 'cancel-shipment',
      key: order.orderId,
    });
}

interface QueryReply {
  transaction: { status: string; rollback_reason?: string; attention_reason?: string } | null;
}

/** Polls GET /query until the saga ends: succeed, failed, or needs_attention (a compensation keeps failing). */
async function waitForEnd(gid: string): Promise<{ status: string; reason?: string }> {
  const deadline = Date.now() + sagaTimeoutMs;
  for (;;) {
    const res = await fetch(`${coordinator}/query?gid=${encodeURIComponent(gid)}`, { signal: AbortSignal.timeout(10_000) });
    if (res.status !== 200) throw new Error(`GET /query?gid=${gid} answered ${res.status}: ${await res.text()}`);
    const { transaction } = (await res.json()) as QueryReply;
    const status = transaction?.status ?? 'unknown';
    if (status === 'succeed' || status === 'failed' || status === 'needs_attention') {
      const reason = transaction?.rollback_reason || transaction?.attention_reason;
      return reason ? { status, reason } : { status };
    }
    if (Date.now() > deadline) throw new Error(`saga ${gid} is still ${status} after ${sagaTimeoutMs / 1000} s`);
    await sleep(200);
  }
}

const services: Service[] = [];
try {
  const options = (topic: string) => ({ databaseUrl, brokers, topic, logger });
  const inventory = await startInventory(options(topics.inventory), initialStock);
  services.push(inventory);
  const payment = await startPayment(options(topics.payment), { alice: 500, bob: 500 });
  services.push(payment);
  const shipping = await startShipping(options(topics.shipping));
  services.push(shipping);
  console.log(`participants started on ${Object.values(topics).join(', ')}`);

  const sagas = orders.map(checkout);
  await Promise.all(sagas.map((saga) => saga.submit()));
  const outcomes = await Promise.all(sagas.map((saga) => waitForEnd(saga.gid)));
  orders.forEach((order, i) => {
    const { status, reason } = outcomes[i]!;
    console.log(`${order.customer}: checkout ${status} (${order.qty} x ${order.sku}, ${order.amount})${reason ? `: ${reason}` : ''}`);
  });

  // This run's rows only: the tables keep earlier runs' orders.
  const ids = orders.map((o) => o.orderId);
  const rows = async (service: Service, sql: string, params: unknown[]) =>
    (await service.pool.query<Record<string, unknown>>(sql, params)).rows;
  const state = {
    stock: await rows(inventory, 'select sku, available from inventory.stock where sku = any($1) order by sku', [
      Object.keys(initialStock),
    ]),
    reservations: await rows(inventory, 'select sku, qty, status from inventory.reservations where order_id = any($1) order by order_id', [
      ids,
    ]),
    payments: await rows(payment, 'select customer, amount, status from payment.charges where order_id = any($1) order by order_id', [ids]),
    shipments: await rows(shipping, 'select customer, address, status from shipping.shipments where order_id = any($1) order by order_id', [
      ids,
    ]),
  };
  for (const [table, content] of Object.entries(state)) console.log(table, JSON.stringify(content));

  // Alice's order went through; Bob's left nothing behind: his sofa is back in stock, and no charge or shipment remains.
  const expected = {
    outcomes: ['succeed', 'failed'],
    stock: [
      { sku: 'lamp', available: initialStock.lamp - 2 },
      { sku: 'sofa', available: initialStock.sofa },
    ],
    reservations: [
      { sku: 'lamp', qty: 2, status: 'reserved' },
      { sku: 'sofa', qty: 1, status: 'released' },
    ],
    payments: [{ customer: 'alice', amount: 90, status: 'charged' }],
    shipments: [{ customer: 'alice', address: '1 Elm Street', status: 'created' }],
  };
  const actual: Record<keyof typeof expected, unknown> = { outcomes: outcomes.map((o) => o.status), ...state };
  const wrong = Object.entries(expected).filter(
    ([key, value]) => JSON.stringify(actual[key as keyof typeof expected]) !== JSON.stringify(value),
  );
  if (wrong.length === 0) {
    console.log('state is consistent: every order either went through or left nothing behind');
  } else {
    for (const [key, value] of wrong)
      console.log(`unexpected ${key}: ${JSON.stringify(actual[key as keyof typeof expected])}, expected ${JSON.stringify(value)}`);
    process.exitCode = 1;
  }
} finally {
  await Promise.all(services.map((service) => service.close()));
}
