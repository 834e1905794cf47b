/**
 * XA, the branch side. A branch's action runs its work in a local XA transaction of the service's
 * database (xa-drivers.ts), prepares it, then registers the branch with the coordinator; the
 * coordinator later calls the phase-two URL with op=commit or op=rollback. Xids are DTM's
 * (gid-branch_id), so DTM's Go and Python branches and these helpers agree.
 *
 * The branch registers only after PREPARE, so a registered branch always has a prepared (or
 * finished) transaction, and phase two finding no xid means it finished before. A branch whose
 * registration fails rolls back at once and answers an error, so its client aborts. What a crash
 * leaves prepared, xaRecover resolves by asking the coordinator.
 */
import { z } from 'zod';
import { gidSchema } from '../schemas/dtm.js';
import { ConcordError, isConcordError } from '../schemas/errors.js';
import { CoordinatorClient, type ClientOptions } from './coordinator-client.js';
import { BranchFailure } from './errors.js';
import { parseXid, xaDriver, xidOf, type XaConnection, type XaConnectionOf, type XaDatabase } from './xa-drivers.js';

export type { XaConnection, XaConnectionOf, XaDatabase } from './xa-drivers.js';

/** The query parameters of a coordinator's or client's call of an XA branch. */
const xaCallSchema = z.looseObject({
  gid: gidSchema,
  trans_type: z.literal('xa'),
  branch_id: z.string().min(1).max(40),
  op: z.enum(['action', 'commit', 'rollback']),
  dtm: z.string().optional(),
  phase2_url: z.string().optional(),
});
type XaCall = z.infer<typeof xaCallSchema>;

export interface XaLocalOptions extends ClientOptions {
  /** Where to register the branch (default: the call's `dtm` parameter, which DTM's clients and xa() send). */
  coordinator?: string | CoordinatorClient;
  /** The URL the coordinator calls in phase two (default: the call's `phase2_url`, which is the action URL). */
  phase2Url?: string;
}

function parseCall(query: unknown): XaCall {
  const parsed = xaCallSchema.safeParse(query);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue?.path.join('.') ?? '';
  throw new ConcordError('INVALID_REQUEST', `query parameter ${field}: ${issue?.message ?? 'invalid'}`, { field });
}

/**
 * Serves one call of an XA branch. op=action: runs `work` on a connection inside a new local XA
 * transaction of `db`, prepares it and registers the branch; answers what `work` returned.
 * op=commit or rollback (DTM's branches take phase two on the action's own URL): xaPhase2.
 * `work` throwing rolls the local transaction back, and the error is the branch's answer
 * (BranchFailure: the client aborts the global transaction).
 */
export async function xaLocal<T, D extends XaDatabase>(
  query: unknown,
  db: D,
  work: (tx: XaConnectionOf<D>) => Promise<T>,
  options: XaLocalOptions = {},
): Promise<T | undefined> {
  const call = parseCall(query);
  if (call.op !== 'action') {
    await xaPhase2(call, db);
    return undefined;
  }
  const url = options.phase2Url ?? call.phase2_url;
  const server = options.coordinator ?? call.dtm;
  if (!url) throw new ConcordError('INVALID_REQUEST', 'query parameter phase2_url is missing (or pass phase2Url)', { field: 'phase2_url' });
  if (!server) throw new ConcordError('INVALID_REQUEST', 'query parameter dtm is missing (or pass coordinator)', { field: 'dtm' });
  const client = typeof server === 'string' ? new CoordinatorClient(server, options) : server;
  const driver = xaDriver(db);
  const xid = xidOf(call.gid, call.branch_id);
  const result = await driver.prepare(xid, (tx: XaConnection) => work(tx as XaConnectionOf<D>));
  try {
    await client.registerBranch({ gid: call.gid, trans_type: 'xa', branch_id: call.branch_id, url });
  } catch (err) {
    // Unregistered, nobody would ever finish it: roll back now; the client aborts on the error.
    await driver.finish(xid, 'rollback');
    if (isConcordError(err) && err.status >= 400 && err.status < 500) {
      throw new BranchFailure(`registerBranch refused: ${err.message}`, { cause: err });
    }
    throw err;
  }
  return result;
}

/** Serves the coordinator's phase-two call (op=commit or op=rollback) of an XA branch. */
export async function xaPhase2(query: unknown, db: XaDatabase): Promise<void> {
  const call = parseCall(query);
  if (call.op === 'action') throw new ConcordError('INVALID_REQUEST', 'xaPhase2 serves op commit or rollback', { field: 'op' });
  await xaDriver(db).finish(xidOf(call.gid, call.branch_id), call.op);
}

export interface XaRecoverOptions extends ClientOptions {
  /** The coordinator's API, e.g. http://localhost:36789/api/dtmsvr. */
  coordinator: string | CoordinatorClient;
  /**
   * Which prepared xids are this service's. Postgres lists only this database's; MySQL's XA
   * RECOVER lists the whole server's, so pass a filter when other services share the server.
   */
  filter?: (xid: string) => boolean;
}

export interface XaRecovery {
  committed: string[];
  rolledBack: string[];
  /** Their global transaction is still prepared: the coordinator will call phase two (or time out). */
  waiting: string[];
}

const queryReplySchema = z.looseObject({
  transaction: z.looseObject({ status: z.string() }).nullable(),
  branches: z.array(z.looseObject({ branch_id: z.string(), op: z.string() })).nullable(),
});

/**
 * Resolves the XA transactions a crash left prepared in `db`, which hold their locks until then:
 * each one's global transaction is asked of the coordinator (GET query?gid=). Submitted or
 * succeeded and registered: commit. Failed, aborting, unknown to the coordinator, or ended without
 * the branch registered: roll back (its action never answered success, so no client counts on it). Still prepared: left for the
 * coordinator, which calls phase two or rolls back after timeout_to_fail. Run it when the service
 * starts, and again later for what was waiting; it is safe while the service runs.
 */
export async function xaRecover(db: XaDatabase, options: XaRecoverOptions): Promise<XaRecovery> {
  const driver = xaDriver(db);
  const { coordinator } = options;
  const client = typeof coordinator === 'string' ? new CoordinatorClient(coordinator, options) : coordinator;
  const done: XaRecovery = { committed: [], rolledBack: [], waiting: [] };
  for (const xid of await driver.preparedXids()) {
    const ids = parseXid(xid);
    if (!ids || !(options.filter?.(xid) ?? true)) continue;
    const reply = queryReplySchema.parse(await client.query(ids.gid));
    const status = reply.transaction?.status;
    const registered = (reply.branches ?? []).some((b) => b.branch_id === ids.branchId && b.op === 'commit');
    if (status === 'prepared' && registered) {
      done.waiting.push(xid);
    } else if (status === 'prepared') {
      // Prepared but unregistered: its action's process died before registering, or is about to
      // register right now; wait until the global transaction ends either way.
      done.waiting.push(xid);
    } else {
      const op = (status === 'submitted' || status === 'succeed') && registered ? 'commit' : 'rollback';
      // A transaction still held by a live session (MySQL) cannot be finished yet: later.
      const finished = await driver.finish(xid, op).then(
        () => true,
        () => false,
      );
      if (!finished) done.waiting.push(xid);
      else (op === 'commit' ? done.committed : done.rolledBack).push(xid);
    }
  }
  return done;
}
