/* tickrelay client — the SSE transport (part of tickrelay.js;
 * clients/js/README.md). */

import { HttpError, symParam } from './http.js';
import { toNum } from './prices.js';
import { cursorText, sessionOf } from './resume.js';
import { Transport } from './transport.js';

/** Server-Sent Events over a streamed fetch: one parser for browsers and
 *  Node, the HTTP status visible (a 404 names unknown symbols), and resume
 *  by our own cursor (`last_event_id`). */
export class SseTransport extends Transport {
  constructor(client) {
    super(client, 'sse');
    this.ctl = null;
  }

  async connect(gen) {
    const c = this.client;
    const syms = c.requestSymbols();
    const books = c.books.symbols();
    // Books alone: no `symbols=`, or the relay would stream every quote.
    let path = 'v1/stream?' + (syms.length ? 'symbols=' + symParam(syms) : '') + c.batchParam();
    if (books.length) {
      const depth = c.books.wireDepth();
      c.books.subscribed(books, depth);
      path += '&book=' + symParam(books) + '&depth=' + depth;
    }
    // Quotes after each symbol's first as deltas to its copy (deliver merges them).
    if (c.deltas) path += '&delta=1';
    if (c.cursor) path += '&last_event_id=' + encodeURIComponent(cursorText(c.cursor));
    const ctl = new AbortController();
    this.ctl = ctl;
    let shutdownMs = null;
    let ended = null; // the code of an `error` event: why the relay ends the stream
    try {
      // A token function is asked for every connection: a stream the relay
      // ended at the token's `exp` comes back with a fresh one.
      const token = await c.tokens.get();
      if (!this.live(gen)) return;
      c.traffic(0, 1);
      const res = await c.fetch(c.url(path), { signal: ctl.signal, headers: c.headers({ Accept: 'text/event-stream' }, token), cache: 'no-store' });
      if (!this.live(gen)) return;
      if (!res.ok) {
        const text = await res.text();
        c.traffic(text.length, 0);
        throw new HttpError(res.status, text);
      }
      this.up();
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (!this.live(gen)) return;
        if (done) break;
        c.traffic(value.byteLength, 0);
        buf += dec.decode(value, { stream: true });
        let m;
        while ((m = /\r?\n\r?\n/.exec(buf))) {
          // An event may have ended this connection (a protocol error reconnects).
          if (!this.live(gen)) return;
          const block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          const ev = parseSse(block);
          if (!ev) continue;
          const d = parseJson(ev.data);
          if (d === undefined) {
            c.protocolError('bad ' + ev.event + ' event');
            continue;
          }
          const session = sessionOf(ev.id);
          if (ev.event === 'snapshot') this.deliver(d, { kind: 'stream', session, snapshot: true });
          else if (ev.event === 'tick' || ev.event === 'message') this.deliver(d, { kind: 'stream', session });
          else if (ev.event === 'book') c.books.apply(d, { transport: this });
          else if (ev.event === 'feed') c.onFeed(d);
          else if (ev.event === 'shutdown') {
            shutdownMs = (toNum(d && d.reconnect_ms) ?? 1000) + Math.random() * 250;
            c.notice('server shutting down; reconnecting in ' + (shutdownMs / 1000).toFixed(1) + ' s');
          } else if (ev.event === 'error') {
            ended = d && d.code ? String(d.code) : null;
            if (ended === 'token_expired' && c.tokens.refreshable) c.notice('token expired; reconnecting with a fresh one');
            else c.notice('server: ' + ((d && (d.message || d.code)) || ev.data), true);
          }
        }
      }
    } catch (e) {
      if (!this.live(gen)) return; // closed on purpose
      c.noteRefused(e);
      return this.retry(e.message || 'stream failed', e instanceof HttpError ? this.refusedDelay(e.code, e.status, false) : undefined);
    } finally {
      if (this.ctl === ctl) this.ctl = null;
    }
    if (!this.live(gen)) return;
    if (ended) this.retry('stream ended: ' + ended, this.refusedDelay(ended, ended === 'token_expired' ? 401 : 0, true));
    else this.retry(shutdownMs !== null ? 'server restarting' : 'stream closed', shutdownMs ?? undefined);
  }

  close() {
    super.close();
    if (this.ctl) this.ctl.abort();
    this.ctl = null;
  }
}

/** One event of a stream's text (`event`, `id`, `data`), or null. */
export function parseSse(block) {
  let event = 'message';
  let id = '';
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line[0] === ':') continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let v = i < 0 ? '' : line.slice(i + 1);
    if (v[0] === ' ') v = v.slice(1);
    if (field === 'event') event = v;
    else if (field === 'data') data.push(v);
    else if (field === 'id') id = v;
  }
  return data.length ? { event, id, data: data.join('\n') } : null;
}

export function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return undefined;
  }
}
