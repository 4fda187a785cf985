/* tickrelay trading page: the depth ladder. Clicking a watchlist row's
 * symbol opens its book beside the table — ten levels a side, asks above
 * bids, best in the middle, each level's size also drawn as a horizontal
 * bar (its width proportional to the size, against the largest shown) —
 * kept live by the page's own connection (the library's subscribeBook, on
 * whichever transport the page uses: every frame checked by prev and
 * checksum, resynced on a gap). A switch of transport or user opens a new
 * connection: the ladder follows it. */

import { $ } from './settings.js';

const DEPTH = 10;

const closedHooks = () => ({ symbol: '', transport: '', seq: null, frames: 0, gaps: 0, state: 'closed', bids: [], asks: [], bars: [] });

export class Ladder {
  constructor() {
    this.el = { box: $('#ladder'), title: $('#ladder-symbol'), body: $('#ladder tbody'), note: $('#ladder-note') };
    this.feed = null; // the page's connection (the library's handle)
    this.transport = '';
    this.sub = null;
    this.gen = 0; // which subscription the callbacks belong to
    this.symbol = '';
    window.tickrelayLadder = closedHooks();
    const close = $('#ladder-close');
    if (close) close.addEventListener('click', () => this.close());
  }

  /** The page opened a connection (a new transport or user): the open
   *  book moves to it. */
  attach(feed, transport) {
    this.feed = feed;
    this.transport = transport;
    if (this.symbol) this.open(this.symbol);
  }

  /** The connection reported a gap in `symbol`'s book (resynced by it). */
  gap(symbol) {
    const hooks = window.tickrelayLadder;
    if (symbol !== this.symbol || !hooks) return;
    hooks.gaps++;
    this.el.note.textContent = 'resyncing…';
  }

  /** Opens (or moves) the ladder to `symbol`. */
  open(symbol) {
    if (!this.el.box) return;
    this.stop();
    this.symbol = symbol;
    this.el.box.hidden = false;
    this.el.title.textContent = symbol;
    this.el.note.textContent = 'waiting for the book…';
    this.el.body.replaceChildren();
    const gen = ++this.gen;
    const hooks = (window.tickrelayLadder = { ...closedHooks(), symbol, transport: this.transport, state: 'connecting' });
    if (!this.feed) return;
    this.sub = this.feed.subscribeBook(symbol, DEPTH, (book) => {
      if (this.gen !== gen) return;
      hooks.frames++;
      hooks.state = 'live';
      Object.assign(hooks, { seq: book.seq, bids: book.bids, asks: book.asks });
      this.el.note.textContent = '';
      hooks.bars = this.render(book);
    });
  }

  stop() {
    const s = this.sub;
    this.sub = null;
    this.gen++;
    if (s) s.close();
  }

  close() {
    this.stop();
    this.symbol = '';
    if (this.el.box) this.el.box.hidden = true;
    window.tickrelayLadder = closedHooks();
  }

  /** Asks (highest at the top) over bids, each row a size bar, orders,
   *  size and price. Returns the bars' widths (percent), top row first. */
  render(book) {
    const largest = Math.max(1, ...book.bids.map((l) => l.size), ...book.asks.map((l) => l.size));
    const widths = [];
    const row = (side, l) => {
      const tr = document.createElement('tr');
      tr.className = side;
      const cell = document.createElement('td');
      cell.className = 'bar';
      const bar = document.createElement('div');
      const pct = (100 * l.size) / largest;
      bar.style.width = pct.toFixed(2) + '%';
      widths.push(Number(pct.toFixed(2)));
      cell.appendChild(bar);
      tr.appendChild(cell);
      for (const [cls, text] of [['ord', l.orders], ['size', l.size], ['price', l.price]]) {
        const td = document.createElement('td');
        td.className = cls;
        td.textContent = String(text);
        tr.appendChild(td);
      }
      return tr;
    };
    const asks = book.asks.slice().reverse().map((l) => row('ask', l));
    const bids = book.bids.map((l) => row('bid', l));
    this.el.body.replaceChildren(...asks, ...bids);
    return widths;
  }
}
