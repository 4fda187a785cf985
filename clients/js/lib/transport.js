/* tickrelay client — what every transport shares (part of tickrelay.js;
 * clients/js/README.md). */

import { QUOTE_FIELDS } from './prices.js';
import { backoff, now } from './time.js';

// ---------------------------------------------------------------------------
// Deltas (docs/PROTOCOL.md, "Delivery modes"). A stream asked for them sends
// a symbol's quote whole the first time on a connection (its snapshot, a
// resubscribe, a new session), then `symbol`, `seq` and only the fields that
// differ from the copy the relay last sent this connection, `null` for one
// that became unknown. The transport keeps that copy per symbol, raw as it
// came (MessagePack prices stay integers until normaliseQuote), and merges
// each quote into it field by field: the client is handed whole quotes only.
// ---------------------------------------------------------------------------

/** Whether a wire quote carries every field. */
const isWhole = (raw) => QUOTE_FIELDS.every((k) => k in raw);

/** One connection's copies of its symbols' quotes, as the relay last sent
 *  them. A new connection starts empty, as the relay's side of it does. */
export class QuoteCopies {
  constructor() {
    /** symbol → the raw quote, whole. */
    this.copies = new Map();
  }

  clear() {
    this.copies.clear();
  }

  /**
   * `list` (an envelope's quotes) as whole quotes, each merged into its
   * symbol's copy, which becomes the result. `orphans`: symbols of deltas
   * with no copy to merge into (the relay never sends those): nothing of
   * theirs can be handed on, and the copies of this connection are no longer
   * the relay's.
   */
  merge(list) {
    const quotes = [];
    const orphans = [];
    for (const raw of list) {
      if (!raw || typeof raw !== 'object' || raw.symbol == null) {
        quotes.push(raw); // the client skips what is not a quote
        continue;
      }
      const sym = String(raw.symbol).toUpperCase();
      const old = this.copies.get(sym);
      if (!old && !isWhole(raw)) {
        orphans.push(sym);
        continue;
      }
      // A field in the delta replaces the copy's (null included: unknown
      // now); a whole quote replaces every field.
      const merged = { ...old, ...raw };
      this.copies.set(sym, merged);
      quotes.push(merged);
    }
    return { quotes, orphans };
  }
}

// ---------------------------------------------------------------------------
// Transports. Each owns one connection at a time, reconnects itself with
// backoff, and hands envelopes to the client; the client owns the resume
// cursor. `gen` guards every async callback: after a stop or a reconnect,
// callbacks of the old connection fall silent.
// ---------------------------------------------------------------------------

export class Transport {
  constructor(client, name) {
    this.client = client;
    this.name = name;
    this.gen = 0;
    this.attempt = 0;
    this.timer = 0;
    this.running = false;
    this.upAt = 0;
    this.everUp = false;
    /** The symbols' quotes as this connection last got them (WebSocket, SSE). */
    this.copies = new QuoteCopies();
  }

  start() {
    this.running = true;
    this.open();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.close();
    this.gen++;
  }

  /** (Re)connects now; idles while there is nothing to subscribe to. */
  open() {
    clearTimeout(this.timer);
    this.close();
    const gen = ++this.gen;
    if (!this.running) return;
    if (!this.client.requestSymbols().length && !this.client.books.size) {
      this.client.transportIdle(this);
      return;
    }
    this.client.transportConnecting(this);
    this.connect(gen);
  }

  live(gen) {
    return this.running && gen === this.gen;
  }

  /** The connection works: report it once per connection. */
  up() {
    if (this.upAt) return;
    this.upAt = now();
    this.everUp = true;
    this.client.transportUp(this);
  }

  /** Drops the connection and schedules the next attempt. */
  retry(reason, delayMs) {
    if (!this.running) return;
    // A connection that stayed up a while was healthy: restart the backoff.
    if (this.upAt && now() - this.upAt > 5000) this.attempt = 0;
    this.close();
    this.gen++;
    if (this.client.transportFailed(this, reason)) return; // `auto` moved on
    const delay = delayMs ?? backoff(this.attempt);
    this.attempt++;
    this.client.transportDown(this, delay, reason);
    this.timer = setTimeout(() => this.open(), delay);
  }

  /**
   * The wait before reconnecting after the relay refused or ended the
   * connection with error `code` (HTTP `status`; a WebSocket's 4001 counts
   * as 401, 4009 as 429). `served`: the relay had taken the token and
   * served this connection. A `token_expired` then, with a token function:
   * at once, asking it for a fresh token. A token refused at the door,
   * expired or not (401), or a limit (429): at least 5 s, so a function
   * that keeps giving a bad token does not hammer the relay. Otherwise
   * undefined: the usual backoff.
   */
  refusedDelay(code, status, served) {
    if (code === 'token_expired' && served && this.client.tokens.refreshable) return Math.random() * 250;
    if (status === 401 || status === 429) return Math.max(5000, backoff(this.attempt));
    return undefined;
  }

  /**
   * An envelope of this connection's stream, for the client: its quotes
   * merged into the copies first, so deltas become whole quotes (whole ones
   * pass as they are). A delta with no copy under it is a protocol error:
   * counted and reported, the envelope dropped (so the cursor stays before
   * it), and the stream reconnected: a new connection resumes from the
   * cursor with whole quotes, missing nothing.
   */
  deliver(env, meta) {
    if (env && Array.isArray(env.quotes)) {
      const { quotes, orphans } = this.copies.merge(env.quotes);
      if (orphans.length) {
        this.client.protocolError(this.name + ': a delta of ' + orphans.join(',') + ' with no whole quote before it; reconnecting');
        this.retry('protocol error: delta without a copy');
        return;
      }
      env = { ...env, quotes };
    }
    this.client.onEnvelope(env, meta);
  }

  /** Retry now if waiting in backoff (e.g. the network came back). */
  kick() {
    if (this.running && !this.upAt) this.open();
  }

  /** Subscriptions changed. URL-bound transports reconnect with the new list. */
  symbolsChanged() {
    if (this.running) this.open();
  }

  /** Books were added or removed (`subscribeBook`). URL-bound transports
   *  reconnect with the new list (each book starts from a snapshot). */
  booksChanged() {
    if (this.running) this.open();
  }

  /** Books whose copies failed a check: start them again from a snapshot.
   *  A stream without per-book resubscription reconnects. */
  resyncBooks() {
    if (this.running) this.open();
  }

  connect(_gen) {}

  /** The client moved the resume cursor backwards or to a new session. */
  cursorReset() {}

  /** Ends the connection; its copies go with it. */
  close() {
    this.upAt = 0;
    this.copies.clear();
  }
}
