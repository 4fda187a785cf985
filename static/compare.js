/* tickrelay trading page: the compare view. Two transports side by side on
 * the watchlist's symbols, each its own tickrelay.js connection, with their
 * tick-to-screen latency and the bytes each spends per update drawn live
 * (one point a second, the last minute). Under `tickrelay demo` each side
 * also picks its user: the real-time and the 15-min delayed user side by
 * side, the delayed side's latency showing its delay. */

import { connect, formatPrice, TRANSPORTS } from './tickrelay.js';
import { nowMs, Stats } from './stats.js';

const LABELS = {
  ws: 'WebSocket · JSON',
  'ws-msgpack': 'WebSocket · MessagePack',
  sse: 'Server-Sent Events',
  poll: 'Long poll',
  snapshot: 'Short poll (1 s)',
};
const POINTS = 60;
const SVG = 'http://www.w3.org/2000/svg';

/** One side: a connection, its figures, its history. */
class Side {
  constructor(key, el, transport, opts) {
    this.key = key;
    this.el = el;
    this.opts = opts;
    this.transport = transport;
    this.feed = null;
    this.stats = new Stats();
    this.pending = [];
    this.queued = false;
    this.updates = 0;
    this.history = { latency: [], bytes: [] };
    this.hooks = { transport, updates: 0, p50: null, bytesPerUpdate: null, connection: 'connecting' };
    this.user = ''; // '' : the page's user
    const sel = el.querySelector('select.transport');
    sel.replaceChildren(...TRANSPORTS.map((t) => new Option(LABELS[t], t, false, t === transport)));
    sel.addEventListener('change', () => this.restart(sel.value));
    const who = el.querySelector('select.user');
    if (who) {
      who.addEventListener('change', () => {
        this.user = who.value;
        this.restart();
      });
    }
  }

  /** The user menu: the page's user, then the demo's users (hidden when
   *  the relay offers none). */
  renderUsers() {
    const users = this.opts.users;
    const who = this.el.querySelector('select.user');
    if (!who || !users) return;
    if (!users.list.some((u) => u.name === this.user)) this.user = '';
    who.replaceChildren(
      new Option("page's user", '', false, this.user === ''),
      ...users.list.map((u) => new Option(u.label || u.name, u.name, false, u.name === this.user)),
    );
    who.hidden = users.list.length === 0;
    const tag = this.el.querySelector('.delayed-badge');
    const label = users.delayLabel(this.user || users.chosen);
    if (tag) {
      tag.hidden = !label;
      tag.textContent = label;
    }
    this.hooks.user = this.user || users.chosen;
    this.hooks.delayMs = users.delayMs(this.user || users.chosen);
  }

  start() {
    const stats = (this.stats = new Stats());
    this.history = { latency: [], bytes: [] };
    this.hooks.transport = this.transport;
    this.hooks.newestTs = null;
    this.renderUsers();
    const feed = connect(this.opts.baseUrl, {
      symbols: this.opts.symbols(),
      transport: this.transport,
      token: this.opts.users ? this.opts.users.tokenFor(this.user) : undefined,
      batchMs: this.opts.batchMs(),
      onQuote: (q, info) => {
        if (this.feed !== feed || info.snapshot) return;
        stats.updates.add(1);
        this.updates++;
        this.pending.push(q);
        this.paint();
      },
      onTraffic: (bytes, requests) => {
        if (bytes) stats.bytes.add(bytes);
        if (requests) stats.requests.add(requests);
      },
      onStatus: (s) => {
        if (this.feed === feed) this.hooks.connection = s.connection;
      },
    });
    this.feed = feed;
  }

  stop() {
    if (this.feed) this.feed.close();
    this.feed = null;
    this.pending = [];
  }

  restart(transport) {
    this.transport = transport || this.transport;
    this.stop();
    this.start();
  }

