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
  }

  async connect(gen) {
    const c = this.client;
    while (this.live(gen)) {
      const syms = c.requestSymbols();
      if (!syms.length) return this.open();
      // After a failure, the first poll answers soon even if nothing changed,
      // so a restarted server's new cursor is learnt without a long wait.
      const timeout = this.afterFailure ? 2000 : c.pollTimeoutMs;
      let path = 'v1/poll?symbols=' + symParam(syms) + '&timeout_ms=' + timeout + c.batchParam();
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
