/** Read-only views of transactions for the query API. */
import { and, asc, desc, eq, gte, lt, lte, type SQL } from 'drizzle-orm';
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

export interface ListFilter {
  gid?: string | undefined;
  position?: number | undefined;
  limit: number;
  status?: string | undefined;
  transType?: string | undefined;
  createTimeStart?: number | undefined;
  createTimeEnd?: number | undefined;
}

/** Newest first, `limit` rows with id below `position` (DTM's paging). */
export async function listTransactions(database: Database, filter: ListFilter): Promise<TransGlobalRow[]> {
  const where: SQL[] = [];
  if (filter.gid !== undefined) where.push(eq(transGlobal.gid, filter.gid));
  if (filter.position !== undefined && filter.position > 0) where.push(lt(transGlobal.id, filter.position));
  if (filter.status !== undefined) where.push(eq(transGlobal.status, filter.status));
  if (filter.transType !== undefined) where.push(eq(transGlobal.transType, filter.transType));
  if (filter.createTimeStart !== undefined) where.push(gte(transGlobal.createTime, new Date(filter.createTimeStart)));
  if (filter.createTimeEnd !== undefined) where.push(lte(transGlobal.createTime, new Date(filter.createTimeEnd)));
  return database.db
    .select()
    .from(transGlobal)
    .where(and(...where))
    .orderBy(desc(transGlobal.id))
    .limit(filter.limit);
}
