/* tickrelay client — the chart and the tape: a symbol's bars of one
 * interval and its trades, history first and then live, with resume (part
 * of tickrelay.js; clients/js/README.md, docs/PROTOCOL.md "The chart and the
 * tape").
 *
 * A connected client's `subscribeBars` / `subscribeTrades` land here, fed
 * by the relay's streams (docs/PROTOCOL.md, "Trades and bars streamed") as
 * the client's transport allows (`mode` of the handle):
 * - 'ws' (a client on `ws`, `ws-msgpack` or `auto`): the `trades` and `bars`
 *   channels on a WebSocket of their own, shared by every chart
 *   subscription of the client, beside the quotes' transport;
 * - 'sse' (a client on `sse`): one `/v1/stream?trades=…` or `?bars=…`
 *   stream per subscription, its `trades` / `bars` events;
 * - 'poll' (a client on `poll` or `snapshot`, or a relay that cannot stream
 *   the channels: an `error` frame naming the channel, a stream of quotes
 *   instead, or a stream that never comes up): REST, `/v1/bars` and
 *   `/v1/trades` with `If-None-Match`.
 * Each subscription asks for `history`, so its first frame carries the
 * recent bars or trades and the position the stream continues from.
 *
 * Trades: handed on once each, in feed order. After a reconnect (a network
 * failure, or a 4008 close of a client that fell behind) the subscription
 * asks again with `since` (`SESSION:SEQ` of the last trade, the session its
 * frames carry): the relay's first frame
 * carries every kept trade after it (`gap` when it no longer keeps them
 * all). A poll asks for the newest page: when it does not reach back to the
 * last trade held, the trades between are read from REST (`before_seq`
 * pages), so nothing is missed and nothing is repeated. A live frame whose
 * position went back is a new feed session: the trades start over (`reset`).
 * Bars: a history answer replaces the whole set (`reset`), later frames
 * hand on the bars that changed; a reconnect asks for history again, which
 * refills the bar in progress. Prices stay decimal strings as the relay
 * sends them. */

import { HttpError } from './http.js';
import { toNum } from './prices.js';
import { parseJson, parseSse } from './sse.js';
import { backoff } from './time.js';

/** Trades a poll reads (and a page of the fill): at most the relay's
 *  smallest sensible `trade_history`. */
const TRADE_PAGE = 100;
/** The bar intervals a relay serves. */
export const INTERVALS = ['1s', '1m', '5m', '15m', '1h'];
/** Bars a poll reads: the one in progress and the ones before it. */
const BAR_PAGE = 3;

const tradeOf = (t) => ({ seq: toNum(t.seq), ts: toNum(t.ts), price: String(t.price), size: toNum(t.size) });
const barOf = (b) => ({
  t: toNum(b.t), o: String(b.o), h: String(b.h), l: String(b.l), c: String(b.c),
  v: toNum(b.v), n: toNum(b.n), closed: !!b.closed,
});
const sameBar = (a, b) => a.o === b.o && a.h === b.h && a.l === b.l && a.c === b.c && a.v === b.v && a.n === b.n && a.closed === b.closed;

/** One subscription: a symbol's trades, or its bars of one interval. */
class ChartSub {
  constructor(owner, kind, symbol, interval, history, cb) {
    Object.assign(this, { owner, kind, symbol, interval, history, cb });
    this.key = kind + ':' + symbol + (interval ? ':' + interval : '');
    this.session = null;
    this.last = null; // trades: the seq of the last one handed on
    this.bars = new Map(); // bars: t → bar, oldest first
    this.etag = '';
    this.awaiting = true; // the next poll is the history answer
    this.pos = null; // the stream's position: the last frame's seq
    this.chain = Promise.resolve(); // frames are taken one after the other
    this.timer = 0;
    this.closed = false;
    // SSE: this subscription's own stream.
    this.gen = 0;
    this.ctl = null;
    this.attempt = 0;
    this.failures = 0;
    this.everUp = false;
  }

  /** Runs `fn` after what is queued: a fill from REST holds later frames back. */
  queue(fn) {
    this.chain = this.chain.then(() => (this.closed ? undefined : fn())).catch((e) => {
      this.owner.client.notice(this.key + ': ' + (e.message || e), true);
    });
    return this.chain;
  }

