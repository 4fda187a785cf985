/* tickrelay trading page: the quote table. One row per watched symbol: its
 * cells, their prices (flashed when they move), the change against the
 * previous close and the quote's age. */

import { formatPrice, intFmt, setText } from './format.js';

const FLASH_MS = 700; // keep in step with the flash animations in app.css
const CELLS = ['sym', 'name', 'bsz', 'bid', 'ask', 'asz', 'last', 'net', 'chg', 'vol', 'age', 'x'];

/** A new row for `sym` at the end of `tbody`; `directory` names it. */
export function createRow(tbody, sym, directory) {
  const tr = document.createElement('tr');
  tr.dataset.symbol = sym;
  const cells = {};
  for (const k of CELLS) {
    const td = document.createElement('td');
    td.className = k;
    tr.appendChild(td);
    cells[k] = td;
  }
  cells.sym.textContent = sym;
  const info = directory.get(sym);
  cells.name.textContent = info ? info.name : '';
  if (info) cells.name.title = info.name;
  if (directory.size && !info) {
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
  tbody.appendChild(tr);
  return { symbol: sym, tr, cells, q: null, session: null, seq: -1, shown: {}, serverUnknown: false };
}

/** Writes the row's quote into its cells; `info` is its directory entry. */
export function renderRow(row, info, now) {
  const q = row.q;
  const c = row.cells;
  row.tr.dataset.seq = q ? String(q.seq) : '';
  if (!q) {
    for (const k of ['bsz', 'bid', 'ask', 'asz', 'last', 'net', 'chg', 'vol', 'age']) c[k].textContent = '';
    return;
  }
  setPrice(row, 'bid', q.bid);
  setPrice(row, 'ask', q.ask);
  setPrice(row, 'last', q.last);
  setText(c.bsz, q.bidSize === null || q.bid === null ? '' : intFmt.format(q.bidSize));
  setText(c.asz, q.askSize === null || q.ask === null ? '' : intFmt.format(q.askSize));
  setText(c.vol, q.volume === null ? '' : intFmt.format(q.volume));

  // Change against the previous close; the last trade, else the mid.
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
  renderAge(row, now);
}

/** Writes a price cell and flashes it green/red when it moved. */
function setPrice(row, key, v) {
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
  const t = performance.now();
  if (t - (cell._flashAt || -Infinity) < FLASH_MS) return;
  cell._flashAt = t;
  // Alternate between two identical animations so a new flash restarts it.
  const k = (cell._flip = cell._flip ? 0 : 1);
  cell.classList.remove('up0', 'up1', 'dn0', 'dn1');
  cell.classList.add(dir + k);
}

/** The quote's age (wall clock `now`, ms), greyed after 30 s. */
export function renderAge(row, now) {
  if (!row.q || row.q.tsMs === null) return;
  const s = Math.max(0, (now - row.q.tsMs) / 1000);
  setText(row.cells.age, (s < 10 ? s.toFixed(1) : String(Math.round(s))) + 's');
  row.cells.age.classList.toggle('old', s >= 30);
}

/** Scrolls to the row and flashes it. */
export function highlightRow(row) {
  row.tr.scrollIntoView({ block: 'nearest' });
  row.tr.classList.remove('hl');
  void row.tr.offsetWidth; // restart the animation
  row.tr.classList.add('hl');
}
