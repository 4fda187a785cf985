/* tickrelay client — what every transport shares (part of tickrelay.js;
 * clients/js/README.md). */

import { backoff, now } from './time.js';

// ---------------------------------------------------------------------------
// Transports. Each owns one connection at a time, reconnects itself with
// backoff, and hands envelopes to the client; the client owns the resume
// cursor. `gen` guards every async callback: after a stop or a reconnect,
// callbacks of the old connection fall silent.
// ---------------------------------------------------------------------------

export class Transport {
  constructor(client, name) {
    this.client = client;
    this.name = name;
    this.gen = 0;
    this.attempt = 0;
    this.timer = 0;
    this.running = false;
    this.upAt = 0;
    this.everUp = false;
  }

  start() {
    this.running = true;
    this.open();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.close();
    this.gen++;
  }

  /** (Re)connects now; idles while there is nothing to subscribe to. */
  open() {
    clearTimeout(this.timer);
    this.close();
    const gen = ++this.gen;
    if (!this.running) return;
    if (!this.client.requestSymbols().length) {
      this.client.transportIdle(this);
      return;
    }
    this.client.transportConnecting(this);
    this.connect(gen);
  }

  live(gen) {
    return this.running && gen === this.gen;
  }

  /** The connection works: report it once per connection. */
  up() {
    if (this.upAt) return;
    this.upAt = now();
    this.everUp = true;
    this.client.transportUp(this);
  }

  /** Drops the connection and schedules the next attempt. */
  retry(reason, delayMs) {
    if (!this.running) return;
    // A connection that stayed up a while was healthy: restart the backoff.
    if (this.upAt && now() - this.upAt > 5000) this.attempt = 0;
    this.close();
    this.gen++;
    if (this.client.transportFailed(this, reason)) return; // `auto` moved on
    const delay = delayMs ?? backoff(this.attempt);
    this.attempt++;
    this.client.transportDown(this, delay, reason);
    this.timer = setTimeout(() => this.open(), delay);
  }

  /**
   * The wait before reconnecting after the relay refused or ended the
   * connection with error `code` (HTTP `status`; a WebSocket's 4001 counts
   * as 401, 4009 as 429). `served`: the relay had taken the token and
   * served this connection. A `token_expired` then, with a token function:
   * at once, asking it for a fresh token. A token refused at the door,
   * expired or not (401), or a limit (429): at least 5 s, so a function
   * that keeps giving a bad token does not hammer the relay. Otherwise
   * undefined: the usual backoff.
   */
  refusedDelay(code, status, served) {
    if (code === 'token_expired' && served && this.client.tokens.refreshable) return Math.random() * 250;
    if (status === 401 || status === 429) return Math.max(5000, backoff(this.attempt));
    return undefined;
  }

  /** Retry now if waiting in backoff (e.g. the network came back). */
  kick() {
    if (this.running && !this.upAt) this.open();
  }

  /** Subscriptions changed. URL-bound transports reconnect with the new list. */
  symbolsChanged() {
    if (this.running) this.open();
  }

  connect(_gen) {}

  /** The client moved the resume cursor backwards or to a new session. */
  cursorReset() {}

  close() {
    this.upAt = 0;
  }
}
