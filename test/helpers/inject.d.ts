// Values the global setup (test/global-setup.ts) provides to every test file through inject().
import 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the test server, on its `postgres` database. */
    pgUrl: string;
    /** Prefix of the databases this run creates, e.g. concord_test_1a2b3c_. */
    pgDatabasePrefix: string;
    /** A database on that server with the coordinator's migrations applied, cloned by freshStore(). */
    storeTemplate: string;
    /** Comma-separated host:port list of the test Kafka broker(s), for kafkajs' `brokers` (split on ","). */
    kafkaBrokers: string;
    /** AMQP URL with credentials of the test RabbitMQ broker, e.g. amqp://guest:guest@127.0.0.1:PORT */
    amqpUrl: string;
    /** mysql:// URL of the test MariaDB (or MySQL) server, of a user that may create databases. */
    mysqlUrl: string;
    /** redis:// URL of the test Redis server; tests keep apart by their keys (gids in them). */
    redisUrl: string;
  }
}
