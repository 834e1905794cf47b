/** The query API's reads: one transaction with its branches, and DTM's newest-first pages of transactions. */
import type { TransBranchRow, TransGlobalRow } from '../../schemas/db/tables.js';
import { getTransaction, listTransactions, type ListFilter } from '../store/queries.js';
import type { EngineContext } from './context.js';

export interface TransactionPage {
  /** null when a gid was asked for and is unknown (DTM answers so, not with an empty list). */
  transactions: TransGlobalRow[] | null;
  /** The position of the next page, '' on the last one. */
  nextPosition: string;
}

export class TransactionQueries {
  constructor(private readonly ctx: Pick<EngineContext, 'database'>) {}

  /** The transaction (undefined when unknown) and its branches in creation order. */
  transaction(gid: string): Promise<{ trans: TransGlobalRow | undefined; branches: TransBranchRow[] }> {
    return getTransaction(this.ctx.database, gid);
  }

  async page(filter: ListFilter): Promise<TransactionPage> {
    const rows = await listTransactions(this.ctx.database, filter);
    if (filter.gid !== undefined && rows.length === 0) return { transactions: null, nextPosition: '' };
    // A full page may have a successor; the position is the id below which it starts.
    const last = rows.at(-1);
    return { transactions: rows, nextPosition: rows.length === filter.limit && last ? String(last.id) : '' };
  }
}
