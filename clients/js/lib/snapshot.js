/* tickrelay client — the short-poll transport, `snapshot` (part of
 * tickrelay.js; clients/js/README.md). */

import { HttpError, symParam } from './http.js';
import { now } from './time.js';
import { Transport } from './transport.js';

/** Short polling: the REST snapshot every `pollIntervalMs`, with If-None-Match → 304. */
export class ShortPollTransport extends Transport {
  constructor(client) {
    super(client, 'snapshot');
    this.ctl = null;
    this.etag = null;
  }

  async connect(gen) {
    const c = this.client;
    while (this.live(gen)) {
      const syms = c.requestSymbols();
      if (!syms.length && !c.books.size) return this.open();
      const t0 = now();
      const ctl = new AbortController();
      this.ctl = ctl;
      const guard = setTimeout(() => ctl.abort(), 15000);
      try {
        // Books are read whole over REST, like the quotes.
        if (c.books.size) await c.books.fetch(c.books.symbols(), c.books.wireDepth(), this);
        if (!this.live(gen)) return;
        if (syms.length) await this.quotes(syms, ctl, gen, t0);
        else this.up();
      } catch (e) {
        if (!this.live(gen)) return;
        c.noteRefused(e);
        return this.retry(e.message || 'snapshot failed', e instanceof HttpError ? this.refusedDelay(e.code, e.status, false) : undefined);
      } finally {
        clearTimeout(guard);
      }
      // Fixed rate: the interval counts from the start of the request.
      const wait = c.pollIntervalMs - (now() - t0);
      if (wait > 0) await new Promise((r) => { this.timer = setTimeout(r, wait); });
    }
  }

  /** One round of the quotes: the snapshot, or a 304. */
  async quotes(syms, ctl, gen, t0) {
    const c = this.client;
    const headers = this.etag ? { 'If-None-Match': this.etag } : {};
    const r = await c.http('v1/snapshot?symbols=' + symParam(syms), { signal: ctl.signal, headers });
    if (!this.live(gen)) return;
    if (r.status === 304) {
      this.up();
    } else if (r.ok) {
      const env = JSON.parse(r.text);
      this.etag = r.headers.get('ETag');
      this.up();
      c.onEnvelope(env, { kind: 'full', sentAt: t0 });
    } else {
      throw new HttpError(r.status, r.text);
    }
  }

  symbolsChanged() {
    this.etag = null; // a different symbol set has a different ETag
    super.symbolsChanged();
  }

  close() {
    super.close();
    if (this.ctl) this.ctl.abort();
    this.ctl = null;
  }
}
