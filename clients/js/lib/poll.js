/* tickrelay client — the long-poll transport (part of tickrelay.js;
 * clients/js/README.md). */

import { HttpError, symParam } from './http.js';
import { cursorText } from './resume.js';
import { now } from './time.js';
import { Transport } from './transport.js';

/** Long polling: one request held by the server, re-issued at once with the returned cursor. */
export class LongPollTransport extends Transport {
  constructor(client) {
    super(client, 'poll');
    this.ctl = null;
    this.afterFailure = false;
    this.inflightSince = '';
    /** Books with no copy yet on this connection (read over REST). */
    this.booksToRead = new Set();
  }

  async readBooks(gen) {
    const list = [...this.booksToRead];
    this.booksToRead.clear();
    try {
      await this.client.books.fetch(list, this.client.books.wireDepth(), this);
    } catch (e) {
      if (this.live(gen)) for (const s of list) this.booksToRead.add(s);
    }
  }

  resyncBooks(symbols) {
    for (const s of symbols) this.booksToRead.add(s);
    this.readBooks(this.gen);
  }

  booksChanged(added) {
    if (this.running && this.upAt) {
      for (const s of added) this.booksToRead.add(s);
      this.restart();
      this.readBooks(this.gen);
    } else super.booksChanged();
  }

  async connect(gen) {
    const c = this.client;
    if (!this.upAt && c.books.size) {
      // A poll with `since` answers only the books changed after it: a new
      // connection reads its books over REST first.
      for (const s of c.books.symbols()) this.booksToRead.add(s);
      this.readBooks(gen);
    }
    while (this.live(gen)) {
      const syms = c.requestSymbols();
      const books = c.books.symbols();
      if (!syms.length && !books.length) return this.open();
      // After a failure, the first poll answers soon even if nothing changed,
      // so a restarted server's new cursor is learnt without a long wait.
      const timeout = this.afterFailure ? 2000 : c.pollTimeoutMs;
      // Books alone: no `symbols=`, or the relay would answer every quote.
      let path = 'v1/poll?' + (syms.length ? 'symbols=' + symParam(syms) + '&' : '') + 'timeout_ms=' + timeout + c.batchParam();
      if (books.length) path += '&book=' + symParam(books) + '&depth=' + c.books.wireDepth();
      const since = cursorText(c.cursor);
      if (since) path += '&since=' + encodeURIComponent(since);
      const ctl = new AbortController();
      this.ctl = ctl;
      this.inflightSince = since;
      const guard = setTimeout(() => ctl.abort(), timeout + 10000); // a hung server
      // The server holds a quiet poll; a refused connection fails within
      // milliseconds. Still pending after 1 s means it is up.
      const upTimer = setTimeout(() => this.live(gen) && this.up(), 1000);
      const t0 = now();
      let env;
      try {
        const r = await c.http(path, { signal: ctl.signal });
        if (!this.live(gen)) return;
        if (!r.ok) throw new HttpError(r.status, r.text);
        env = JSON.parse(r.text);
      } catch (e) {
        if (!this.live(gen)) return; // aborted on purpose
        this.afterFailure = true;
        c.noteRefused(e);
        // A poll the relay held (over a second: as `upTimer`) and answered
        // 401 at the token's `exp` had been let in with that token.
        return this.retry(e.message || 'poll failed', e instanceof HttpError ? this.refusedDelay(e.code, e.status, now() - t0 > 1000) : undefined);
      } finally {
        clearTimeout(guard);
        clearTimeout(upTimer);
        if (this.ctl === ctl) this.ctl = null;
      }
      this.afterFailure = false;
      this.up();
      c.onEnvelope(env, { kind: 'stream' });
      if (Array.isArray(env.books)) {
        for (const b of env.books) c.books.apply(b, { transport: this, poll: true, session: String(env.session) });
      }
      if (this.booksToRead.size) this.readBooks(gen); // a REST read that failed
      // Loop at once, unless the server answers empty instantly with nothing
      // new, which would otherwise become a hot loop.
      if ((!env.quotes || !env.quotes.length) && now() - t0 < 100 && cursorText(c.cursor) === since) {
        await new Promise((r) => { this.timer = setTimeout(r, 1000); });
      }
    }
  }

  /** Re-issues the held poll without dropping the connection state. */
  restart() {
    const ctl = this.ctl;
    this.ctl = null;
    const gen = ++this.gen;
    if (ctl) ctl.abort();
    this.connect(gen);
  }

  /** A held poll with an outdated `since` could wait out its whole timeout. */
  cursorReset() {
    if (this.running && this.ctl && this.inflightSince !== cursorText(this.client.cursor)) this.restart();
  }

  symbolsChanged() {
    if (this.running && this.upAt) this.restart();
    else super.symbolsChanged();
  }

  close() {
    super.close();
    if (this.ctl) this.ctl.abort();
    this.ctl = null;
  }
}