  /** Writes the newest quote to the screen, then measures tick-to-screen. */
  paint() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => {
      this.queued = false;
      const batch = this.pending;
      this.pending = [];
      const last = batch[batch.length - 1];
      if (!last) return;
      this.el.querySelector('.last').textContent = last.symbol + ' ' + formatPrice(last.bid) + ' / ' + formatPrice(last.ask);
      const now = nowMs();
      for (const q of batch) {
        if (q.ts === null) continue;
        this.stats.latency.add(now - q.ts / 1e6);
        this.hooks.newestTs = Math.max(this.hooks.newestTs ?? 0, q.ts);
      }
    });
  }

  /** Once a second: a point of each series, and the figures. */
  sample() {
    const p50 = this.stats.latency.percentile(0.5);
    const bpu = this.stats.bytesPerUpdate();
    push(this.history.latency, p50);
    push(this.history.bytes, bpu);
    Object.assign(this.hooks, { updates: this.updates, p50, bytesPerUpdate: bpu });
    const fig = this.el.querySelector('.figures');
    const delay = this.hooks.delayMs || 0;
    if (delay && this.updates === 0) {
      // A delayed user sees nothing newer than its delay: until the relay
      // has run that long, nothing moves.
      fig.textContent = 'no prices ' + Math.round(delay / 60000) + ' min old yet';
      return;
    }
    fig.textContent = (p50 === null ? '–' : latencyText(p50) + ' p50') + ' · ' +
      (bpu === null ? '–' : Math.round(bpu) + ' B/update') + ' · ' + this.updates + ' updates';
  }
}

/** "3.2 ms", "15.0 min": a delayed side's tick-to-screen is its delay. */
function latencyText(ms) {
  if (ms >= 60000) return (ms / 60000).toFixed(1) + ' min';
  if (ms >= 10000) return (ms / 1000).toFixed(1) + ' s';
  return ms.toFixed(1) + ' ms';
}

function push(a, v) {
  a.push(v);
  if (a.length > POINTS) a.shift();
}

/** Draws the two sides' series into an SVG chart; the scale goes in the
 *  caption (HTML text, so it is not stretched with the chart). */
function draw(svg, series, unit) {
  const w = 360;
  const h = 120;
  const max = Math.max(1e-9, ...series.flatMap((s) => s.filter((v) => v !== null)));
  const lines = series.map((s, i) => {
    const pts = [];
    s.forEach((v, j) => {
      if (v !== null) pts.push(((j + POINTS - s.length) * w) / (POINTS - 1) + ',' + (h - (v / max) * (h - 6)).toFixed(1));
    });
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('class', 'series s' + i);
    return line;
  });
  svg.replaceChildren(...lines);
  const scale = svg.parentElement.querySelector('.max');
  if (scale) scale.textContent = 'top ' + (max >= 100 ? Math.round(max) : max.toFixed(1)) + ' ' + unit;
}

export class Compare {
  /** opts: baseUrl, token, symbols() and batchMs() of the page. */
  constructor(opts) {
    this.opts = opts;
    this.el = document.querySelector('#compare');
    this.sides = null;
    this.timer = 0;
    this.symbolsTimer = 0;
    window.tickrelayCompare = { open: false };
  }

  toggle() {
    if (!this.el) return;
    if (this.sides) this.close();
    else this.open();
  }

  open() {
    this.el.hidden = false;
    document.querySelector('#compare-toggle')?.setAttribute('aria-pressed', 'true');
    this.sides = [
      new Side('a', this.el.querySelector('.side.a'), 'ws', this.opts),
      new Side('b', this.el.querySelector('.side.b'), 'poll', this.opts),
    ];
    for (const s of this.sides) s.start();
    window.tickrelayCompare = { open: true, a: this.sides[0].hooks, b: this.sides[1].hooks };
    this.timer = setInterval(() => this.tick(), 1000);
  }

  close() {
    clearInterval(this.timer);
    for (const s of this.sides) s.stop();
    this.sides = null;
    this.el.hidden = true;
    document.querySelector('#compare-toggle')?.setAttribute('aria-pressed', 'false');
    window.tickrelayCompare = { open: false };
  }

  tick() {
    for (const s of this.sides) s.sample();
    const [a, b] = this.sides;
    draw(this.el.querySelector('svg.latency'), [a.history.latency, b.history.latency], 'ms');
    draw(this.el.querySelector('svg.bytes'), [a.history.bytes, b.history.bytes], 'B/update');
  }

  /** The user changed: the sides of the page's user reconnect as the new
   *  one (and the user menus follow the relay's list). */
  userChanged() {
    this.symbolsChanged();
  }

  /** The watchlist changed: both sides follow (batched). */
  symbolsChanged() {
    if (!this.sides) return;
    clearTimeout(this.symbolsTimer);
    this.symbolsTimer = setTimeout(() => {
      if (this.sides) for (const s of this.sides) s.restart();
    }, 200);
  }
}
