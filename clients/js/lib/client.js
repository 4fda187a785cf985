/* tickrelay client — the client behind `connect`: subscriptions, the REST
 * snapshot, envelopes through the resume state, the transport in use with
 * `auto`'s fallback, the user's token, and status (part of tickrelay.js;
 * clients/js/README.md). */

import { TokenSource } from './auth.js';
import { BookSet, bookDepth } from './books.js';
import { HttpError, symParam, symbolsOfError } from './http.js';
import { normaliseQuote, toNum } from './prices.js';
import { ResumeState } from './resume.js';
import { backoff, now, sleep } from './time.js';
import { ChartChannels } from './chart.js';
import { AUTO_ORDER, TRANSPORTS, makeTransport } from './transports.js';

// ---------------------------------------------------------------------------
// The client: subscriptions, the resume cursor and the merge rule (kept by
// ResumeState, resume.js), the transport, status.
// ---------------------------------------------------------------------------

class Client {
  constructor(baseUrl, o) {
    const g = globalThis;
    this.base = String(baseUrl || (g.location ? g.location.href : ''));
    // A string, or a function asked again for every connection and request.
    this.tokens = new TokenSource(o.token);
    this.batchMs = Math.max(0, Math.min(1000, Math.round(toNum(o.batchMs) ?? 0)));
    this.pollIntervalMs = Math.max(100, toNum(o.pollIntervalMs) ?? 1000);
    this.pollTimeoutMs = Math.max(1000, toNum(o.pollTimeoutMs) ?? 25000);
    // WebSocket and SSE ask for deltas unless told not to; the transport
    // merges them, so callbacks see whole quotes either way.
    this.deltas = o.deltas !== false;
    this.WebSocket = o.WebSocket || g.WebSocket || null;
    this.fetchFn = o.fetch || (g.fetch ? g.fetch.bind(g) : null);
    this.cb = {
      quote: o.onQuote || (() => {}),
      status: o.onStatus || (() => {}),
      unknown: o.onUnknown || (() => {}),
      denied: o.onDenied || (() => {}),
      notice: o.onNotice || (() => {}),
      traffic: o.onTraffic || (() => {}),
    };
    const wanted = o.transport || 'auto';
    if (wanted !== 'auto' && !TRANSPORTS.includes(wanted)) throw new TypeError('unknown transport: ' + wanted);
    this.auto = wanted === 'auto';
    this.transportName = this.auto ? AUTO_ORDER[0] : wanted;
    this.fallbackAfter = Math.max(1, toNum(o.fallbackAfter) ?? 1);

    this.symbols = [];
    this.unknown = new Set();
    this.denied = new Set();
    this.resume = new ResumeState();
    /** The books of `subscribeBook` (books.js). */
    this.books = new BookSet(this, o.onBookGap);
    this.feed = { status: 'live', session: null, complete: true, lost: 0, incomplete: 0 };
    /** Frames and events this client could not use (see protocolError). */
    this.protocolErrors = 0;
    this.connection = 'connecting';
    this.retryAt = 0;
    this.reason = '';
    this.transport = null;
    this.closed = false;
    this.resyncing = false;
    this.resyncAgain = false;
    this.lastResync = -Infinity;
    this.needResync = false;
    this.fillAt = -Infinity;
    this.changes = { added: new Set(), removed: new Set() };
    this.changeTimer = 0;
    this.bootTimer = 0;
    /** Bars and trades: a connection of their own (chart.js). */
    this.chart = new ChartChannels(this);
    this.add(o.symbols || []);
  }

  /** The resume point `{session, seq}`, or null: what the transports resume from. */
  get cursor() {
    return this.resume.cursor;
  }

  // --- plumbing ---------------------------------------------------------------

  /** The URL of `path`; a WebSocket's (`ws`) carries `token` in its query. */
  url(path, ws, token) {
    const u = new URL(path, this.base);
    if (ws) u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    // Browsers' WebSocket cannot set headers: the token goes in the query.
    if (token && ws) u.searchParams.set('token', token);
    return u.toString();
  }

