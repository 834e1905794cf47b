/** Read-only views of transactions for the query API. */
import { and, asc, count, desc, eq, exists, gte, like, lt, lte, sql, type SQL } from 'drizzle-orm';
import { globalStatuses, type GlobalStatus } from '../../schemas/dtm.js';
import { transBranchOp, transGlobal, type TransBranchRow, type TransGlobalRow } from '../../schemas/db/tables.js';
import type { Database } from './database.js';

export async function getTransaction(
  database: Database,
  gid: string,
): Promise<{ trans: TransGlobalRow | undefined; branches: TransBranchRow[] }> {
  const [trans] = await database.db.select().from(transGlobal).where(eq(transGlobal.gid, gid));
  if (!trans) return { trans: undefined, branches: [] };
  const branches = await database.db.select().from(transBranchOp).where(eq(transBranchOp.gid, gid)).orderBy(asc(transBranchOp.id));
  return { trans, branches };
}

/** A LIKE pattern for values starting with `prefix`, its wildcards matched literally (backslash is LIKE's default escape). */
const startsWith = (prefix: string) => `${prefix.replace(/[\\%_]/g, '\\$&')}%`;

export interface ListFilter {
  gid?: string | undefined;
  gidPrefix?: string | undefined;
  destination?: string | undefined;
  position?: number | undefined;
  limit: number;
  status?: string | undefined;
  transType?: string | undefined;
  createTimeStart?: number | undefined;
  createTimeEnd?: number | undefined;
}

/**
 * Newest first, `limit` rows with id below `position` (DTM's paging).
 *
 * A status or type filter is written as `x >= v and x <= v` and the rows ordered by (x, id), not by
 * id alone: the same rows, since x has one value. Given `x = v` and `order by id`, Postgres walks
 * the primary key backwards and filters, betting that matching rows are spread evenly; after a
 * burst of one type they are not (1,000,000 rows, the newest 300,000 without a saga: 90 ms instead
 * of 1 ms). The range keeps x in the sort order, so the (status, id) and (trans_type, id) indexes
 * deliver the rows already in order.
 */
export async function listTransactions(database: Database, filter: ListFilter): Promise<TransGlobalRow[]> {
  const where: SQL[] = [];
  const only = (column: typeof transGlobal.status | typeof transGlobal.transType, value: string) =>
    where.push(gte(column, value), lte(column, value));
  if (filter.gid !== undefined) where.push(eq(transGlobal.gid, filter.gid));
  if (filter.gidPrefix !== undefined) where.push(like(transGlobal.gid, startsWith(filter.gidPrefix)));
  // Checked per candidate row through the branches' (gid, ...) index: no index on url, so a destination no
  // recent transaction calls reads back through the table.
  if (filter.destination !== undefined)
    where.push(
      exists(
        database.db
          .select({ one: sql`1` })
          .from(transBranchOp)
          .where(and(eq(transBranchOp.gid, transGlobal.gid), like(transBranchOp.url, startsWith(filter.destination)))),
      ),
    );
  if (filter.position !== undefined && filter.position > 0) where.push(lt(transGlobal.id, filter.position));
  if (filter.transType !== undefined) only(transGlobal.transType, filter.transType);
  if (filter.status !== undefined) only(transGlobal.status, filter.status);
  // With both, the type index gives the order and the status filters (or the planner sorts the few
  // rows of a rare status it found through the status index).
  const order =
    filter.transType !== undefined ? [desc(transGlobal.transType)] : filter.status !== undefined ? [desc(transGlobal.status)] : [];
  if (filter.createTimeStart !== undefined) where.push(gte(transGlobal.createTime, new Date(filter.createTimeStart)));
  if (filter.createTimeEnd !== undefined) where.push(lte(transGlobal.createTime, new Date(filter.createTimeEnd)));
  return database.db
    .select()
    .from(transGlobal)
    .where(and(...where))
    .orderBy(...order, desc(transGlobal.id))
    .limit(filter.limit);
}

/**
 * Transactions per status, each count stopping at `cap`: every count is an index-only walk of the
 * (status, id) index bounded by the cap, so it stays fast on a store with millions of succeeded rows.
 */
export async function countByStatus(database: Database, cap: number): Promise<Record<GlobalStatus, number>> {
  const counts = await Promise.all(
    globalStatuses.map(async (status) => {
      const capped = database.db
        .select({ one: sql`1` })
        .from(transGlobal)
        .where(eq(transGlobal.status, status))
        .limit(cap)
        .as('capped');
      const [row] = await database.db.select({ n: count() }).from(capped);
      return [status, row?.n ?? 0] as const;
    }),
  );
  return Object.fromEntries(counts) as Record<GlobalStatus, number>;
}
