/* tickrelay client — the books a connected client keeps (`subscribeBook`),
 * on whichever transport it uses (part of tickrelay.js; clients/js/README.md).
 *
 * Each book is a BookCopy (book.js) kept by the frames of the transport in
 * use: `book` frames on a WebSocket (JSON or MessagePack), `book` events on
 * SSE, `books` of long-poll answers (whole books). Every frame's `prev` and
 * checksum are checked (BookCopy.apply); a frame that fails either is a gap:
 * counted, reported (`onBookGap`, and a notice), the copy dropped and the
 * book resynced by the transport — a resubscription on a WebSocket, a new
 * stream on SSE (each book starts again from a snapshot), a REST
 * `/v1/book` read on long polling. The short-poll transport carries no
 * books: it reads them over REST with the quotes.
 *
 * The depth on the wire: a WebSocket subscribes each book at its own depth;
 * SSE and long polling ask one depth for all (the deepest asked), and a
 * book's view is cut to its own. */

import { BookCopy, BookGap } from './book.js';
import { HttpError } from './http.js';

/** One subscribed book. */
class Entry {
  constructor(symbol, depth, onBook) {
    this.symbol = symbol;
    this.depth = depth;
    this.onBook = onBook;
    this.copy = new BookCopy(symbol, depth);
    /** The feed session the copy was built in (long polling compares it). */
    this.session = null;
    this.gaps = 0;
    this.frames = 0;
    /** After a gap: diff frames still on their way are dropped until the
     *  resync's snapshot arrives (each would be another gap). */
    this.resyncing = false;
  }
}

/** A depth from 1 to 50 (default 10), as the relay takes it. */
export function bookDepth(d) {
  const n = Math.round(Number(d ?? 10));
  if (!Number.isFinite(n) || n < 1 || n > 50) throw new RangeError('depth must be 1 to 50: ' + d);
  return n;
}

export class BookSet {
  constructor(client, onGap) {
    this.client = client;
    this.onGap = onGap || (() => {});
    /** symbol → Entry */
    this.entries = new Map();
  }

  get size() {
    return this.entries.size;
  }

  symbols() {
    return [...this.entries.keys()];
  }

  get(symbol) {
    return this.entries.get(symbol);
  }

  /** The one depth SSE and long polling ask for: the deepest subscribed. */
  wireDepth() {
    let d = 1;
    for (const e of this.entries.values()) d = Math.max(d, e.depth);
    return d;
  }

  /** Adds (or re-adds at another depth) `symbol`'s book; returns its entry. */
  add(symbol, depth, onBook) {
    const e = new Entry(symbol, depth, onBook);
    this.entries.set(symbol, e);
    return e;
  }

  remove(symbol) {
    return this.entries.delete(symbol);
  }

  /** The transport (re)subscribed `symbols` at `depth`: their copies start
   *  again from the snapshot that follows. */
  subscribed(symbols, depth) {
    for (const s of symbols) {
      const e = this.entries.get(s);
      if (!e) continue;
      e.copy = new BookCopy(s, depth);
      e.session = null;
      e.resyncing = false;
    }
  }

  /** Applies a `book` frame of `transport`'s connection. `poll`: a whole
   *  book of a long-poll answer (or a REST read), in feed session
   *  `session`, applied only when not older than the copy. */
  apply(frame, { rawInts = false, transport, poll = false, session = null } = {}) {
    if (!frame || typeof frame !== 'object' || frame.symbol == null) return;
    const e = this.entries.get(String(frame.symbol).toUpperCase());
    if (!e) return; // unsubscribed meanwhile
    if (e.resyncing && !frame.snapshot) return;
    const held = e.copy.seq;
    // A poll may answer a book again though unchanged, and a REST read may
    // land after a newer poll answer: keep the newer within a session.
    if (poll && held !== null && e.session === session && Number(frame.seq) < held) return;
    try {
      e.copy.apply(frame, rawInts);
    } catch (err) {
      if (!(err instanceof BookGap)) throw err;
      this.gap(e, err.message, transport);
      return;
    }
    e.session = session;
    e.resyncing = false;
    e.frames++;
    if (!e.onBook) return;
    const v = e.copy.view();
    const cut = (side) => side.slice(0, e.depth);
    try {
      e.onBook({ ...v, bids: cut(v.bids), asks: cut(v.asks), gaps: e.gaps });
    } catch (x) {
      // A caller's bug must not break the stream.
      if (typeof console !== 'undefined') console.error(x);
    }
  }

  /** A missed frame or a checksum that disagrees: counted, reported, resynced. */
  gap(e, reason, transport) {
    e.gaps++;
    e.resyncing = true;
    this.client.notice('book ' + reason + '; resyncing', true);
    try {
      this.onGap(e.symbol, reason);
    } catch (x) {
      if (typeof console !== 'undefined') console.error(x);
    }
    if (transport) transport.resyncBooks([e.symbol]);
  }

  /** Reads `symbols`' books over REST at `depth` and applies them as whole
   *  books (long polling's and short polling's way to a snapshot). */
  async fetch(symbols, depth, transport) {
    for (const s of symbols) {
      if (!this.entries.has(s)) continue;
      const r = await this.client.http('v1/book/' + encodeURIComponent(s) + '?depth=' + depth);
      if (!r.ok) {
        const err = new HttpError(r.status, r.text);
        this.client.notice('book of ' + s + ': ' + err.message, true);
        continue;
      }
      const c = this.client.cursor;
      this.apply(JSON.parse(r.text), { poll: true, transport, session: c ? c.session : null });
    }
  }
}
