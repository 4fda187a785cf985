/* tickrelay trading page: what the page is told and remembers. The URL's
 * parameters, the saved settings (localStorage), the limits the page keeps
 * to, and the symbol directory over REST (not part of the streaming
 * client). */

import { HttpError, parseDecimal } from './tickrelay.js';

export const $ = (sel) => document.querySelector(sel);
export const pageParams = new URLSearchParams(location.search);
export const SYMBOL_RE = /^[A-Z0-9.\-/_^*]{1,16}$/; // the server's ticker syntax
export const MAX_WATCH = 500; // well under the server's per-request limit (1024)
export const DEFAULT_WATCH = 20; // a screenful at 1280x800
// Screen batching (batch_ms): the server gathers changes for up to one
// frame of a 60 Hz screen. Switchable in the header; on by default.
const BATCH_MS = 16;
// Relative, so the page also works behind a path-prefixing proxy.
export const BASE_URL = new URL('.', location.href).href;

export const store = {
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

export const batchMs = () => (store.get('batch', true) ? BATCH_MS : 0);

/** The directory over REST, as `token`'s user sees it: a Map symbol →
 *  {symbol, name, prevClose}. */
export async function fetchDirectory(token) {
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const res = await fetch(new URL('v1/symbols', BASE_URL), { headers, cache: 'no-store' });
  const text = await res.text();
  if (!res.ok) throw new HttpError(res.status, text);
  const data = JSON.parse(text);
  const list = Array.isArray(data) ? data : data && Array.isArray(data.symbols) ? data.symbols : [];
  const dir = new Map();
  for (const e of list) {
    const d = typeof e === 'string' ? { symbol: e } : e;
    if (!d || d.symbol == null) continue;
    const symbol = String(d.symbol).toUpperCase();
    const prev = d.prev_close == null ? null : parseDecimal(String(d.prev_close));
    dir.set(symbol, { symbol, name: d.name ? String(d.name) : '', prevClose: prev });
  }
  return dir;
}
