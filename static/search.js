/* tickrelay trading page: the symbol search box. Type-ahead over the
 * directory (exact ticker, then prefixes, then names), arrow keys, Enter to
 * add, Escape to leave, "/" to focus from anywhere. */

import { formatPrice } from './format.js';
import { SYMBOL_RE } from './settings.js';

/** Exact ticker first, then ticker prefixes, then name matches. */
export function searchDirectory(dirList, q, limit) {
  const exact = [];
  const prefix = [];
  const name = [];
  const lq = q.toLowerCase();
  for (const d of dirList) {
    if (d.symbol === q) exact.push(d);
    else if (d.symbol.startsWith(q)) { if (prefix.length < limit) prefix.push(d); }
    else if (name.length < limit && d.name.toLowerCase().includes(lq)) name.push(d);
    if (exact.length && prefix.length >= limit) break;
  }
  return exact.concat(prefix, name).slice(0, limit);
}

/** Wires the search box to the page: `page` has `dirList`, `dirAt`, `rows`,
 *  `add(symbol)` and `loadDirectory()`. */
export function bindSearch(page, input, list) {
  let items = [];
  let sel = 0;

  const close = () => {
    list.hidden = true;
    items = [];
  };
  const show = () => {
    const q = input.value.trim().toUpperCase();
    if (!q) return close();
    items = searchDirectory(page.dirList, q, 12);
    // Not in the (possibly stale) directory but a valid ticker: offer it anyway.
    if (!items.length && SYMBOL_RE.test(q)) items = [{ symbol: q, name: '', prevClose: null, adhoc: true }];
    sel = 0;
    list.replaceChildren(...items.map((d, i) => {
      const li = document.createElement('li');
      li.setAttribute('role', 'option');
      li.dataset.symbol = d.symbol;
      if (i === sel) li.classList.add('sel');
      if (page.rows.has(d.symbol)) li.classList.add('have');
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
    page.add(sym);
    input.value = '';
    close();
  };

  input.addEventListener('input', show);
  input.addEventListener('focus', () => {
    // The directory grows as the feed announces symbols; refresh if old.
    if (performance.now() - page.dirAt > 30000) page.loadDirectory().then(show).catch(() => {});
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