  /** Request headers: `extra`, and `token` as the bearer. */
  headers(extra, token) {
    const h = { ...(extra || {}) };
    if (token) h.Authorization = 'Bearer ' + token;
    return h;
  }

  fetch(url, init) {
    if (!this.fetchFn) throw new Error('no fetch here');
    return this.fetchFn(url, init);
  }

  /** fetch, counted; returns the body as text. */
  async http(path, { signal, headers } = {}) {
    // A token function is asked for every request: a poll after `exp` goes
    // with a fresh token.
    const token = await this.tokens.get();
    this.traffic(0, 1);
    // no-store: a browser cache must not answer for us, or 304s would be hidden.
    const res = await this.fetch(this.url(path), { signal, headers: this.headers(headers, token), cache: 'no-store' });
    const text = await res.text();
    this.traffic(text.length, 0);
    const feed = res.headers.get('tickrelay-feed');
    if (feed) this.feedFromHeader(feed);
    return { status: res.status, ok: res.ok, headers: res.headers, text };
  }

  /**
   * Snapshot and poll answers carry the feed's status in a header
   * (`status=…; session=…; complete=…; lost=…; incomplete=…`): the `feed`
   * event of the request/response transports. Applied when it changed.
   */
  feedFromHeader(value) {
    const d = {};
    for (const part of String(value).split(';')) {
      const i = part.indexOf('=');
      if (i > 0) d[part.slice(0, i).trim()] = part.slice(i + 1).trim();
    }
    const next = {
      status: d.status,
      complete: d.complete !== 'false',
      lost: toNum(d.lost) ?? 0,
      incomplete: toNum(d.incomplete) ?? 0,
    };
    const f = this.feed;
    if (next.status === f.status && next.complete === f.complete && next.lost === f.lost && next.incomplete === f.incomplete) return;
    // The session is the envelopes' business on these transports.
    this.onFeed(next);
  }

  batchParam() {
    return this.batchMs ? '&batch_ms=' + this.batchMs : '';
  }

  traffic(bytes, requests) {
    try {
      this.cb.traffic(bytes, requests);
    } catch (_) { /* a caller's bug must not break the connection */ }
  }

  notice(text, isError) {
    this.cb.notice(text, !!isError);
  }

  /** Something the relay sent that this client cannot use (a frame that
   *  does not parse, a delta with no copy under it): counted in the status
   *  (`protocolErrors`) and reported as an error notice. What to do about it
   *  is the caller's: skip it, or reconnect. */
  protocolError(text) {
    this.protocolErrors++;
    this.notice(text, true);
    this.status();
  }

  status() {
    const left = this.retryAt ? Math.max(0, this.retryAt - now()) : null;
    this.cb.status({
      connection: this.connection,
      transport: this.transportName,
      feed: { ...this.feed },
      complete: this.feed.complete,
      lost: this.feed.lost,
      incomplete: this.feed.incomplete,
      session: this.cursor ? this.cursor.session : null,
      seq: this.cursor ? this.cursor.seq : null,
      retryInMs: left,
      reason: this.reason,
      protocolErrors: this.protocolErrors,
    });
  }

  // --- subscriptions ------------------------------------------------------------

  /** What we ask the server for: the subscriptions minus symbols it doesn't
   *  know and symbols the user may not see. */
  requestSymbols() {
    return this.symbols.filter((s) => !this.unknown.has(s) && !this.denied.has(s));
  }

  add(list) {
    const added = [];
    for (const s of list) {
      const sym = String(s).trim().toUpperCase();
      if (!sym) continue;
      // Asked again: whatever called it unknown may be over (a relay that
      // just restarted learns its directory from the feed a moment later),
      // and a new token may allow what the old one did not.
      if (this.unknown.delete(sym)) added.push(sym);
      if (this.denied.delete(sym)) added.push(sym);
      if (!this.symbols.includes(sym)) {
        this.symbols.push(sym);
        added.push(sym);
      }
    }
    return [...new Set(added)];
  }

