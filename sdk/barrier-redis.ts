/**
 * The barrier in Redis, as DTM keeps it there: a key per (gid, branch, op, barrier id), named
 * `<gid>-<branch>-<op>-<barrier id>` like DTM's, set with an expiry by one Lua script that also
 * applies the business change (an amount added to a key), so the check, the marks and the change
 * are atomic. Redis has no rollback, so the script checks everything before it writes anything.
 */
import { BranchFailure } from './errors.js';

/** A node-redis (`redis` package, v4 or later) client, cluster or pool: what the barrier calls. */
export interface RedisLike {
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}

/** The business change a Redis barrier applies: add `amount` (negative to take) to the integer at `key`. */
export interface RedisAdjustment {
  key: string;
  amount: number;
  /** Seconds the barrier keys live (default 7 days): longer than any retry of the transaction. */
  expireSeconds?: number;
}

export const defaultRedisBarrierExpiry = 7 * 24 * 3600;

export function isRedisLike(source: object): source is RedisLike {
  return typeof (source as RedisLike).eval === 'function';
}

/**
 * KEYS: the business key, this call's barrier key, the key of the op it compensates (or none).
 * ARGV: amount, origin op ('' when none), expiry seconds, this op.
 * Answers DUPLICATE (a repeated or hanging call), NULL (a compensation with nothing to undo),
 * FAILURE (the key is missing or would go below zero), or the key's new value.
 */
const adjustScript = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 'DUPLICATE' end
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
  return 'NULL'
end
local v = redis.call('GET', KEYS[1])
if v == false or tonumber(v) + tonumber(ARGV[1]) < 0 then return 'FAILURE' end
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
return redis.call('INCRBY', KEYS[1], ARGV[1])
`;

/**
 * The check-back's answer: the msg barrier key's value, or, when it is missing, 'rollback' set in
 * its place, so that a local change still in flight can no longer mark it.
 */
const queryPreparedScript = `
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], 'rollback', 'EX', ARGV[1])
  return 'rollback'
end
return v
`;

export interface RedisBarrierCall {
  gid: string;
  branchId: string;
  op: string;
  barrierId: string;
  /** The op whose key this compensation marks (try for cancel, action for compensate), if any. */
  origin: string | undefined;
}

const barrierKey = (gid: string, branchId: string, op: string, barrierId: string) => `${gid}-${branchId}-${op}-${barrierId}`;

/** Runs the adjustment once; the key's new value, or undefined when the barrier skipped it. */
export async function redisAdjust(redis: RedisLike, call: RedisBarrierCall, change: RedisAdjustment): Promise<number | undefined> {
  if (!Number.isSafeInteger(change.amount)) throw new TypeError(`barrier: Redis amount must be an integer, got ${change.amount}`);
  const { gid, branchId, op, barrierId, origin } = call;
  const expiry = String(change.expireSeconds ?? defaultRedisBarrierExpiry);
  const keys = [change.key, barrierKey(gid, branchId, op, barrierId), origin ? barrierKey(gid, branchId, origin, barrierId) : ''];
  const answer = await redis.eval(adjustScript, { keys, arguments: [String(change.amount), origin ?? '', expiry, op] });
  if (answer === 'DUPLICATE' && op === 'msg') throw new BranchFailure(`barrier: message ${gid} was already decided`);
  if (answer === 'FAILURE') throw new BranchFailure(`barrier: ${change.key} is missing or below ${-change.amount}`);
  if (answer === 'DUPLICATE' || answer === 'NULL') return undefined;
  return Number(answer);
}

/** The msg barrier key's value after the check-back: 'rollback' unless the local change committed first. */
export async function redisQueryPrepared(redis: RedisLike, gid: string, expireSeconds = defaultRedisBarrierExpiry): Promise<string> {
  return String(await redis.eval(queryPreparedScript, { keys: [barrierKey(gid, '00', 'msg', '01')], arguments: [String(expireSeconds)] }));
}
