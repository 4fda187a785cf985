/* tickrelay trading page: text for the screen. Numbers, rates, sizes and
 * durations as the page shows them, and the library's quote turned into a
 * row's view model (prices as integer ticks, times in ms). */

import { parseDecimal, formatTicks } from './tickrelay.js';

export const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
export const formatPrice = formatTicks;

/** Writes text only when it differs (no needless layout work). */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** The short-poll interval the page accepts, in ms: 100 ms to 60 s. */
export function clampInterval(v) {
  const n = Math.round(Number(v));
  return Number.isFinite(n) ? Math.min(60000, Math.max(100, n)) : 1000;
}

export function fmtRate(v) {
  return v >= 100 ? intFmt.format(Math.round(v)) : v.toFixed(1);
}

export function fmtBytes(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(2) + ' MB/s';
  if (v >= 1e3) return (v / 1e3).toFixed(1) + ' kB/s';
  return Math.round(v) + ' B/s';
}

export function fmtMs(v) {
  if (v === null) return '–';
  return (Math.abs(v) >= 100 ? Math.round(v) : v.toFixed(Math.abs(v) >= 10 ? 1 : 2)) + ' ms';
}

/** The library's quote (decimal strings) → the row's view model (ticks, ms). */
export function viewQuote(q) {
  const price = (s) => (s === null || s === undefined ? null : parseDecimal(s));
  return {
    symbol: q.symbol,
    seq: q.seq,
    bid: price(q.bid),
    ask: price(q.ask),
    last: price(q.last),
    prevClose: price(q.prev_close),
    bidSize: q.bid_size,
    askSize: q.ask_size,
    lastSize: q.last_size,
    volume: q.volume,
    tsMs: q.ts === null ? null : q.ts / 1e6,
  };
}