  subscribe(list) {
    const added = this.add(Array.isArray(list) ? list : [list]);
    if (added.length) this.queueChange(added, []);
  }

  unsubscribe(list) {
    const drop = new Set((Array.isArray(list) ? list : [list]).map((s) => String(s).trim().toUpperCase()));
    const removed = this.symbols.filter((s) => drop.has(s));
    if (!removed.length) return;
    const wasRequested = removed.filter((s) => !this.unknown.has(s) && !this.denied.has(s));
    this.symbols = this.symbols.filter((s) => !drop.has(s));
    for (const s of removed) {
      this.unknown.delete(s);
      this.denied.delete(s);
      this.resume.forget(s);
    }
    if (wasRequested.length) this.queueChange([], wasRequested);
  }

  /** Keeps `symbol`'s book at `depth` on the transport in use; `onBook`
   *  gets the book after every frame applied. */
  subscribeBook(symbol, depth, onBook) {
    const sym = String(symbol).trim().toUpperCase();
    const e = this.books.add(sym, bookDepth(depth), onBook);
    if (this.transport) this.transport.booksChanged([sym], []);
    return e;
  }

  unsubscribeBook(symbol) {
    const sym = String(symbol).trim().toUpperCase();
    if (this.books.remove(sym) && this.transport) this.transport.booksChanged([], [sym]);
  }

  /** Batches quick edits so one REST call and one (re)subscribe serve them all. */
  queueChange(added, removed) {
    for (const s of added) {
      if (!this.changes.removed.delete(s)) this.changes.added.add(s);
    }
    for (const s of removed) {
      if (!this.changes.added.delete(s)) this.changes.removed.add(s);
    }
    clearTimeout(this.changeTimer);
    this.changeTimer = setTimeout(() => this.applyChanges(), 60);
  }

  async applyChanges() {
    if (this.closed) return;
    const added = [...this.changes.added].filter((s) => this.symbols.includes(s));
    const removed = [...this.changes.removed];
    this.changes = { added: new Set(), removed: new Set() };
    let since = this.cursor;
    if (added.length) {
      // New symbols get their first prices from REST, then the stream
      // resumes from that snapshot's cursor for them.
      try {
        const env = await this.restSnapshot(added, this.cursor ? 'add' : 'full');
        if (env && env.session) since = { session: String(env.session), seq: toNum(env.seq) ?? 0 };
      } catch (e) {
        this.notice('snapshot of ' + added.join(',') + ': ' + e.message, true);
      }
    }
    if (this.closed || !this.transport) return;
    this.transport.symbolsChanged(added, removed, since);
  }

  /** Adds the subscribed ones of `symbols` to `set`; returns those new to it. */
  mark(set, symbols) {
    const fresh = [];
    for (const s of symbols) {
      const sym = String(s).toUpperCase();
      if (this.symbols.includes(sym) && !set.has(sym)) {
        set.add(sym);
        fresh.push(sym);
      }
    }
    return fresh;
  }

  markUnknown(symbols) {
    const fresh = this.mark(this.unknown, symbols);
    if (fresh.length) this.cb.unknown(fresh);
  }

  /** Symbols the user's token does not allow (`subscribed.denied`, an
   *  `unsubscribed` after a new token, a 403 naming them): reported, and no
   *  longer asked for until subscribed again. */
  markDenied(symbols, reason) {
    const fresh = this.mark(this.denied, symbols);
    if (!fresh.length) return;
    try {
      this.cb.denied(fresh, String(reason || 'not_entitled'));
    } catch (e) {
      if (typeof console !== 'undefined') console.error(e);
    }
  }