  /** The relay will not serve this subscription (403 not_entitled, 404
   *  unknown_symbol, a WebSocket `subscribed.denied`): told to `onError`. */
  refused(code, message) {
    this.owner.client.notice(this.key + ': ' + message, true);
    if (this.onError) {
      try {
        this.onError({ code, message });
      } catch (e) {
        if (typeof console !== 'undefined') console.error(e);
      }
    }
  }

  emit(list, info) {
    try {
      this.cb(list, { symbol: this.symbol, ...(this.interval ? { interval: this.interval } : {}), ...info });
    } catch (e) {
      if (typeof console !== 'undefined') console.error(e); // a caller's bug must not stop the feed
    }
  }

  /** The session an answer or frame belongs to: a new one starts over. */
  newSession(session) {
    if (session == null) return false;
    const moved = this.session !== null && String(session) !== this.session;
    this.session = String(session);
    return moved;
  }

  /**
   * Trades of a frame or an answer, oldest first. `history`: an answer to a
   * (re)subscription or a poll, `asked` the most it could hold: when it
   * holds that many and none of them is already had, trades between the
   * last held and its oldest may be missing, and are read from REST —
   * unless it answered a `since` (`resumed`): then the relay sent every
   * trade after it it keeps, and says `gap` when that is not all. `moved`:
   * a live frame whose position went back (a new feed session).
   */
  async takeTrades(list, { history, session, asked, resumed, gap: told, moved }) {
    let trades = (Array.isArray(list) ? list : []).map(tradeOf).filter((t) => t.seq !== null);
    trades.sort((a, b) => a.seq - b.seq);
    let reset = this.newSession(session) || !!moved;
    // A history whose newest trade is older than what we hold: a new feed session.
    if (history && this.last !== null && trades.length && trades[trades.length - 1].seq < this.last) reset = true;
    if (reset) this.last = null;
    const last = this.last;
    let fresh = last === null ? trades : trades.filter((t) => t.seq > last);
    let gap = !!told && last !== null;
    if (history && !resumed && last !== null && fresh.length && fresh.length === trades.length && trades.length >= asked) {
      const filled = await this.fillTrades(fresh[0].seq, last);
      gap = filled.gap;
      fresh = filled.trades.concat(fresh);
    }
    if (!fresh.length && !reset && !(history && last === null)) return;
    if (fresh.length) this.last = fresh[fresh.length - 1].seq;
    this.emit(fresh, { history: !!history && last === null, reset, gap });
  }

  /** The trades after `after` and before `before`, paged back from REST.
   *  `gap`: the relay no longer keeps all of them. */
  async fillTrades(before, after) {
    let out = [];
    for (;;) {
      const body = await this.owner.get(`v1/trades/${encodeURIComponent(this.symbol)}?limit=${TRADE_PAGE}&before_seq=${before}`);
      const page = (body && Array.isArray(body.trades) ? body.trades : []).map(tradeOf);
      const newer = page.filter((t) => t.seq > after);
      out = newer.concat(out);
      if (newer.length < page.length) return { trades: out, gap: false };
      if (page.length < TRADE_PAGE || !page.length) return { trades: out, gap: true };
      before = page[0].seq;
    }
  }

  /** Bars of a frame or an answer: a history answer replaces the set. */
  takeBars(list, { history, session }) {
    const reset = this.newSession(session) || !!history;
    if (reset) this.bars = new Map();
    const changed = [];
    const bars = (Array.isArray(list) ? list : []).map(barOf).filter((b) => b.t !== null).sort((a, b) => a.t - b.t);
    for (const b of bars) {
      const held = this.bars.get(b.t);
      if (held && sameBar(held, b)) continue;
      if (!held && this.bars.size && b.t < this.newestBar().t) continue; // older than the chart: not news
      this.bars.set(b.t, b);
      changed.push(b);
    }
    const keep = Math.max(this.history, BAR_PAGE) + 16;
    for (const t of this.bars.keys()) {
      if (this.bars.size <= keep) break;
      this.bars.delete(t);
    }
    if (reset) this.emit([...this.bars.values()], { history: true, reset: true });
    else if (changed.length) this.emit(changed, { history: false, reset: false });
  }

