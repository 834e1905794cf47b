import { randomBytes } from 'node:crypto';
import type { TestProject } from 'vitest/node';
import { startKafka } from './services/kafka.js';
import { dropMysqlDatabases, startMariaDB } from './services/mariadb.js';
import { createDatabase, dropDatabases, startPostgres } from './services/postgres.js';
import { startRabbitMQ } from './services/rabbitmq.js';
import { startRedis } from './services/redis.js';

/**
 * Starts one PostgreSQL server, one Kafka broker, one RabbitMQ broker, one MariaDB server and one Redis server for the whole run, all at
 * once; test files get databases on the server (test/helpers/db.ts), and topics and queues with
 * random names. A service that does not start fails the run: nothing is skipped.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [postgres, kafka, rabbitmq, mariadb, redis] = await Promise.allSettled([
    timed('PostgreSQL', () => startPostgres({ durable: false })),
    timed('Kafka', startKafka),
    timed('RabbitMQ', startRabbitMQ),
    timed('MariaDB', startMariaDB),
    timed('Redis', startRedis),
  ]);
  if (
    postgres.status === 'rejected' ||
    kafka.status === 'rejected' ||
    rabbitmq.status === 'rejected' ||
    mariadb.status === 'rejected' ||
    redis.status === 'rejected'
  ) {
    const results = { PostgreSQL: postgres, Kafka: kafka, RabbitMQ: rabbitmq, MariaDB: mariadb, Redis: redis };
    // Stop the ones that did start, so that a failed setup leaves nothing running.
    const started = Object.values(results).flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    await Promise.all(started.map((service) => service.stop().catch(() => {})));
    const failures = Object.entries(results).flatMap(([name, result]) =>
      result.status === 'rejected' ? [`${name}: ${(result.reason as Error).message}`] : [],
    );
    throw new Error(`[concord test services] could not start every test service\n\n${failures.join('\n\n')}`);
  }
  // A prefix per run, so that teardown drops only this run's databases on a shared server.
  const prefix = `concord_test_${randomBytes(3).toString('hex')}_`;
  project.provide('pgUrl', postgres.value.url);
  project.provide('pgDatabasePrefix', prefix);
  project.provide('storeTemplate', await migratedStoreTemplate(postgres.value.url, prefix));
  project.provide('kafkaBrokers', kafka.value.brokers);
  project.provide('amqpUrl', rabbitmq.value.url);
  project.provide('mysqlUrl', mariadb.value.url);
  project.provide('redisUrl', redis.value.url);
  return async () => {
    const stopped = await Promise.allSettled([
      (async () => {
        // A throwaway server goes with all its databases; on a server given by CONCORD_TEST_PG_URL, drop ours.
        if (process.env.CONCORD_TEST_PG_URL) await dropDatabases(postgres.value.url, prefix);
        await postgres.value.stop();
      })(),
      kafka.value.stop(),
      rabbitmq.value.stop(),
      (async () => {
        if (process.env.CONCORD_TEST_MYSQL_URL) await dropMysqlDatabases(mariadb.value.url, prefix);
        await mariadb.value.stop();
      })(),
      redis.value.stop(),
    ]);
    const errors = stopped.flatMap((result) => (result.status === 'rejected' ? [result.reason as Error] : []));
    if (errors.length > 0)
      throw new AggregateError(errors, `[concord test services] teardown failed: ${errors.map((e) => e.message).join('; ')}`);
  };
}

/** A database with the coordinator's migrations applied, which test stores are cloned from (test/helpers/db.ts). */
async function migratedStoreTemplate(adminUrl: string, prefix: string): Promise<string> {
  const name = `${prefix}store_template`;
  const [{ openDatabase }, { pino }] = await Promise.all([import('../coordinator/store/database.js'), import('pino')]);
  const database = await openDatabase(await createDatabase(adminUrl, name), {
    poolSize: 1,
    logger: pino({ level: 'silent' }),
    lockTimeout: 0,
  });
  await database.close();
  return name;
}

async function timed<T>(name: string, start: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const service = await start();
  console.log(`[concord test services] ${name} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return service;
}
