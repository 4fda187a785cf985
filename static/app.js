/* tickrelay trading page: the view.
 *
 * The data comes from the client library (tickrelay.js, clients/js/ in the
 * repository): it loads the watchlist's prices over REST, streams changes
 * over the transport the user picks (WebSocket JSON or MessagePack, SSE,
 * long poll, short poll), resumes after any disconnect and hands over each
 * new quote with exact decimal prices. This file keeps the watchlist, the
 * rows and the figures; stats.js the clock and the rates; compare.js the
 * side-by-side comparison of two transports. Native ES modules, no build
 * step: the relay embeds these files as they are.
 */

import { connect, parseDecimal, formatTicks, backoff, toNum, TRANSPORTS, HttpError } from './tickrelay.js';
import { clock, nowMs, Stats } from './stats.js';
import { Compare } from './compare.js';

// ---------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------

const $ = (sel) => document.querySelector(sel);
const pageParams = new URLSearchParams(location.search);
const token = pageParams.get('token'); // optional bearer token (docs/PROTOCOL.md, "Authentication")
const SYMBOL_RE = /^[A-Z0-9.\-/_^*]{1,16}$/; // the server's ticker syntax
const MAX_WATCH = 500; // well under the server's per-request limit (1024)
const DEFAULT_WATCH = 20; // a screenful at 1280x800
const FLASH_MS = 700; // keep in step with the flash animations in app.css
// Screen batching (batch_ms): the server gathers changes for up to one
// frame of a 60 Hz screen. Switchable in the header; on by default.
const BATCH_MS = 16;
// Relative, so the page also works behind a path-prefixing proxy.
const BASE_URL = new URL('.', location.href).href;
const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const formatPrice = formatTicks;

const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem('tickrelay.' + key);
      return v === null ? fallback : JSON.parse(v);
    } catch (_) {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem('tickrelay.' + key, JSON.stringify(value));
    } catch (_) { /* private mode or quota: the page still works */ }
  },
};
const batchMs = () => (store.get('batch', true) ? BATCH_MS : 0);