  newestBar() {
    let b = null;
    for (const v of this.bars.values()) b = v;
    return b;
  }

  path(limit) {
    const s = encodeURIComponent(this.symbol);
    return this.kind === 'bars' ? `v1/bars/${s}?interval=${this.interval}&limit=${limit}` : `v1/trades/${s}?limit=${limit}`;
  }

  /** Polls REST: history first, then the newest page whenever its ETag moves. */
  async poll() {
    if (this.closed) return;
    const first = this.awaiting;
    const limit = first ? this.history : this.kind === 'bars' ? BAR_PAGE : TRADE_PAGE;
    try {
      const r = await this.owner.client.http(this.path(limit), { headers: !first && this.etag ? { 'If-None-Match': this.etag } : {} });
      if (this.closed) return;
      if (r.status !== 304) {
        if (!r.ok) throw new HttpError(r.status, r.text);
        this.etag = r.headers.get('etag') || '';
        const body = JSON.parse(r.text);
        if (this.kind === 'trades') {
          await this.queue(() => this.takeTrades(body.trades, { history: true, session: body.session, asked: limit }));
        } else {
          const bars = Array.isArray(body.bars) ? body.bars : [];
          const newest = this.newestBar();
          // Bars went by unseen (the page is full and all newer than the chart): read the history again.
          if (!first && newest && bars.length >= limit && toNum(bars[0].t) > newest.t) this.awaiting = true;
          else this.takeBars(bars, { history: first, session: body.session });
          if (this.awaiting && !first) return void (this.timer = setTimeout(() => this.poll(), 0));
        }
        this.awaiting = false;
      }
      this.owner.failures = 0;
    } catch (e) {
      // Not for this user, or no such symbol: polling again would not change that.
      if (e instanceof HttpError && (e.status === 403 || e.status === 404)) return void this.refused(e.code, e.message);
      this.owner.client.notice(this.key + ': ' + (e.message || e), true);
    }
    const every = this.kind === 'bars' && this.interval !== '1s' ? 1000 : 500;
    this.timer = setTimeout(() => this.poll(), every);
  }

  /** Where a trades stream resumes: `SESSION:SEQ` of the last trade (its
   *  seq alone before a frame named the session), or null (none held yet,
   *  or the relay refused a `since`: history alone). */
  since() {
    if (this.kind !== 'trades' || this.last === null || this.owner.noSince) return null;
    return this.session !== null ? `${this.session}:${this.last}` : this.last;
  }

  /** The WebSocket op that (re)subscribes: history always, `since` for trades held. */
  subscribeOp() {
    const op = { op: 'subscribe', channel: this.kind, symbols: [this.symbol], history: this.history };
    if (this.kind === 'bars') op.interval = this.interval;
    if (this.since() !== null) op.since = this.since();
    return op;
  }

  /** A frame of this subscription's stream (WebSocket or SSE), in order. */
  take(f) {
    const seq = toNum(f.seq);
    const history = f.snapshot === true;
    // The position went back on a live frame: the relay started the
    // stream again in a new feed session.
    const moved = !history && seq !== null && this.pos !== null && seq < this.pos;
    if (seq !== null) this.pos = seq;
    this.owner.attempt = 0;
    this.attempt = 0;
    this.everUp = true;
    if (this.kind === 'trades') {
      const resumed = history && this.since() !== null;
      const session = f.session;
      this.queue(() => this.takeTrades(f.trades, { history, session, asked: this.history, resumed, gap: !!f.gap, moved }));
    } else this.queue(() => this.takeBars(f.bars, { history: history || moved }));
  }

  /** The SSE path of this subscription's stream: history, and `since` for trades held. */
  streamPath() {
    const s = encodeURIComponent(this.symbol);
    let path = this.kind === 'bars' ? `v1/stream?bars=${s}&interval=${this.interval}` : `v1/stream?trades=${s}`;
    path += '&history=' + this.history;
    if (this.since() !== null) path += '&since=' + encodeURIComponent(this.since());
    return path;
  }

