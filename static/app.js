/* tickrelay trading page: the page itself. The watchlist, the library
 * connection (tickrelay.js, clients/js/ in the repository: it loads the
 * watchlist's prices over REST, streams changes over the transport the user
 * picks, resumes after any disconnect and hands over each new quote with
 * exact decimal prices), the transport picker and the stats strip. The
 * rest, one concern a module: rows.js the quote table, search.js the search
 * box, status.js the status badge, format.js text for the screen,
 * settings.js the URL, saved settings and directory, stats.js the clock and
 * rates, compare.js the side-by-side comparison of two transports, users.js
 * the user menu, its token and the "delayed" badge, ladder.js the depth
 * ladder of a clicked symbol, chart.js its candlestick chart and tape. Native
 * ES modules, no build step: the relay embeds these files as they are.
 */

import { connect, backoff, TRANSPORTS } from './tickrelay.js';
import { clock, nowMs, Stats } from './stats.js';
import { Compare } from './compare.js';
import { Ladder } from './ladder.js';
import { ChartPanel } from './chart.js';
import { intFmt, setText, clampInterval, fmtRate, fmtBytes, fmtMs, viewQuote } from './format.js';
import { $, pageParams, SYMBOL_RE, MAX_WATCH, DEFAULT_WATCH, BASE_URL, store, batchMs, fetchDirectory } from './settings.js';
import { createRow, renderRow, renderAge, highlightRow } from './rows.js';
import { bindSearch } from './search.js';
import { statusView, renderBadge } from './status.js';
import { Users } from './users.js';

// ---------------------------------------------------------------------------
// The App: watchlist, connection, status and stats. One library connection
// (`feed`) at a time; a switch of transport closes it and opens another.
// ---------------------------------------------------------------------------

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
      user: '',
      delayMs: 0,
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
    this.users = new Users(() => this.conn !== 'up');
    // A function: the library asks it for every connection and request.
    this.token = () => this.users.token();
    this.compare = new Compare({ baseUrl: BASE_URL, users: this.users, symbols: () => this.requestSymbols(), batchMs });
    this.ladder = new Ladder();
    this.chart = new ChartPanel();
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

    // The demo's users, if the relay has any, before anything is asked as one.
    await this.users.load();
    this.renderUser();

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
    const dir = await fetchDirectory(await this.token());
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
      token: this.token,
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
      onBookGap: (symbol) => {
        if (this.feed === feed) this.ladder.gap(symbol);
      },
    });
    this.feed = feed;
    this.chart.feedChanged(feed);
    this.ladder.attach(feed, this.transportName);
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

  /** The user menu: reconnects as the user chosen, with its token. */
  async switchUser(name) {
    if (!this.users.choose(name)) return;
    this.renderUser();
    this.message('');
    // Nothing the last user was shown stays on screen (a delayed user must
    // not see the real-time prices of the one before).
    this.pending.clear();
    for (const row of this.rows.values()) {
      Object.assign(row, { q: null, session: null, seq: -1, shown: {} });
      this.renderRow(row);
    }
    // What this user may see: the directory as it lists it (kept as it was
    // if this user may not list it).
    await this.loadDirectory().catch(() => {});
    if (this.feed) this.startFeed();
    this.compare.userChanged();
  }

  renderUser() {
    this.hooks.user = this.users.chosen;
    this.hooks.delayMs = this.users.delayMs();
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
    renderRow(row, this.directory.get(row.symbol), nowMs());
  }

  renderStatus() {
    const view = statusView(this);
    this.hooks.status = view.status;
    renderBadge(this.el.status, this.el.statusLabel, this.el.statusDetail, view);
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
    const user = $('#user');
    if (user) user.addEventListener('change', () => this.switchUser(user.value));
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
      else if (e.target.closest('td.sym')) this.select(e.target.closest('tr').dataset.symbol);
    });
    bindSearch(this, this.el.search, this.el.results);
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

  /** A symbol selected: its book, its chart and its tape. */
  select(symbol) {
    this.ladder.open(symbol);
    this.chart.open(symbol);
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
    const row = createRow(this.el.tbody, sym, this.directory);
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

  renderAges() {
    const now = nowMs();
    for (const row of this.rows.values()) renderAge(row, now);
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
    if (row) highlightRow(row);
  }
}

const app = new App();
app.boot();
