/* tickrelay client — depth of book: a client's copy of one symbol's book,
 * kept by the rules of docs/PROTOCOL.md ("Depth of book"), and its checksum
 * (part of tickrelay.js; clients/js/README.md).
 *
 * A copy starts from a snapshot frame and applies each later frame of the
 * symbol: `prev` must equal the `seq` it holds (else a frame was missed),
 * a `snapshot: true` frame replaces it, any other replaces each level at
 * its price on its side (size 0 deletes it), keeps the side best first and
 * cut to the depth; then the checksum of the copy must equal the frame's.
 * Either check failing means the copy is wrong: the caller resubscribes
 * (the relay answers a snapshot). Prices are held as ticks (integers in
 * 1/10,000), never floats; a level is handed out as
 * `{price: "189.1200", size, orders}`.
 *
 * `watchBook` keeps one symbol's book live over a WebSocket of its own (a
 * depth ladder is one panel of a screen): it subscribes, applies frames,
 * resubscribes on a gap and reconnects with backoff. */

import { parseDecimal, ticksToDecimal } from './prices.js';
import { backoff } from './time.js';

// CRC-32 (IEEE 802.3, reflected: zlib's crc32), table-driven.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 of an ASCII string. */
export function crc32(text) {
  let c = 0xffffffff;
  for (let i = 0; i < text.length; i++) c = CRC_TABLE[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The checksum of `bids` and `asks` (levels `{ticks, size}`, best first):
 *  the top 10 asks then the top 10 bids, each its price's digits (no point,
 *  no leading zeros) then its size, concatenated. */
export function bookChecksum(bids, asks) {
  let s = '';
  for (const side of [asks, bids]) {
    for (const l of side.slice(0, 10)) s += String(l.ticks) + String(l.size);
  }
  return crc32(s);
}

/** A price on the wire (JSON decimal string, MessagePack integer ticks) → ticks. */
function ticksOf(p, rawInts) {
  if (rawInts) return Number(p);
  return parseDecimal(p);
}

/** Why a frame could not be applied: the caller resubscribes. */
export class BookGap extends Error {}

/** One symbol's book as this client holds it. */
export class BookCopy {
  constructor(symbol, depth) {
    this.symbol = symbol;
    this.depth = depth;
    this.seq = null; // null until a snapshot frame
    this.bids = []; // [{ticks, size, orders}], best (highest) first
    this.asks = []; // best (lowest) first
  }

  /** Applies a `book` frame (`rawInts`: MessagePack's integer prices).
   *  Throws BookGap when a frame was missed or the checksum disagrees
   *  (the copy is then empty: wait for the resubscription's snapshot). */
  apply(frame, rawInts = false) {
    const rows = (list) => (Array.isArray(list) ? list : []).map((l) => ({
      ticks: ticksOf(l[0], rawInts), size: Number(l[1]), orders: Number(l[2]),
    }));
    const seq = Number(frame.seq);
    if (frame.snapshot) {
      this.bids = rows(frame.bids);
      this.asks = rows(frame.asks);
    } else {
      if (this.seq === null || Number(frame.prev) !== this.seq) {
        const held = this.seq;
        this.reset();
        throw new BookGap(`${this.symbol}: frame after ${frame.prev}, copy at ${held}`);
      }
      this.bids = merge(this.bids, rows(frame.bids), (a, b) => b - a, this.depth);
      this.asks = merge(this.asks, rows(frame.asks), (a, b) => a - b, this.depth);
    }
    this.seq = seq;
    const sum = bookChecksum(this.bids, this.asks);
    if (frame.checksum !== undefined && sum !== Number(frame.checksum) >>> 0) {
      this.reset();
      throw new BookGap(`${this.symbol}: checksum ${sum} where the relay has ${frame.checksum}`);
    }
    return this;
  }

  /** Forgets the copy (a resubscription's snapshot starts it again). */
  reset() {
    this.seq = null;
    this.bids = [];
    this.asks = [];
  }

  /** The book as handed to the application: decimal prices. */
  view() {
    const out = (l) => ({ price: ticksToDecimal(l.ticks), size: l.size, orders: l.orders });
    return { symbol: this.symbol, seq: this.seq, bids: this.bids.map(out), asks: this.asks.map(out) };
  }
}

/** `side` with `changes` applied (size 0 deletes), sorted by `order`, cut to `depth`. */
function merge(side, changes, order, depth) {
  const by = new Map(side.map((l) => [l.ticks, l]));
  for (const c of changes) {
    if (c.size === 0) by.delete(c.ticks);
    else by.set(c.ticks, c);
  }
  return [...by.values()].sort((a, b) => order(a.ticks, b.ticks)).slice(0, depth);
}

/**
 * Watches `symbol`'s book over a WebSocket of its own.
 *   opts: depth (1–50, default 10), token (string or function asked before
 *   each connection), WebSocket (Node 20 without --experimental-websocket),
 *   onBook(view) after every frame applied, onStatus(state, detail):
 *   'connecting' | 'live' | 'gap' (a missed frame or checksum: resubscribed)
 *   | 'refused' (an `error` frame, e.g. not_entitled) | 'closed'.
 * Returns {close(), copy, gaps}: `gaps` counts resubscriptions.
 */
export function watchBook(baseUrl, symbol, opts = {}) {
  const depth = opts.depth || 10;
  const WS = opts.WebSocket || globalThis.WebSocket;
  const status = opts.onStatus || (() => {});
  const copy = new BookCopy(symbol, depth);
  const w = { copy, gaps: 0, close };
  let ws = null;
  let closed = false;
  let attempt = 0;
  let timer = 0;
  let resyncing = false; // after a gap: diffs dropped until the snapshot
  const subscribe = () => ws.send(JSON.stringify({ op: 'subscribe', channel: 'book', symbols: [symbol], depth }));

  async function open() {
    if (closed) return;
    status('connecting');
    const token = typeof opts.token === 'function' ? await opts.token() : opts.token;
    if (closed) return;
    const u = new URL('v1/ws', baseUrl);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (token) u.searchParams.set('token', token);
    const sock = (ws = new WS(u.toString()));
    sock.onopen = () => {
      resyncing = false;
      subscribe();
    };
    sock.onmessage = (ev) => {
      if (ws !== sock || typeof ev.data !== 'string') return;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      if (m.type === 'error') {
        status('refused', m);
      } else if (m.type === 'book' && m.symbol === symbol) {
        if (resyncing && !m.snapshot) return;
        try {
          copy.apply(m);
          resyncing = false;
        } catch (e) {
          if (!(e instanceof BookGap)) throw e;
          w.gaps++;
          resyncing = true;
          status('gap', e.message);
          subscribe(); // the relay starts again from a snapshot
          return;
        }
        attempt = 0;
        status('live');
        if (opts.onBook) opts.onBook(copy.view());
      }
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      copy.reset();
      if (closed) return;
      status('connecting');
      timer = setTimeout(open, backoff(attempt++));
    };
  }

  function close() {
    closed = true;
    clearTimeout(timer);
    if (ws) ws.close();
    status('closed');
  }

  open();
  return w;
}