  /** SSE: (re)opens this subscription's stream and reads its events. */
  async stream() {
    const o = this.owner;
    const c = o.client;
    this.halt();
    const gen = this.gen;
    if (this.closed || o.mode !== 'sse') return;
    const ctl = new AbortController();
    this.ctl = ctl;
    let ended = null; // the `error` event that ends the stream
    let shutdownMs = null;
    try {
      const token = await c.tokens.get();
      if (gen !== this.gen) return;
      c.traffic(0, 1);
      const res = await c.fetch(c.url(this.streamPath()), { signal: ctl.signal, headers: c.headers({ Accept: 'text/event-stream' }, token), cache: 'no-store' });
      if (gen !== this.gen) return;
      if (!res.ok) {
        const text = await res.text();
        c.traffic(text.length, 0);
        throw new HttpError(res.status, text);
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (gen !== this.gen) return;
        if (done) break;
        c.traffic(value.byteLength, 0);
        buf += dec.decode(value, { stream: true });
        let m;
        while ((m = /\r?\n\r?\n/.exec(buf))) {
          if (gen !== this.gen) return;
          const ev = parseSse(buf.slice(0, m.index));
          buf = buf.slice(m.index + m[0].length);
          if (!ev) continue;
          const d = parseJson(ev.data);
          if (!d || typeof d !== 'object') {
            c.protocolError('chart: bad ' + ev.event + ' event');
            continue;
          }
          if (ev.event === this.kind) {
            this.failures = 0;
            this.take(d);
          } else if (ev.event === 'tick' || (ev.event === 'snapshot' && Array.isArray(d.quotes) && d.quotes.length)) {
            // Quotes instead (the stream opens with an empty snapshot of
            // them): a relay whose stream knows no trades or bars.
            return void o.switchTo('poll', 'the relay streams no bars or trades; polling REST');
          } else if (ev.event === 'shutdown') shutdownMs = (toNum(d.reconnect_ms) ?? 1000) + Math.random() * 250;
          else if (ev.event === 'error') ended = d;
        }
      }
    } catch (e) {
      if (gen !== this.gen) return;
      if (e instanceof HttpError && e.status !== 401 && e.status !== 429 && e.status < 500) {
        // Not for this user, no such symbol, a bad interval or history: asking again would not change that.
        return void this.refused(e.code, e.message);
      }
      return void this.retry(gen, String(e.message || e));
    }
    if (gen !== this.gen) return;
    if (ended) {
      const code = String(ended.code || '');
      if (code === 'slow_consumer') c.notice(`${this.key}: ${code} (${ended.close_code ?? 4008}); resuming with since`);
      else if (code !== 'token_expired') c.notice(`${this.key}: ${ended.message || code}`, true);
      // Behind, or a fresh token: at once; an operator's disconnect: the usual backoff.
      return void this.retry(gen, 'stream ended: ' + code, code === 'disconnected' ? undefined : 0);
    }
    this.retry(gen, 'stream closed', shutdownMs ?? undefined);
  }

  /** SSE: the stream failed or ended; opens it again after `delay`. A
   *  stream that never came up three times: REST instead. */
  retry(gen, reason, delay) {
    if (gen !== this.gen || this.closed) return;
    this.halt();
    if (this.owner.mode !== 'sse') return;
    if (!this.everUp && ++this.failures >= 3) return void this.owner.switchTo('poll', 'chart: ' + reason + '; polling REST');
    this.timer = setTimeout(() => this.stream(), delay ?? backoff(this.attempt++));
  }

  /** Ends what feeds it now (an SSE stream, a poll or retry timer). */
  halt() {
    this.gen++;
    clearTimeout(this.timer);
    if (this.ctl) this.ctl.abort();
    this.ctl = null;
  }

  stop() {
    this.closed = true;
    this.halt();
  }
}

/** A client's chart subscriptions and the connection they share. */
export class ChartChannels {
  constructor(client) {
    this.client = client;
    this.subs = new Map(); // key → ChartSub
    this.mode = null; // 'ws' | 'sse' | 'poll', chosen at the first subscription
    this.ws = null;
    this.gen = 0;
    this.attempt = 0;
    this.timer = 0;
    this.failures = 0;
    this.everUp = false; // the chart's WebSocket worked once
    this.noSince = false; // the relay refused a trades `since`: resume by history alone
    this.reconnectMs = null;
  }

