/**
 * Caps of every duration Concord accepts, in seconds. A Node timer holds at most 2^31-1 ms
 * (2,147,483 s, 24.8 days); a longer one fires after 1 ms, so a request_timeout of 2,147,484 s
 * would abort every call at once. Every duration in requests and configuration is capped below it.
 */

/** The longest a Node timer holds, in whole seconds. */
export const timerLimitSeconds = Math.floor((2 ** 31 - 1) / 1000);

/** The longest duration accepted anywhere: 23 days, a margin below timerLimitSeconds. */
export const maxDurationSeconds = 2_000_000;

/** The longest one call (or a broker step's wait for its reply) may take: a day. */
export const maxCallSeconds = 86_400;