  /** A 404 `unknown_symbol` or 403 `not_entitled` naming symbols: report
   *  them and stop asking for them. */
  noteRefused(err) {
    const unknown = symbolsOfError(err, 'unknown_symbol');
    if (unknown.length) this.markUnknown(unknown);
    const denied = symbolsOfError(err, 'not_entitled');
    if (denied.length) this.markDenied(denied, 'not_entitled');
  }

  // --- REST snapshot --------------------------------------------------------------

  async restSnapshot(symbols, kind) {
    if (!symbols.length) return null;
    const epoch = this.resume.epoch;
    const sentAt = now();
    const r = await this.http('v1/snapshot?symbols=' + symParam(symbols));
    if (!r.ok) {
      const err = new HttpError(r.status, r.text);
      this.noteRefused(err);
      throw err;
    }
    const env = JSON.parse(r.text);
    // Symbols added while this was in flight aren't in it: then it is no
    // longer a snapshot of the whole subscription.
    if (kind === 'full' && !this.requestSymbols().every((s) => symbols.includes(s))) kind = 'add';
    this.onEnvelope(env, { kind, epoch, sentAt, snapshot: true, rest: true });
    return env;
  }

  /** Re-reads every subscribed symbol over REST: after a session change, or
   *  when a stream went behind our cursor. At most once a second. */
  async resync() {
    if (this.closed) return;
    if (this.resyncing) {
      this.resyncAgain = true;
      return;
    }
    this.resyncing = true;
    this.needResync = false;
    try {
      const wait = this.lastResync + 1000 - now();
      if (wait > 0) await sleep(wait);
      this.lastResync = now();
      await this.restSnapshot(this.requestSymbols(), 'full');
    } catch (e) {
      // Server unreachable: retry when a transport is up again, rather than
      // hammering it alongside the transport's own backoff.
      this.needResync = true;
    } finally {
      this.resyncing = false;
    }
    if (this.resyncAgain) {
      this.resyncAgain = false;
      if (!this.needResync) this.resync();
    }
  }

  // --- envelopes and quotes ---------------------------------------------------------

  /** Every envelope from every source comes through here.
   *  kind: 'full'   — a REST snapshot of every requested symbol;
   *        'add'    — a REST snapshot of newly added symbols only;
   *        'stream' — a transport's envelope (changes only). */
  onEnvelope(env, meta) {
    if (this.closed || !env || typeof env !== 'object') return;
    const seq = toNum(env.seq);
    const r = this.resume;
    const c = r.cursor;
    const session = env.session != null ? String(env.session) : meta.session ?? (c ? c.session : '');
    const quotes = Array.isArray(env.quotes) ? env.quotes : [];
    const opt = { rawInts: !!meta.rawInts, force: false, snapshot: !!meta.snapshot, rest: !!meta.rest };

    // A REST answer that predates a session switch is stale, not news.
    if (meta.epoch !== undefined && meta.epoch !== r.epoch && c && session !== c.session) return;

    if (r.isNewSession(session)) {
      // First contact, or a new feed session (relay or feed restarted): the
      // old cursor means nothing here. Adopt the new one.
      const hadSession = this.adopt(session, seq ?? 0);
      this.applyQuotes(quotes, session, opt);
      if (hadSession) {
        this.notice('new feed session ' + session);
        // Only a full snapshot covers every symbol; otherwise fetch one.
        if (meta.kind !== 'full') this.resync();
      }
      return;
    }

    if (seq !== null) {
      const moved = r.advance(seq, meta.kind, meta.sentAt, this.feed.complete);
      if (moved === 'reset') {
        // The cursor went back: take this snapshot's quotes as they are.
        opt.force = true;
        if (this.transport) this.transport.cursorReset();
      } else if (moved === 'behind') {
        this.resync();
      }
      this.status();
    }
    this.applyQuotes(quotes, session, opt);
  }

  /** Starts over at a session; returns whether there was a cursor before. */
  adopt(session, seq) {
    const had = this.resume.adopt(session, seq);
    this.status();
    if (had && this.transport) this.transport.cursorReset();
    return had;
  }