  /** How the client's transport lets the chart be fed: its own kind of
   *  stream, or REST for the pollers (and where streams are impossible). */
  pick() {
    const t = this.client.transportName;
    const sse = !!this.client.fetchFn && typeof TextDecoder !== 'undefined';
    if (t === 'poll' || t === 'snapshot') return 'poll';
    if (t === 'sse') return sse ? 'sse' : 'poll';
    return this.client.WebSocket ? 'ws' : sse ? 'sse' : 'poll';
  }

  /** JSON of a REST GET, or an HttpError. */
  async get(path) {
    const r = await this.client.http(path);
    if (!r.ok) throw new HttpError(r.status, r.text);
    return JSON.parse(r.text);
  }

  add(kind, symbol, interval, opts, cb) {
    if (typeof opts === 'function') [opts, cb] = [{}, opts];
    if (kind === 'bars' && !INTERVALS.includes(interval)) throw new TypeError('interval is one of ' + INTERVALS.join(', ') + ': ' + interval);
    if (typeof cb !== 'function') throw new TypeError('a callback is needed');
    const sym = String(symbol).trim().toUpperCase();
    const max = kind === 'bars' ? (interval === '1s' ? 900 : 1440) : 1000;
    const history = Math.max(1, Math.min(max, Math.round(toNum(opts && opts.history) ?? (kind === 'bars' ? 300 : 50))));
    const sub = new ChartSub(this, kind, sym, interval, history, cb);
    sub.onError = opts && typeof opts.onError === 'function' ? opts.onError : null;
    const old = this.subs.get(sub.key);
    if (old) this.drop(old); // one subscription per symbol and channel: the newest wins
    this.subs.set(sub.key, sub);
    if (this.mode === null) this.mode = this.pick();
    if (this.mode === 'poll') sub.poll();
    else if (this.mode === 'sse') sub.stream();
    else if (this.ws && this.ws.readyState === 1) this.send(sub.subscribeOp());
    else if (!this.ws) this.open();
    return {
      close: () => this.drop(sub),
      /** 'ws', 'sse' or 'poll': how this subscription is fed (the relay's
       *  WebSocket channels, its SSE stream, or REST polls). */
      get mode() {
        return sub.owner.mode;
      },
      /** Drops the chart connection and resumes, as after a network failure. */
      reconnect: () => this.reconnect(),
    };
  }

  drop(sub) {
    if (this.subs.get(sub.key) !== sub) return;
    this.subs.delete(sub.key);
    sub.stop();
    if (this.mode === 'ws') {
      const op = { op: 'unsubscribe', channel: sub.kind, symbols: [sub.symbol] };
      if (sub.interval) op.interval = sub.interval;
      this.send(op);
      if (!this.subs.size) this.closeSocket();
    }
  }

