/**
 * The three participant services of the checkout saga. Each owns one Postgres schema (inventory,
 * payment, shipping) and reads its commands from its own Kafka topic; in production each would
 * have a database of its own. A handler writes with `tx`, the transaction that also holds the
 * branch barrier's row, so a redelivered command or a compensation that overtakes its action
 * changes nothing (docs/sagas-sdk.md, "What the barrier guarantees").
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { BranchFailure, participant, type Participant } from '../../sdk/index.js';

/** The payload of every step: each service reads the fields it needs. */
export interface CheckoutOrder {
  orderId: string;
  customer: string;
  sku: string;
  qty: number;
  /** What the customer pays, in whole euros. */
  amount: number;
  address: string;
}

export interface ServiceOptions {
  databaseUrl: string;
  brokers: string[];
  /** The command topic; also the participant's consumer group. */
  topic: string;
  logger?: Logger;
}

export interface Service {
  /** The service's own connections; the example reads the service's tables through it. */
  pool: pg.Pool;
  /** Stops the participant (after the command in progress), then the pool. */
  close(): Promise<void>;
}

async function startService(
  options: ServiceOptions,
  setup: (pool: pg.Pool) => Promise<void>,
  handlers: (p: Participant<pg.PoolClient>) => Participant<pg.PoolClient>,
): Promise<Service> {
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 4 });
  try {
    await setup(pool);
    const p = handlers(
      participant<pg.PoolClient>(options.topic, {
        source: { kafka: { brokers: options.brokers, groupId: options.topic } },
        db: pool,
        ...(options.logger ? { logger: options.logger } : {}),
      }),
    );
    await p.start();
    return {
      pool,
      async close() {
        await p.close();
        await pool.end();
      },
    };
  } catch (err) {
    await pool.end();
    throw err;
  }
}

/** Inventory: reserve takes stock out of `available`, release puts a reservation's stock back. */
export function startInventory(options: ServiceOptions, stock: Record<string, number>): Promise<Service> {
  return startService(
    options,
    async (pool) => {
      await pool.query('create schema if not exists inventory');
      await pool.query('create table if not exists inventory.stock (sku text primary key, available int not null check (available >= 0))');
      await pool.query(`create table if not exists inventory.reservations (
         order_id text primary key, sku text not null, qty int not null, status text not null)`);
      // The example's starting stock, reset on every run.
      for (const [sku, available] of Object.entries(stock))
        await pool.query('insert into inventory.stock values ($1, $2) on conflict (sku) do update set available = excluded.available', [
          sku,
          available,
        ]);
    },
    (p) =>
      p
        .on('reserve', async ({ tx, json }) => {
          const order = json<CheckoutOrder>();
          const { rowCount } = await tx.query('update inventory.stock set available = available - $2 where sku = $1 and available >= $2', [
            order.sku,
            order.qty,
          ]);
          if (rowCount === 0) throw new BranchFailure(`not enough ${order.sku} in stock`);
          await tx.query(`insert into inventory.reservations values ($1, $2, $3, 'reserved')`, [order.orderId, order.sku, order.qty]);
          return { reserved: order.qty };
        })
        .on('release', async ({ tx, json }) => {
          const { orderId } = json<CheckoutOrder>();
          // What the reservation holds goes back, whatever the payload says.
          const { rows } = await tx.query<{ sku: string; qty: number }>(
            `update inventory.reservations set status = 'released' where order_id = $1 and status = 'reserved' returning sku, qty`,
            [orderId],
          );
          for (const { sku, qty } of rows)
            await tx.query('update inventory.stock set available = available + $2 where sku = $1', [sku, qty]);
        }),
  );
}

/** Payment: charge refuses (BranchFailure: the saga rolls back) an amount above the customer's limit. */
export function startPayment(options: ServiceOptions, limits: Record<string, number>): Promise<Service> {
  return startService(
    options,
    async (pool) => {
      await pool.query('create schema if not exists payment');
      await pool.query('create table if not exists payment.customers (id text primary key, credit_limit int not null)');
      await pool.query(`create table if not exists payment.charges (
         order_id text primary key, customer text not null, amount int not null, status text not null)`);
      for (const [customer, limit] of Object.entries(limits))
        await pool.query(
          'insert into payment.customers values ($1, $2) on conflict (id) do update set credit_limit = excluded.credit_limit',
          [customer, limit],
        );
    },
    (p) =>
      p
        .on('charge', async ({ tx, json }) => {
          const order = json<CheckoutOrder>();
          const { rows } = await tx.query<{ credit_limit: number }>('select credit_limit from payment.customers where id = $1', [
            order.customer,
          ]);
          const limit = rows[0]?.credit_limit;
          if (limit === undefined) throw new BranchFailure(`unknown customer ${order.customer}`);
          // A final "no": not retried, and the compensations of the steps before run.
          if (order.amount > limit) throw new BranchFailure(`charge of ${order.amount} is above ${order.customer}'s limit of ${limit}`);
          await tx.query(`insert into payment.charges values ($1, $2, $3, 'charged')`, [order.orderId, order.customer, order.amount]);
          return { charged: order.amount };
        })
        .on('refund', async ({ tx, json }) => {
          const { orderId } = json<CheckoutOrder>();
          await tx.query(`update payment.charges set status = 'refunded' where order_id = $1 and status = 'charged'`, [orderId]);
        }),
  );
}

/** Shipping: the last step; a saga that got this far has stock and payment. */
export function startShipping(options: ServiceOptions): Promise<Service> {
  return startService(
    options,
    async (pool) => {
      await pool.query('create schema if not exists shipping');
      await pool.query(`create table if not exists shipping.shipments (
         order_id text primary key, customer text not null, address text not null, status text not null)`);
    },
    (p) =>
      p
        .on('create-shipment', async ({ tx, json }) => {
          const order = json<CheckoutOrder>();
          await tx.query(`insert into shipping.shipments values ($1, $2, $3, 'created')`, [order.orderId, order.customer, order.address]);
          return { shipment: order.orderId };
        })
        .on('cancel-shipment', async ({ tx, json }) => {
          const { orderId } = json<CheckoutOrder>();
          await tx.query(`update shipping.shipments set status = 'cancelled' where order_id = $1 and status = 'created'`, [orderId]);
        }),
  );
}
