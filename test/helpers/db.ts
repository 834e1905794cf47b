import { inject } from 'vitest';
import { createDatabase, randomDatabaseName } from '../services/postgres.js';

/** Creates a new, empty database on the test server and returns its URL. Each call gives another one. */
export async function freshDatabase(): Promise<string> {
  return createDatabase(inject('pgUrl'), randomDatabaseName(inject('pgDatabasePrefix')));
}
