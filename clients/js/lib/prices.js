/* tickrelay client — prices: exact decimals, and the quote as this library
 * hands it out (part of tickrelay.js; clients/js/README.md). */

// ---------------------------------------------------------------------------
// Prices: exact decimals. On the wire, JSON carries decimal strings and
// MessagePack fixed-point integers in 1/10,000 (docs/FEED.md). Internally a price
// may be held as "ticks": integer ten-thousandths, exact as a Number up to
// 2^53 ($900 billion).
// ---------------------------------------------------------------------------

/** Ticks per unit of price. */
export const PRICE_SCALE = 10000;

/** "189.12" → 1891200 ticks, by string surgery so no float ever rounds a price. */
export function parseDecimal(s) {
  const m = /^\s*([+-]?)(\d*)(?:\.(\d*))?\s*$/.exec(String(s));
  if (!m || (m[2] === '' && !m[3])) return null;
  const whole = m[2] === '' ? 0 : parseInt(m[2], 10);
  const frac = parseInt(((m[3] || '') + '0000').slice(0, 4), 10);
  const v = whole * PRICE_SCALE + frac;
  return m[1] === '-' ? -v : v;
}

/** 1891200 ticks → "189.1200": the wire's decimal text, four decimals. */
export function ticksToDecimal(t) {
  if (t === null || t === undefined) return null;
  const n = typeof t === 'bigint' ? t : BigInt(Math.trunc(Number(t)));
  const a = n < 0n ? -n : n;
  const scale = BigInt(PRICE_SCALE);
  return (n < 0n ? '-' : '') + (a / scale).toString() + '.' + (a % scale).toString().padStart(4, '0');
}

/** Ticks → display text: two decimals when the last two are zero ("189.12"), else four. */
export function formatTicks(p) {
  if (p === null || p === undefined) return '';
  const a = Math.abs(p);
  const frac = a % PRICE_SCALE;
  const whole = (a - frac) / PRICE_SCALE; // exact: a - frac is a multiple of the scale
  let f = String(frac).padStart(4, '0');
  if (frac % 100 === 0) f = f.slice(0, 2);
  return (p < 0 ? '-' : '') + whole + '.' + f;
}

/** A decimal price string → display text ("189.1200" → "189.12"); '' for null. */
export function formatPrice(s) {
  const t = s === null || s === undefined ? null : parseDecimal(s);
  return t === null ? '' : formatTicks(t);
}

/** Compares two decimal price strings exactly: -1, 0 or 1. Null sorts first. */
export function comparePrices(a, b) {
  const x = a === null || a === undefined ? null : parseDecimal(a);
  const y = b === null || b === undefined ? null : parseDecimal(b);
  if (x === y) return 0;
  if (x === null) return -1;
  if (y === null) return 1;
  return x < y ? -1 : 1;
}

/** a − b of two decimal price strings, as a decimal string (null if either is). */
export function priceDifference(a, b) {
  const x = a === null || a === undefined ? null : parseDecimal(a);
  const y = b === null || b === undefined ? null : parseDecimal(b);
  return x === null || y === null ? null : ticksToDecimal(x - y);
}

/** (a − b) / b in percent, rounded half away from zero to `digits`, as text; integer arithmetic. */
export function percentChange(a, b, digits = 2) {
  const x = a === null || a === undefined ? null : parseDecimal(a);
  const y = b === null || b === undefined ? null : parseDecimal(b);
  if (x === null || y === null || y === 0) return null;
  const unit = 10n ** BigInt(digits);
  const num = BigInt(x - y) * 100n * unit;
  const den = BigInt(y < 0 ? -y : y);
  const neg = num < 0n;
  const q = ((neg ? -num : num) * 2n + den) / (2n * den);
  const whole = q / unit;
  const frac = digits ? '.' + (q % unit).toString().padStart(digits, '0') : '';
  return (neg && q !== 0n ? '-' : '') + whole.toString() + frac;
}

/** Integers that may arrive as Number, BigInt or numeric string. */
export function toNum(v) {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(+v)) return +v;
  return null;
}

/** A wire price → its exact decimal string (JSON strings pass; MessagePack integers are ticks). */
function wirePrice(v, rawInts) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return parseDecimal(v) === null ? null : v;
  if (typeof v === 'bigint') return ticksToDecimal(v);
  if (typeof v === 'number' && Number.isFinite(v)) {
    // MessagePack carries the raw integer; a JSON number is off-spec and is
    // read as the decimal it prints as.
    return rawInts ? ticksToDecimal(Math.trunc(v)) : ticksToDecimal(parseDecimal(String(v)));
  }
  return null;
}

/** The fields of a whole quote on the wire (docs/PROTOCOL.md, "The quote"):
 *  a delta carries `symbol`, `seq` and some of the others. */
export const QUOTE_FIELDS = Object.freeze([
  'symbol', 'seq', 'bid', 'ask', 'bid_size', 'ask_size', 'last', 'last_size', 'volume', 'prev_close', 'ts',
]);

/** A wire quote (docs/PROTOCOL.md, "The quote", either encoding) → the quote this library hands out:
 *  the JSON shape, prices as exact decimal strings. `ts` (ns since the epoch)
 *  exceeds 2^53, so as a Number it keeps about 0.25 µs. */
export function normaliseQuote(r, rawInts = false) {
  return {
    symbol: String(r.symbol).toUpperCase(),
    seq: toNum(r.seq) ?? 0,
    bid: wirePrice(r.bid, rawInts),
    ask: wirePrice(r.ask, rawInts),
    bid_size: toNum(r.bid_size),
    ask_size: toNum(r.ask_size),
    last: wirePrice(r.last, rawInts),
    last_size: toNum(r.last_size),
    volume: toNum(r.volume),
    prev_close: wirePrice(r.prev_close, rawInts),
    ts: toNum(r.ts),
  };
}
