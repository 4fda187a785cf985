/* tickrelay trading page: the depth ladder. Clicking a watchlist row's
 * symbol opens its book beside the table — ten levels a side, asks above
 * bids, best in the middle — kept live by the client library's watchBook
 * (its own WebSocket, every frame checked by prev and checksum). The ladder
 * follows the page's user (a user without the `book` channel, or a delayed
 * one, is told so). */

import { watchBook } from './tickrelay.js';
import { $ } from './settings.js';

const DEPTH = 10;

export class Ladder {
  /** opts: baseUrl, token (the page's token function). */
  constructor(opts) {
    this.opts = opts;
    this.el = { box: $('#ladder'), title: $('#ladder-symbol'), body: $('#ladder tbody'), note: $('#ladder-note') };
    this.watch = null;
    this.gen = 0; // which watch the callbacks belong to
    this.symbol = '';
    window.tickrelayLadder = { symbol: '', seq: null, frames: 0, gaps: 0, state: 'closed', bids: [], asks: [] };
    const close = $('#ladder-close');
    if (close) close.addEventListener('click', () => this.close());
  }

  /** Opens (or moves) the ladder to `symbol`. */
  open(symbol) {
    if (!this.el.box) return;
    this.stop();
    this.symbol = symbol;
    this.el.box.hidden = false;
    this.el.title.textContent = symbol;
    this.el.note.textContent = 'connecting…';
    this.el.body.replaceChildren();
    const gen = ++this.gen;
    const hooks = (window.tickrelayLadder = { symbol, seq: null, frames: 0, gaps: 0, state: 'connecting', bids: [], asks: [] });
    const w = watchBook(this.opts.baseUrl, symbol, {
      depth: DEPTH,
      token: this.opts.token,
      onBook: (book) => {
        if (this.gen !== gen) return;
        hooks.frames++;
        Object.assign(hooks, { seq: book.seq, bids: book.bids, asks: book.asks });
        this.render(book);
      },
      onStatus: (state, detail) => {
        if (this.gen !== gen) return;
        if (state === 'gap') hooks.gaps++;
        hooks.state = state;
        if (state === 'refused') this.el.note.textContent = (detail && detail.message) || 'not entitled to the book';
        else if (state === 'live') this.el.note.textContent = '';
        else if (state === 'connecting') this.el.note.textContent = 'connecting…';
      },
    });
    this.watch = w;
  }

  /** The user changed: the ladder reconnects as the new one. */
  userChanged() {
    if (this.symbol && this.watch) this.open(this.symbol);
  }

  stop() {
    const w = this.watch;
    this.watch = null;
    this.gen++;
    if (w) w.close();
  }

  close() {
    this.stop();
    this.symbol = '';
    if (this.el.box) this.el.box.hidden = true;
    window.tickrelayLadder = { symbol: '', seq: null, frames: 0, gaps: 0, state: 'closed', bids: [], asks: [] };
  }

  /** Asks (highest at the top) over bids, each row price, size, orders. */
  render(book) {
    const row = (side, l) => {
      const tr = document.createElement('tr');
      tr.className = side;
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
  }
}