  applyQuotes(list, session, opt) {
    let n = 0;
    for (const raw of list) {
      if (!raw || raw.symbol == null) continue;
      const sym = String(raw.symbol).toUpperCase();
      if (!this.symbols.includes(sym)) continue; // unsubscribed meanwhile
      const q = normaliseQuote(raw, opt.rawInts);
      if (!this.resume.pass(sym, session, q.seq, opt.force)) continue;
      q.session = session;
      n++;
      try {
        this.cb.quote(q, { snapshot: opt.snapshot, rest: opt.rest, transport: this.transportName, session });
      } catch (e) {
        // A caller's bug must not break the stream.
        if (typeof console !== 'undefined') console.error(e);
      }
    }
    return n;
  }

  onFeed(d) {
    if (!d || typeof d !== 'object') return;
    const session = d.session;
    if (session != null && this.cursor && String(session) !== this.cursor.session) {
      // The relay moved to a new feed session mid-connection.
      this.adopt(String(session), 0);
      this.notice('new feed session ' + session);
      this.resync();
    }
    if (d.status === 'live' || d.status === 'stale' || d.status === 'recovering') {
      // `complete: false`: the relay lacks state it is rebuilding (a late
      // join, a loss beyond repair). Any symbol may be missing a change until
      // it says complete again; recovered prices arrive as ordinary ticks.
      this.feed = {
        status: d.status,
        session: session != null ? String(session) : this.feed.session,
        complete: d.complete !== false,
        lost: toNum(d.lost) ?? 0,
        incomplete: toNum(d.incomplete) ?? 0,
      };
      this.status();
    }
  }

  // --- transport lifecycle --------------------------------------------------------

  async start() {
    // Initial prices always come from REST; the transport starts after.
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        if (this.requestSymbols().length) await this.restSnapshot(this.requestSymbols(), 'full');
        break;
      } catch (e) {
        if (this.closed) return;
        // Every symbol unknown: nothing to load, stream nothing until asked.
        if (!this.requestSymbols().length) break;
        const delay = backoff(attempt);
        this.connection = attempt >= 3 ? 'disconnected' : 'reconnecting';
        this.retryAt = now() + delay;
        this.reason = e.message || String(e);
        this.status();
        await new Promise((r) => { this.bootTimer = setTimeout(r, delay); });
      }
    }
    if (this.closed) return;
    this.startTransport();
  }

  startTransport() {
    if (this.transport) this.transport.stop();
    // Pollers carry no feed status; don't keep a stale one from a stream.
    if (this.transportName === 'poll' || this.transportName === 'snapshot') this.feed = { ...this.feed, status: 'live' };
    this.transport = makeTransport(this, this.transportName);
    this.transport.start();
  }

  /** `auto`: a transport that never came up moves on to the next. Returns
   *  true when it did. */
  transportFailed(t, reason) {
    if (!this.auto || t !== this.transport || t.everUp) return false;
    const i = AUTO_ORDER.indexOf(t.name);
    if (i < 0 || i + 1 >= AUTO_ORDER.length || t.attempt + 1 < this.fallbackAfter) return false;
    this.transportName = AUTO_ORDER[i + 1];
    this.notice(t.name + ' failed (' + reason + '); trying ' + this.transportName);
    t.running = false;
    this.startTransport();
    return true;
  }

  transportConnecting(t) {
    if (t !== this.transport) return;
    if (this.connection === 'live' || this.connection === 'idle') this.connection = 'reconnecting';
    this.retryAt = 0; // an attempt is in flight
    this.status();
  }

  transportUp(t) {
    if (t !== this.transport) return;
    this.connection = 'live';
    this.retryAt = 0;
    this.reason = '';
    this.status();
    if (this.needResync) return void this.resync();
    // Symbols that never got a price (a REST call failed during an outage)
    // won't be filled by a resume, which sends only changes: ask REST.
    const missing = this.requestSymbols().filter((s) => !this.resume.has(s));
    if (missing.length && now() - this.fillAt > 2000) {
      this.fillAt = now();
      this.restSnapshot(missing, 'add').catch(() => {});
    }
  }

  transportDown(t, delay, reason) {
    if (t !== this.transport) return;
    this.connection = t.attempt > 3 ? 'disconnected' : 'reconnecting';
    this.retryAt = now() + delay;
    this.reason = reason ? t.name + ': ' + reason : '';
    this.status();
  }

  transportIdle(t) {
    if (t !== this.transport) return;
    this.connection = 'idle';
    this.status();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.changeTimer);
    clearTimeout(this.bootTimer);
    this.chart.close();
    if (this.transport) this.transport.stop();
    this.connection = 'closed';
    this.status();
  }
}

