import { inject } from 'vitest';
import { createMysqlDatabase } from '../services/mariadb.js';
import { createDatabase, randomDatabaseName } from '../services/postgres.js';

/** Creates a new, empty database on the test server and returns its URL. Each call gives another one. */
export async function freshDatabase(): Promise<string> {
  return createDatabase(inject('pgUrl'), randomDatabaseName(inject('pgDatabasePrefix')));
}

/** Creates a coordinator store: a clone of a database the migrations already ran on, which saves each coordinator running them. */
export async function freshStore(): Promise<string> {
  return createDatabase(inject('pgUrl'), randomDatabaseName(inject('pgDatabasePrefix')), inject('storeTemplate'));
}

/** Creates a new, empty database on the test MariaDB server and returns its URL. */
export async function freshMysqlDatabase(): Promise<string> {
  return createMysqlDatabase(inject('mysqlUrl'), randomDatabaseName(inject('pgDatabasePrefix')));
}
