/* tickrelay trading page: the chart and the tape. Clicking a watchlist
 * row's symbol opens, beside its depth ladder, a candlestick chart of its
 * bars (1 s or 1 min) and its time and sales (newest first, the last
 * TAPE_ROWS trades). Both come from the page's library connection
 * (`subscribeBars`, `subscribeTrades`: history first, then live, resumed
 * after any disconnect without a repeated or missed trade), so they follow
 * the transport and the user the page has. The chart is TradingView's
 * Lightweight Charts™, vendored under vendor/ with its licence (static/README.md),
 * loaded by index.html as the global `LightweightCharts`. */

import { comparePrices } from './tickrelay.js';
import { $ } from './settings.js';

const TAPE_ROWS = 60;
const BAR_HISTORY = 300;
const TRADE_HISTORY = TAPE_ROWS;

/** A bar as the chart draws it: seconds, and numbers (for the screen only). */
const candle = (b) => ({ time: Math.floor(b.t / 1e9), open: Number(b.o), high: Number(b.h), low: Number(b.l), close: Number(b.c) });

const two = (n) => String(n).padStart(2, '0');
/** A trade's exchange time (ns) as HH:MM:SS.mmm, local time. */
function clockOf(ts) {
  const d = new Date(Math.floor(ts / 1e6));
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

export class ChartPanel {
  constructor() {
    this.el = {
      box: $('#chart'), title: $('#chart-symbol'), plot: $('#chart-plot'), tape: $('#tape tbody'),
      note: $('#chart-note'), intervals: [...document.querySelectorAll('#chart .interval')],
    };
    this.feed = null; // the page's library handle
    this.symbol = '';
    this.interval = '1m';
    this.bars = null;
    this.trades = null;
    this.chart = null;
    this.series = null;
    this.prevPrice = null;
    this.gen = 0;
    this.barGen = 0;
    this.resetHooks();
    const close = $('#chart-close');
    if (close) close.addEventListener('click', () => this.close());
    for (const b of this.el.intervals) b.addEventListener('click', () => this.setInterval(b.dataset.interval));
  }

  resetHooks() {
    // Test hooks (automated browser tests); replaced on every open.
    this.hooks = window.tickrelayChart = {
      symbol: this.symbol, interval: this.interval, mode: null, bars: 0, barUpdates: 0, last: null, lastClosed: null,
      trades: 0, tapeRows: 0, lastTrade: null, gaps: 0,
    };
  }

  /** The page opened a new library connection (transport or user changed). */
  feedChanged(feed) {
    this.feed = feed;
    if (this.symbol) this.subscribe();
  }

  /** Opens (or moves) the chart and the tape to `symbol`. */
  open(symbol) {
    if (!this.el.box) return;
    this.symbol = symbol;
    this.el.box.hidden = false;
    document.body.classList.add('charting');
    this.el.title.textContent = symbol;
    this.ensureChart();
    this.subscribe();
  }

  setInterval(interval) {
    if (interval === this.interval) return;
    this.interval = interval;
    if (this.symbol) this.subscribeBars();
  }

  ensureChart() {
    if (this.chart || !window.LightweightCharts) {
      if (!window.LightweightCharts) this.el.note.textContent = 'the chart library did not load';
      return;
    }
    const L = window.LightweightCharts;
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    this.chart = L.createChart(this.el.plot, {
      autoSize: true,
      layout: { background: { color: v('--panel-2') }, textColor: v('--muted'), attributionLogo: true },
      grid: { vertLines: { color: v('--line') }, horzLines: { color: v('--line') } },
      timeScale: { timeVisible: true, secondsVisible: true, borderColor: v('--line'), rightOffset: 4, barSpacing: 8 },
      rightPriceScale: { borderColor: v('--line') },
    });
    this.series = this.chart.addSeries(L.CandlestickSeries, {
      upColor: v('--up'), downColor: v('--down'), wickUpColor: v('--up'), wickDownColor: v('--down'), borderVisible: false,
    });
  }

  /** (Re)subscribes the bars and the trades of the open symbol. */
  subscribe() {
    this.unsubscribe();
    this.resetHooks();
    Object.assign(this.hooks, { symbol: this.symbol, interval: this.interval });
    this.el.tape.replaceChildren();
    this.prevPrice = null;
    this.subscribeBars();
    if (!this.feed) return;
    const gen = this.gen;
    const onError = (e) => {
      if (gen === this.gen) this.refused(e);
    };
    this.trades = this.feed.subscribeTrades(this.symbol, { history: TRADE_HISTORY, onError }, (trades, info) => {
      if (gen === this.gen) this.onTrades(trades, info);
    });
  }

  /** (Re)subscribes the bars of the open symbol at the chosen interval. */
  subscribeBars() {
    if (this.bars) this.bars.close();
    const gen = this.gen;
    const barGen = ++this.barGen;
    Object.assign(this.hooks, { interval: this.interval, bars: 0, barUpdates: 0, last: null, lastClosed: null });
    for (const b of this.el.intervals) b.setAttribute('aria-pressed', String(b.dataset.interval === this.interval));
    if (this.series) this.series.setData([]);
    if (this.chart) this.chart.applyOptions({ timeScale: { secondsVisible: this.interval === '1s' } });
    this.el.note.textContent = 'loading…';
    if (!this.feed) return;
    const onError = (e) => {
      if (gen === this.gen) this.refused(e);
    };
    this.bars = this.feed.subscribeBars(this.symbol, this.interval, { history: BAR_HISTORY, onError }, (bars, info) => {
      if (gen === this.gen && barGen === this.barGen) this.onBars(bars, info);
    });
    this.hooks.mode = this.bars.mode;
  }

  unsubscribe() {
    this.gen++;
    if (this.bars) this.bars.close();
    if (this.trades) this.trades.close();
    this.bars = this.trades = null;
  }

  onBars(bars, info) {
    const h = this.hooks;
    h.mode = this.bars ? this.bars.mode : h.mode;
    this.el.note.textContent = '';
    if (info.reset) {
      h.bars = bars.length;
      if (this.series) this.series.setData(bars.map(candle));
      if (this.chart && bars.length) this.chart.timeScale().scrollToRealTime();
    } else {
      for (const b of bars) {
        if (!h.last || b.t > h.last.t) h.bars++;
        if (this.series) this.series.update(candle(b));
      }
      h.barUpdates++;
    }
    for (const b of bars) if (b.closed && (!h.lastClosed || b.t >= h.lastClosed.t)) h.lastClosed = b;
    if (bars.length) h.last = bars[bars.length - 1];
  }

  /** The relay will not serve the chart to this user (a user without the
   *  `bars` or `trades` channel): say so. */
  refused(e) {
    this.hooks.refused = e.code;
    this.el.note.textContent = e.code === 'not_entitled' ? 'not entitled to the chart' : e.message;
  }

  /** Trades, oldest first: the tape shows them newest first. */
  onTrades(trades, info) {
    const h = this.hooks;
    if (info.reset) {
      this.el.tape.replaceChildren();
      this.prevPrice = null;
    }
    if (info.gap) h.gaps++;
    const rows = [];
    for (const t of trades) {
      const tr = document.createElement('tr');
      const dir = this.prevPrice === null ? 0 : comparePrices(t.price, this.prevPrice);
      tr.className = dir > 0 ? 'up' : dir < 0 ? 'down' : '';
      this.prevPrice = t.price;
      tr.dataset.seq = String(t.seq);
      for (const [cls, text] of [['time', clockOf(t.ts)], ['price', t.price], ['size', t.size]]) {
        const td = document.createElement('td');
        td.className = cls;
        td.textContent = String(text);
        tr.appendChild(td);
      }
      rows.push(tr);
    }
    this.el.tape.prepend(...rows.reverse());
    while (this.el.tape.rows.length > TAPE_ROWS) this.el.tape.lastElementChild.remove();
    h.trades += trades.length;
    h.tapeRows = this.el.tape.rows.length;
    if (trades.length) h.lastTrade = trades[trades.length - 1];
  }

  close() {
    this.unsubscribe();
    this.symbol = '';
    if (this.el.box) this.el.box.hidden = true;
    document.body.classList.remove('charting');
    this.resetHooks();
  }
}