/**
 * Connects to a relay at `baseUrl` (e.g. "http://127.0.0.1:8080/").
 *
 * Options: `symbols`, `transport` ("auto" | "ws" | "ws-msgpack" | "sse" |
 * "poll" | "snapshot"; default "auto"), `token` (a string, or a function,
 * sync or async, asked for a fresh token before every connection and
 * request and before a WebSocket's token expires), `batchMs`, `deltas`
 * (default true: WebSocket and SSE get changed fields only, merged here
 * into whole quotes; false asks for whole quotes), `pollIntervalMs` (short
 * poll), `pollTimeoutMs` (long poll), and the
 * callbacks `onQuote(quote, info)`, `onStatus(status)`, `onUnknown(symbols)`,
 * `onDenied(symbols, reason)`, `onNotice(text, isError)`,
 * `onBookGap(symbol, reason)` (a book frame missed or a checksum that
 * disagreed: the book is resynced),
 * `onTraffic(bytes, requests)`; `WebSocket` and `fetch` to inject
 * implementations. Returns a handle: `subscribe(symbols)`,
 * `unsubscribe(symbols)`, `subscribeBook(symbol, depth, onBook)`, `close()`,
 * `transport` (the one in use), `cursor`, and the chart's
 * `subscribeBars(symbol, interval, {history}, onBars)` and
 * `subscribeTrades(symbol, {history}, onTrades)` (chart.js), each returning
 * `{close(), mode, reconnect()}`.
 */
export function connect(baseUrl, options = {}) {
  const client = new Client(baseUrl, options);
  // Callbacks never run inside connect(): the caller has its handle first.
  queueMicrotask(() => {
    if (client.closed) return;
    client.status();
    client.start();
  });
  return {
    subscribe: (symbols) => client.subscribe(symbols),
    /** Keeps `symbol`'s book (depth 1–50, default 10): `onBook(book)` after
     *  every frame, `prev` and checksum checked, resynced on a gap (reported
     *  by `onBookGap`). Returns {copy, gaps, frames, close()}. */
    subscribeBook: (symbol, depth, onBook) => {
      const e = client.subscribeBook(symbol, depth, onBook);
      return {
        get copy() {
          return e.copy;
        },
        get gaps() {
          return e.gaps;
        },
        get frames() {
          return e.frames;
        },
        close: () => client.books.get(e.symbol) === e && client.unsubscribeBook(e.symbol),
      };
    },
    unsubscribe: (symbols) => client.unsubscribe(symbols),
    close: () => client.close(),
    subscribeBars: (symbol, interval, opts, onBars) => client.chart.add('bars', symbol, interval, opts, onBars),
    subscribeTrades: (symbol, opts, onTrades) => client.chart.add('trades', symbol, null, opts, onTrades),
    /** Retry now if waiting in backoff. */
    kick: () => client.transport && client.transport.kick(),
    get transport() {
      return client.transportName;
    },
    get cursor() {
      return client.cursor ? { ...client.cursor } : null;
    },
    get symbols() {
      return client.symbols.slice();
    },
  };
}