/** The library's quote (decimal strings) → the row's view model (ticks, ms). */
function viewQuote(q) {
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

/** The directory over REST (not part of the streaming client). */
async function fetchDirectory() {
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const res = await fetch(new URL('v1/symbols', BASE_URL), { headers, cache: 'no-store' });
  const text = await res.text();
  if (!res.ok) throw new HttpError(res.status, text);
  return JSON.parse(text);
}

// ---------------------------------------------------------------------------
// The App: watchlist, rows, status and rendering. One library connection
// (`feed`) at a time; a switch of transport closes it and opens another.
// ---------------------------------------------------------------------------

const STATUS_TEXT = {
  connecting: 'Connecting',
  live: 'Live',
  stale: 'Feed stale',
  recovering: 'Recovering',
  reconnecting: 'Reconnecting',
  disconnected: 'Disconnected',
  idle: 'Idle',
};

class App {
  constructor() {
    this.directory = new Map(); // symbol → {symbol, name, prevClose}
    this.dirList = [];
    this.dirAt = 0;
    this.dirTimer = 0;
    this.dirRechecks = 0;
    this.watchlist = [];
    this.rows = new Map(); // symbol → row (DOM + current quote)
    this.session = null;
    this.seq = null;
    this.feedStatus = 'live';
    this.feedDetail = null;
    this.uncertain = false;
    this.conn = 'connecting';
    this.retryAt = 0;
    this.feed = null; // the library's handle
    this.stats = new Stats();
    this.transportName = 'ws';
    this.pending = new Map();
    this.flushQueued = false;
    this.visibleAt = 0;
    this.msgTimer = 0;
    this.pollInterval = 1000;
    this.urlSymbols = pageParams.has('symbols');

    // Test hooks (for automated browser tests); mutated in place.
    this.hooks = {
      transport: 'ws',
      updates: 0,
      connected: false,
      lastSeq: null,
      session: null,
      status: 'connecting',
      latency: { p50: null, p99: null },
    };
    window.tickrelay = this.hooks;

    this.el = {
      tbody: $('#quotes tbody'),
      status: $('#status'),
      statusLabel: $('#status .label'),
      statusDetail: $('#status .detail'),
      transport: $('#transport'),
      interval: $('#interval'),
      intervalCtl: $('#interval-ctl'),
      search: $('#search'),
      results: $('#results'),
      count: $('#wl-count'),
      cursor: $('#cursor'),
      msg: $('#msg'),
      empty: $('#empty'),
      totals: $('#totals'),
      ups: $('#st-ups'),
      rpm: $('#st-rpm'),
      bps: $('#st-bps'),
      p50: $('#st-p50'),
      p99: $('#st-p99'),
    };
    this.compare = new Compare({ baseUrl: BASE_URL, token, symbols: () => this.requestSymbols(), batchMs });
  }

  // --- boot -----------------------------------------------------------------

  async boot() {
    const fromUrl = pageParams.get('transport');
    const saved = store.get('transport', 'ws');
    this.transportName = TRANSPORTS.includes(fromUrl) ? fromUrl : TRANSPORTS.includes(saved) ? saved : 'ws';
    this.hooks.transport = this.transportName;
    this.el.transport.value = this.transportName;
    this.pollInterval = clampInterval(store.get('pollInterval', 1000));
    this.el.interval.value = this.pollInterval;
    this.el.intervalCtl.hidden = this.transportName !== 'snapshot';

    this.bindUi();
    clock.calibrate();
    setInterval(() => clock.calibrate(), 1000);
    setInterval(() => this.renderAges(), 250);
    setInterval(() => this.renderStats(), 500);
    this.renderStatus();

    // The directory names the default watchlist; the library then loads the
    // initial prices over REST and streams after.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.loadDirectory();
        if (!this.watchlist.length && !this.rows.size) this.initWatchlist();
        if (!this.watchlist.length && !this.urlSymbols && !this.dirList.length) {
          throw new Error('waiting for the symbol directory');
        }
        break;
      } catch (e) {
        const delay = backoff(attempt);
        this.conn = attempt >= 3 ? 'disconnected' : 'reconnecting';
        this.retryAt = performance.now() + delay;
        this.message(e.message || String(e), true);
        this.renderStatus();
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    this.message('');
    this.startFeed();
  }

  async loadDirectory() {
    const data = await fetchDirectory();
    const list = Array.isArray(data) ? data : data && Array.isArray(data.symbols) ? data.symbols : [];
    const dir = new Map();
    for (const e of list) {
      const d = typeof e === 'string' ? { symbol: e } : e;
      if (!d || d.symbol == null) continue;
      const symbol = String(d.symbol).toUpperCase();
      const prev = d.prev_close == null ? null : parseDecimal(String(d.prev_close));
      dir.set(symbol, { symbol, name: d.name ? String(d.name) : '', prevClose: prev });
    }
    const before = this.requestSymbols();
    this.directory = dir;
    this.dirList = [...dir.values()];
    this.dirAt = performance.now();
    for (const row of this.rows.values()) {
      const info = dir.get(row.symbol);
      // The relay lists it (again): whatever called it unknown is over, e.g.
      // a restarted relay answering before the feed's directory arrived.
      if (info) row.serverUnknown = false;
      row.cells.name.textContent = info ? info.name : dir.size ? 'not in directory' : '';
      row.tr.classList.toggle('unknown', dir.size > 0 && !info);
      if (info && !row.q) this.renderRow(row);
    }
    // Symbols that appeared or vanished change what we subscribe to.
    const after = this.requestSymbols();
    const added = after.filter((s) => !before.includes(s));
    const removed = before.filter((s) => !after.includes(s));
    if (this.feed) {
      if (added.length) this.feed.subscribe(added);
      if (removed.length) this.feed.unsubscribe(removed);
    }
    if (this.watchlist.some((s) => !dir.has(s) || this.rows.get(s)?.serverUnknown)) this.recheckDirectory();
  }

  // --- watchlist --------------------------------------------------------------

  add(symbol) {
    const sym = String(symbol).trim().toUpperCase();
    this.dirRechecks = 0;
    if (!SYMBOL_RE.test(sym)) return this.message('not a ticker: ' + symbol, true);
    if (this.rows.has(sym)) return this.highlight(sym);
    if (this.watchlist.length >= MAX_WATCH) return this.message('watchlist is full (' + MAX_WATCH + ')', true);
    this.watchlist.push(sym);
    this.addRow(sym);
    this.saveWatchlist();
    this.highlight(sym);
    if (this.requestSymbols().includes(sym)) {
      if (this.feed) this.feed.subscribe([sym]);
      this.compare.symbolsChanged();
    } else {
      this.message(sym + ' is not in the symbol directory', true);
    }
  }

  remove(symbol) {
    const row = this.rows.get(symbol);
    if (!row) return;
    const wasRequested = this.requestSymbols().includes(symbol);
    this.watchlist = this.watchlist.filter((s) => s !== symbol);
    row.tr.remove();
    this.rows.delete(symbol);
    this.pending.delete(symbol);
    this.saveWatchlist();
    if (wasRequested) {
      if (this.feed) this.feed.unsubscribe([symbol]);
      this.compare.symbolsChanged();
    }
  }

  // --- the connection (tickrelay.js) ----------------------------------------------

  /** (Re)opens the library's connection with the current settings. */
  startFeed() {
    if (this.feed) this.feed.close();
    this.stats = new Stats();
    // Pollers carry no feed status; don't keep a stale one from a stream.
    if (this.transportName === 'poll' || this.transportName === 'snapshot') this.feedStatus = 'live';
    const stats = this.stats;
    const feed = connect(BASE_URL, {
      symbols: this.requestSymbols(),
      transport: this.transportName,
      token,
      batchMs: batchMs(),
      pollIntervalMs: this.pollInterval,
      onQuote: (q, info) => {
        if (this.feed === feed) this.onQuote(q, info, stats);
      },
      onStatus: (s) => {
        if (this.feed === feed) this.onStatus(s);
      },
      onUnknown: (symbols) => {
        if (this.feed !== feed) return;
        this.markUnknown(symbols);
        this.loadDirectory().catch(() => {});
      },
      onNotice: (text, isError) => {
        if (this.feed === feed) this.message(text, isError);
      },
      onTraffic: (bytes, requests) => {
        if (bytes) stats.bytes.add(bytes);
        if (requests) stats.requests.add(requests);
      },
    });
    this.feed = feed;
  }

  switchTransport(name) {
    if (!TRANSPORTS.includes(name) || name === this.transportName) return;
    this.transportName = name;
    this.hooks.transport = name;
    this.el.transport.value = name;
    this.el.intervalCtl.hidden = name !== 'snapshot';
    store.set('transport', name);
    if (pageParams.has('transport')) {
      const u = new URL(location.href);
      u.searchParams.set('transport', name);
      history.replaceState(null, '', u);
    }
    this.message('');
    // Before boot finishes there is no connection yet; boot opens it.
    if (this.feed) this.startFeed();
    this.renderStats();
  }

  onQuote(q, info, stats) {
    const row = this.rows.get(q.symbol);
    if (!row) return; // removed meanwhile
    // The library passes on only what is news (never a strictly older seq).
    row.session = q.session;
    row.seq = q.seq;
    row.q = viewQuote(q);
    const at = performance.now();
    const p = this.pending.get(row.symbol);
    // Snapshots (REST, or a stream's catch-up) may be old: they would
    // measure the outage, not tick-to-screen latency.
    this.pending.set(row.symbol, { row, stats: info.snapshot ? (p ? p.stats : null) : stats, at });
    this.hooks.updates++;
    if (!info.snapshot) stats.updates.add(1);
    this.scheduleFlush();
  }

  onStatus(s) {
    if (s.connection === 'closed') return;
    const was = this.conn;
    this.conn = s.connection === 'live' ? 'up' : s.connection;
    this.retryAt = s.retryInMs === null ? 0 : performance.now() + s.retryInMs;
    if (this.conn === 'up' && was !== 'up') this.message('');
    else if (this.conn !== 'up' && s.reason) this.message(s.reason, true);
    if (s.session !== null && this.session !== null && s.session !== this.session) {
      // A new feed session (the relay or the feed restarted): it may bring
      // symbols back, or drop some.
      this.dirRechecks = 0;
      this.loadDirectory().catch(() => {});
    }
    this.session = s.session;
    this.seq = s.seq;
    this.hooks.session = s.session;
    this.hooks.transport = s.transport;
    this.feedStatus = s.feed.status;
    // `complete: false`: the relay lacks state it is rebuilding (a late
    // join, a loss beyond repair). Every row may be missing a change until
    // it says complete again; recovered prices arrive as ticks.
    this.feedDetail = s.feed;
    const uncertain = s.feed.complete === false;
    if (uncertain !== this.uncertain) {
      this.uncertain = uncertain;
      document.body.classList.toggle('uncertain', uncertain);
      this.hooks.uncertain = uncertain;
    }
    this.hooks.connected = this.conn === 'up';
    this.renderCursor();
    this.renderStatus();
  }

  // --- rendering --------------------------------------------------------------------

  flush() {
    this.flushQueued = false;
    const batch = this.pending;
    this.pending = new Map();
    for (const { row } of batch.values()) this.renderRow(row);
    // Tick-to-screen: measured right after the DOM writes of this frame.
    // Updates that waited out a hidden tab would only measure the tab switch.
    if (document.hidden) return;
    const now = nowMs();
    for (const { row, stats, at } of batch.values()) {
      if (stats && row.q && row.q.tsMs !== null && at >= this.visibleAt) stats.latency.add(now - row.q.tsMs);
    }
  }

  renderRow(row) {
    const q = row.q;
    const c = row.cells;
    row.tr.dataset.seq = q ? String(q.seq) : '';
    if (!q) {
      for (const k of ['bsz', 'bid', 'ask', 'asz', 'last', 'net', 'chg', 'vol', 'age']) c[k].textContent = '';
      return;
    }
    this.setPrice(row, 'bid', q.bid);
    this.setPrice(row, 'ask', q.ask);
    this.setPrice(row, 'last', q.last);
    setText(c.bsz, q.bidSize === null || q.bid === null ? '' : intFmt.format(q.bidSize));
    setText(c.asz, q.askSize === null || q.ask === null ? '' : intFmt.format(q.askSize));
    setText(c.vol, q.volume === null ? '' : intFmt.format(q.volume));

    // Change against the previous close; the last trade, else the mid.
    const info = this.directory.get(row.symbol);
    const prev = q.prevClose || (info && info.prevClose) || null;
    const ref = q.last !== null ? q.last : q.bid !== null && q.ask !== null ? Math.round((q.bid + q.ask) / 2) : null;
    if (prev && ref !== null) {
      const net = ref - prev; // exact, in ten-thousandths
      const pct = (net / prev) * 100; // display only
      setText(c.net, (net > 0 ? '+' : '') + formatPrice(net));
      setText(c.chg, (pct > 0 ? '+' : '') + pct.toFixed(2) + '%');
      const title = (q.last !== null ? 'last' : 'mid') + ' vs previous close ' + formatPrice(prev);
      for (const cell of [c.net, c.chg]) {
        cell.classList.toggle('pos', net > 0);
        cell.classList.toggle('neg', net < 0);
        cell.title = title;
      }
    } else {
      setText(c.net, '');
      setText(c.chg, '');
    }
    this.renderAge(row, nowMs());
  }

  renderStatus() {
    let status;
    let detail = '';
    if (this.conn === 'up') {
      status = this.feedStatus;
      if (status === 'stale') detail = 'no feed data';
      else if (status === 'recovering' && this.uncertain) {
        const d = this.feedDetail || {};
        const parts = ['rebuilding prices'];
        if (toNum(d.incomplete)) parts.push(toNum(d.incomplete) + ' symbols uncertain');
        if (toNum(d.lost)) parts.push(toNum(d.lost) + ' messages lost');
        detail = parts.join(' · ');
      } else if (status === 'recovering') detail = 'repairing a gap';
    } else {
      status = this.conn;
      if (this.retryAt) {
        const left = Math.max(0, this.retryAt - performance.now());
        detail = left > 0 ? 'retry in ' + (left / 1000).toFixed(left < 10000 ? 1 : 0) + ' s' : 'connecting…';
      } else if (status === 'idle') {
        detail = 'no symbols';
      }
    }
    this.hooks.status = status;
    const el = this.el.status;
    if (el.dataset.status !== status) {
      el.dataset.status = status;
      document.body.dataset.status = status;
      this.el.statusLabel.textContent = STATUS_TEXT[status] || status;
      // A background tab shows trouble in its title.
      document.title = status === 'live' || status === 'connecting' ? 'tickrelay' : (STATUS_TEXT[status] || status) + ' · tickrelay';
    }
    setText(this.el.statusDetail, detail);
  }

  renderCursor() {
    this.hooks.lastSeq = this.seq;
    setText(this.el.cursor, this.session !== null ? 'session ' + this.session + ' · seq ' + intFmt.format(this.seq) : '');
  }

  renderStats() {
    this.renderStatus(); // keeps the retry countdown moving
    const s = this.stats;
    const p50 = s.latency.percentile(0.5);
    const p99 = s.latency.percentile(0.99);
    this.hooks.latency.p50 = p50;
    this.hooks.latency.p99 = p99;
    setText(this.el.ups, fmtRate(s.updates.perSecond()));
    setText(this.el.rpm, fmtRate(s.requests.perSecond() * 60));
    setText(this.el.bps, fmtBytes(s.bytes.perSecond()));
    setText(this.el.p50, fmtMs(p50));
    setText(this.el.p99, fmtMs(p99));
    setText(this.el.totals, intFmt.format(this.hooks.updates) + ' updates');
  }

  // --- UI events -----------------------------------------------------------------------

  bindUi() {
    this.el.transport.addEventListener('change', () => this.switchTransport(this.el.transport.value));
    const batch = $('#batch');
    if (batch) {
      batch.checked = batchMs() > 0;
      batch.addEventListener('change', () => {
        store.set('batch', batch.checked);
        if (this.feed) this.startFeed();
      });
    }
    this.el.interval.addEventListener('change', () => {
      this.pollInterval = clampInterval(this.el.interval.value);
      this.el.interval.value = this.pollInterval;
      store.set('pollInterval', this.pollInterval);
      if (this.transportName === 'snapshot' && this.feed) this.startFeed();
    });
    this.el.tbody.addEventListener('click', (e) => {
      const btn = e.target.closest('button.rm');
      if (btn) this.remove(btn.closest('tr').dataset.symbol);
    });
    this.bindSearch();
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        this.visibleAt = performance.now();
        if (this.pending.size) this.scheduleFlush();
      }
    });
    window.addEventListener('online', () => this.feed && this.feed.kick());
    const cmp = $('#compare-toggle');
    if (cmp) cmp.addEventListener('click', () => this.compare.toggle());
  }

  /** Watchlist precedence: ?symbols= › saved › the first DEFAULT_WATCH of the directory. */
  initWatchlist() {
    let list = null;
    if (this.urlSymbols) {
      list = pageParams.get('symbols').split(',');
    } else {
      const saved = store.get('watchlist', null);
      // A saved list from another symbol universe (none of it known) is dropped.
      if (Array.isArray(saved) && saved.some((s) => this.directory.has(String(s).toUpperCase()))) list = saved;
    }
    if (!list) list = this.dirList.slice(0, DEFAULT_WATCH).map((d) => d.symbol);
    const clean = [];
    for (const s of list) {
      const sym = String(s).trim().toUpperCase();
      if (SYMBOL_RE.test(sym) && !clean.includes(sym) && clean.length < MAX_WATCH) clean.push(sym);
    }
    this.watchlist = clean;
    for (const sym of clean) this.addRow(sym);
    this.renderCount();
  }

  /** Some watched symbols are not (yet) known to the relay: look again a
   *  few times, 1 s, 2 s … 30 s apart, then leave them marked. A relay
   *  that just restarted learns the directory from the feed a moment after
   *  it starts answering; a real typo stays unknown. */
  recheckDirectory() {
    if (this.dirTimer || this.dirRechecks >= 6) return;
    const delay = Math.min(30000, 1000 * 2 ** this.dirRechecks++);
    this.dirTimer = setTimeout(() => {
      this.dirTimer = 0;
      this.loadDirectory().catch(() => this.recheckDirectory());
    }, delay);
  }

  /** What we ask the server for: the watchlist minus symbols it doesn't know. */
  requestSymbols() {
    if (!this.directory.size) return this.watchlist.filter((s) => !this.rows.get(s)?.serverUnknown);
    return this.watchlist.filter((s) => this.directory.has(s) && !this.rows.get(s)?.serverUnknown);
  }

  saveWatchlist() {
    this.renderCount();
    if (this.urlSymbols) {
      // The URL chose the list; keep it the source of truth across reloads.
      const u = new URL(location.href);
      u.searchParams.set('symbols', this.watchlist.join(','));
      history.replaceState(null, '', u);
    } else {
      store.set('watchlist', this.watchlist);
    }
  }

  markUnknown(symbols) {
    let marked = 0;
    for (const s of symbols) {
      const row = this.rows.get(s);
      if (!row || row.serverUnknown) continue;
      row.serverUnknown = true;
      row.tr.classList.add('unknown');
      row.cells.name.textContent = 'unknown symbol';
      marked++;
    }
    if (marked) this.recheckDirectory();
  }

  addRow(sym) {
    const tr = document.createElement('tr');
    tr.dataset.symbol = sym;
    const cells = {};
    for (const k of ['sym', 'name', 'bsz', 'bid', 'ask', 'asz', 'last', 'net', 'chg', 'vol', 'age', 'x']) {
      const td = document.createElement('td');
      td.className = k;
      tr.appendChild(td);
      cells[k] = td;
    }
    cells.sym.textContent = sym;
    const info = this.directory.get(sym);
    cells.name.textContent = info ? info.name : '';
    if (info) cells.name.title = info.name;
    if (this.directory.size && !info) {
      tr.classList.add('unknown');
      cells.name.textContent = 'not in directory';
    }
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.className = 'rm';
    rm.title = 'Remove ' + sym;
    rm.setAttribute('aria-label', 'Remove ' + sym);
    rm.textContent = '×';
    cells.x.appendChild(rm);
    this.el.tbody.appendChild(tr);
    const row = { symbol: sym, tr, cells, q: null, session: null, seq: -1, shown: {}, serverUnknown: false };
    this.rows.set(sym, row);
    this.el.empty.hidden = true;
    return row;
  }

  scheduleFlush() {
    if (this.flushQueued) return;
    this.flushQueued = true;
    // Paint-aligned when visible; hidden tabs get no frames, so use a timer.
    if (document.hidden) setTimeout(() => this.flush(), 250);
    else requestAnimationFrame(() => this.flush());
  }

  /** Writes a price cell and flashes it green/red when it moved. */
  setPrice(row, key, v) {
    const cell = row.cells[key];
    const text = formatPrice(v);
    if (cell.textContent !== text) {
      cell.textContent = text;
      // 2-decimal prices get padding so decimal points stay aligned.
      cell.classList.toggle('d2', text !== '' && text.length - text.indexOf('.') === 3);
    }
    const old = row.shown[key];
    row.shown[key] = v;
    if (old === undefined || old === null || v === null || v === old) return;
    const dir = v > old ? 'up' : 'dn';
    if (key === 'last') {
      cell.classList.toggle('tick-up', dir === 'up');
      cell.classList.toggle('tick-dn', dir === 'dn');
    }
    // At most one flash per cell per FLASH_MS: a symbol ticking 50 times a
    // second blinks instead of glowing solid, so the eye still catches the
    // cells that just moved.
    const now = performance.now();
    if (now - (cell._flashAt || -Infinity) < FLASH_MS) return;
    cell._flashAt = now;
    // Alternate between two identical animations so a new flash restarts it.
    const k = (cell._flip = cell._flip ? 0 : 1);
    cell.classList.remove('up0', 'up1', 'dn0', 'dn1');
    cell.classList.add(dir + k);
  }

  renderAge(row, now) {
    if (!row.q || row.q.tsMs === null) return;
    const s = Math.max(0, (now - row.q.tsMs) / 1000);
    setText(row.cells.age, (s < 10 ? s.toFixed(1) : String(Math.round(s))) + 's');
    row.cells.age.classList.toggle('old', s >= 30);
  }

  renderAges() {
    const now = nowMs();
    for (const row of this.rows.values()) this.renderAge(row, now);
  }

  renderCount() {
    setText(this.el.count, this.watchlist.length + (this.watchlist.length === 1 ? ' symbol' : ' symbols'));
    this.el.empty.hidden = this.watchlist.length > 0;
  }

  /** The toolbar message. Errors stay until cleared; notices fade after 8 s. */
  message(text, isError) {
    clearTimeout(this.msgTimer);
    setText(this.el.msg, text || '');
    this.el.msg.classList.toggle('error', !!isError && !!text);
    if (text && !isError) this.msgTimer = setTimeout(() => this.message(''), 8000);
  }

  highlight(sym) {
    const row = this.rows.get(sym);
    if (!row) return;
    row.tr.scrollIntoView({ block: 'nearest' });
    row.tr.classList.remove('hl');
    void row.tr.offsetWidth; // restart the animation
    row.tr.classList.add('hl');
  }

  bindSearch() {
    const input = this.el.search;
    const list = this.el.results;
    let items = [];
    let sel = 0;

    const close = () => {
      list.hidden = true;
      items = [];
    };
    const show = () => {
      const q = input.value.trim().toUpperCase();
      if (!q) return close();
      items = this.searchDirectory(q, 12);
      // Not in the (possibly stale) directory but a valid ticker: offer it anyway.
      if (!items.length && SYMBOL_RE.test(q)) items = [{ symbol: q, name: '', prevClose: null, adhoc: true }];
      sel = 0;
      list.replaceChildren(...items.map((d, i) => {
        const li = document.createElement('li');
        li.setAttribute('role', 'option');
        li.dataset.symbol = d.symbol;
        if (i === sel) li.classList.add('sel');
        if (this.rows.has(d.symbol)) li.classList.add('have');
        const a = document.createElement('span');
        a.className = 'rs';
        a.textContent = d.symbol;
        const b = document.createElement('span');
        b.className = 'rn';
        b.textContent = d.adhoc ? 'not in directory' : d.name;
        const c = document.createElement('span');
        c.className = 'rp';
        c.textContent = d.prevClose !== null ? formatPrice(d.prevClose) : '';
        li.append(a, b, c);
        return li;
      }));
      list.hidden = !items.length;
    };
    const move = (d) => {
      if (!items.length) return;
      sel = (sel + d + items.length) % items.length;
      [...list.children].forEach((li, i) => li.classList.toggle('sel', i === sel));
      list.children[sel].scrollIntoView({ block: 'nearest' });
    };
    const pick = (sym) => {
      this.add(sym);
      input.value = '';
      close();
    };

    input.addEventListener('input', show);
    input.addEventListener('focus', () => {
      // The directory grows as the feed announces symbols; refresh if old.
      if (performance.now() - this.dirAt > 30000) this.loadDirectory().then(show).catch(() => {});
      show();
    });
    input.addEventListener('blur', () => setTimeout(close, 150));
    input.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowDown') { move(1); e.preventDefault(); }
      else if (e.key === 'ArrowUp') { move(-1); e.preventDefault(); }
      else if (e.key === 'Enter') {
        e.preventDefault();
        if (items[sel]) pick(items[sel].symbol);
        else if (input.value.trim()) pick(input.value);
      } else if (e.key === 'Escape') { input.value = ''; close(); input.blur(); }
    });
    list.addEventListener('mousedown', (e) => {
      const li = e.target.closest('li');
      if (li) {
        e.preventDefault();
        pick(li.dataset.symbol);
      }
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === '/' && document.activeElement !== input && !/INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName)) {
        e.preventDefault();
        input.focus();
      }
    });
  }

  /** Exact ticker first, then ticker prefixes, then name matches. */
  searchDirectory(q, limit) {
    const exact = [];
    const prefix = [];
    const name = [];
    const lq = q.toLowerCase();
    for (const d of this.dirList) {
      if (d.symbol === q) exact.push(d);
      else if (d.symbol.startsWith(q)) { if (prefix.length < limit) prefix.push(d); }
      else if (name.length < limit && d.name.toLowerCase().includes(lq)) name.push(d);
      if (exact.length && prefix.length >= limit) break;
    }
    return exact.concat(prefix, name).slice(0, limit);
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function clampInterval(v) {
  const n = Math.round(Number(v));
  return Number.isFinite(n) ? Math.min(60000, Math.max(100, n)) : 1000;
}

function fmtRate(v) {
  return v >= 100 ? intFmt.format(Math.round(v)) : v.toFixed(1);
}

function fmtBytes(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(2) + ' MB/s';
  if (v >= 1e3) return (v / 1e3).toFixed(1) + ' kB/s';
  return Math.round(v) + ' B/s';
}

function fmtMs(v) {
  if (v === null) return '–';
  return (Math.abs(v) >= 100 ? Math.round(v) : v.toFixed(Math.abs(v) >= 10 ? 1 : 2)) + ' ms';
}

const app = new App();
app.boot();
