/**
 * VACUUM for the embedded store. PGlite runs Postgres as a single backend with no autovacuum, so
 * without this nothing would reclaim the rows that updates and retention leave dead, refresh the
 * planner's statistics, or freeze old rows before the transaction counter wraps around (a busy
 * coordinator spends a few thousand transaction ids a second). A Postgres server does all of that
 * itself.
 */
import { sql } from 'drizzle-orm';
import type { Database } from './database.js';

/** Every table, the system catalogs included (the database's oldest unfrozen id is the oldest over all of them). */
export async function vacuumEmbedded(database: Database): Promise<void> {
  await database.rows(sql`vacuum (analyze)`);
}
