/**
 * The one retry schedule in Concord: exponential, capped, with jitter. DTM doubles forever and
 * without jitter, so a fleet of failed branches retries in lockstep; here the delay never passes
 * the cap and is spread over its upper half.
 */
export interface BackoffPolicy {
  /** First delay, seconds. */
  base: number;
  /** Largest delay, seconds. */
  cap: number;
}

/** The un-jittered delay after `failures` consecutive failures (0 → base). */
export function backoffInterval(policy: BackoffPolicy, failures: number): number {
  return Math.min(policy.cap, policy.base * 2 ** Math.min(failures, 52));
}

/** The next un-jittered interval after one more failure. */
export function doubled(policy: BackoffPolicy, interval: number): number {
  return Math.min(policy.cap, Math.max(policy.base, interval * 2));
}

/** A delay drawn from [interval/2, interval]: spread, but never much shorter than asked. */
export function jitter(interval: number, random: () => number = Math.random): number {
  return interval / 2 + (random() * interval) / 2;
}