  send(obj) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(obj));
  }

  async open() {
    clearTimeout(this.timer);
    this.closeSocket();
    const gen = ++this.gen;
    if (this.client.closed || !this.subs.size || this.mode !== 'ws') return;
    let ws;
    try {
      const token = await this.client.tokens.get();
      if (gen !== this.gen) return;
      ws = new this.client.WebSocket(this.client.url('v1/ws', true, token));
    } catch (e) {
      return void this.retry(gen, String(e.message || e));
    }
    this.ws = ws;
    this.reconnectMs = null;
    ws.onopen = () => {
      if (gen !== this.gen) return;
      this.failures = 0;
      this.everUp = true;
      for (const sub of this.subs.values()) this.send(sub.subscribeOp());
    };
    ws.onmessage = (e) => {
      if (gen !== this.gen || typeof e.data !== 'string') return;
      let f;
      try {
        f = JSON.parse(e.data);
      } catch (err) {
        return void this.client.protocolError('chart: bad frame: ' + err.message);
      }
      this.onFrame(f);
    };
    ws.onclose = (e) => {
      if (gen !== this.gen) return;
      // Behind the tape (every_queue), or a socket that stayed full: resume at once with `since`.
      if (e.code === 4008) this.client.notice('chart: slow consumer (4008); resuming with since');
      this.retry(gen, 'closed ' + e.code, e.code === 4008 ? 0 : this.reconnectMs);
    };
    ws.onerror = () => {
      if (gen === this.gen && ws.readyState !== 1) this.retry(gen, 'cannot connect');
    };
  }

  onFrame(f) {
    if (!f || typeof f !== 'object') return;
    if (f.type === 'trades' || f.type === 'bars') {
      const sym = String(f.symbol || '').toUpperCase();
      const sub = this.subs.get(f.type === 'bars' ? `bars:${sym}:${f.interval}` : `trades:${sym}`);
      if (sub) sub.take(f);
    } else if (f.type === 'error') {
      const text = String(f.message || f.code || '');
      const kind = /\btrades\b/.test(text) ? 'trades' : /\bbars\b/.test(text) ? 'bars' : null;
      if (f.code === 'bad_channel' || (f.code === 'bad_request' && /channel/.test(text))) {
        // A relay without the chart channels: poll REST instead.
        this.switchTo('poll', 'the relay streams no bars or trades; polling REST');
      } else if (/since/.test(text) && !this.noSince) {
        // A resume point the relay does not take: history and the REST fill resume as well.
        this.noSince = true;
        for (const sub of this.subs.values()) if (sub.kind === 'trades') this.send(sub.subscribeOp());
      } else if (f.code === 'not_entitled' || f.code === 'bad_history' || f.code === 'bad_interval') {
        // The user may not have the channel, or the relay keeps less: not
        // served; told to the subscriptions it concerns.
        for (const sub of this.subs.values()) if (!kind || sub.kind === kind) sub.refused(f.code, `${f.code}: ${text}`);
      } else this.client.notice('chart: ' + text, true);
    } else if (f.type === 'subscribed' && (f.channel === 'bars' || f.channel === 'trades')) {
      for (const [list, code] of [[f.denied, 'not_entitled'], [f.unknown, 'unknown_symbol']]) {
        for (const s of Array.isArray(list) ? list : []) {
          for (const sub of this.subs.values()) {
            if (sub.kind === f.channel && sub.symbol === String(s).toUpperCase()) sub.refused(code, `${code}: ${f.channel} of ${s}`);
          }
        }
      }
    } else if (f.type === 'shutdown') {
      this.reconnectMs = (toNum(f.reconnect_ms) ?? 1000) + Math.random() * 250;
    }
  }

  /** Feeds every subscription another way ('sse' or 'poll'): the way
   *  before could not (a WebSocket or a stream that never came up, a relay
   *  without the channels). */
  switchTo(mode, reason) {
    if (this.mode === mode || this.mode === 'poll') return;
    this.mode = mode;
    this.gen++;
    clearTimeout(this.timer);
    this.closeSocket();
    this.client.notice(reason);
    for (const sub of this.subs.values()) {
      sub.halt();
      if (mode === 'sse') {
        sub.stream();
        continue;
      }
      sub.awaiting = sub.kind === 'bars' || sub.last === null;
      sub.poll();
    }
  }

  retry(gen, reason, delay) {
    if (gen !== this.gen) return;
    this.closeSocket();
    this.gen++;
    if (this.client.closed || !this.subs.size || this.mode !== 'ws') return;
    // A WebSocket that never comes up: SSE, and then REST, may still serve the chart.
    if (!this.everUp && ++this.failures >= 3) return void this.switchTo(this.client.fetchFn ? 'sse' : 'poll', 'chart: ' + reason + '; trying ' + (this.client.fetchFn ? 'SSE' : 'REST'));
    this.timer = setTimeout(() => this.open(), delay ?? backoff(this.attempt++));
  }

  reconnect() {
    if (this.mode === 'ws') this.open();
    else if (this.mode === 'sse') for (const sub of this.subs.values()) sub.stream();
  }

  closeSocket() {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000);
    } catch (_) { /* already closed */ }
  }

  close() {
    for (const sub of this.subs.values()) sub.stop();
    this.subs.clear();
    clearTimeout(this.timer);
    this.gen++;
    this.closeSocket();
  }
}
