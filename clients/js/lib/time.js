/* tickrelay client — the clock, sleeps and reconnect backoff (part of
 * tickrelay.js; clients/js/README.md). */

/** A monotonic clock in ms where there is one. */
export const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Full-jitter exponential backoff: 125 ms … 10 s. */
export function backoff(attempt) {
  const cap = Math.min(10000, 250 * 2 ** Math.min(attempt, 10));
  return cap / 2 + Math.random() * (cap / 2);
}
