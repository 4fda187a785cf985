/* tickrelay trading page: who the page connects as. The user menu —
 * anonymous (or the URL's `?token=`), and the demo's users when the relay
 * offers them (`tickrelay demo`: `/v1/demo/users`) — the token of the one
 * chosen, handed to the library as a function so every connection and
 * request asks for it afresh, and the "delayed" badge, read from the
 * token's own `delay_ms` claim. */

import { tokenClaims } from './tickrelay.js';
import { $, BASE_URL, pageParams, store } from './settings.js';

/** A bearer token in the page's URL (docs/PROTOCOL.md, "Authentication"). */
const URL_TOKEN = pageParams.get('token');

/** "15 min", "30 s": a delay for the badge. */
function delayText(ms) {
  if (ms % 60000 === 0) return ms / 60000 + ' min';
  return Math.round(ms / 1000) + ' s';
}

export class Users {
  /** `reconnecting()`: whether the page's connection is down, so a token
   *  asked for now is for a reconnect (the demo may have been restarted
   *  with a new secret: its users are fetched again). */
  constructor(reconnecting) {
    this.reconnecting = reconnecting;
    this.list = []; // [{name, label, token}]
    this.chosen = ''; // '' for anonymous (or the URL's token)
    this.fetchedAt = 0;
    this.el = { ctl: $('#user-ctl'), select: $('#user'), badge: $('#delayed') };
  }

  /** Asks the relay for its demo users; a relay that has none (anything but
   *  `tickrelay demo`) answers 404 and the menu stays hidden. */
  async load() {
    this.fetchedAt = performance.now();
    let users = null;
    try {
      const headers = URL_TOKEN ? { Authorization: 'Bearer ' + URL_TOKEN } : {};
      const res = await fetch(new URL('v1/demo/users', BASE_URL), { headers, cache: 'no-store' });
      if (res.ok) users = (await res.json()).users;
    } catch (_) { /* relay down: keep what we have */ }
    if (!Array.isArray(users)) return;
    this.list = users.filter((u) => u && typeof u.name === 'string' && typeof u.token === 'string');
    const { ctl, select } = this.el;
    if (!ctl || !select) return;
    const anonymous = new Option(URL_TOKEN ? 'your token' : 'anonymous', '');
    select.replaceChildren(anonymous, ...this.list.map((u) => new Option(u.label || u.name, u.name)));
    ctl.hidden = this.list.length === 0;
    if (!this.chosen) {
      const saved = store.get('user', '');
      if (this.list.some((u) => u.name === saved)) this.chosen = saved;
    }
    select.value = this.chosen;
    this.render();
  }

  /** Chooses user `name` ('' for anonymous); returns whether it changed. */
  choose(name) {
    const next = this.list.some((u) => u.name === name) ? name : '';
    if (next === this.chosen) return false;
    this.chosen = next;
    store.set('user', next);
    if (this.el.select) this.el.select.value = next;
    this.render();
    return true;
  }

  /** The token the page uses now, without asking the relay. */
  current() {
    const u = this.list.find((x) => x.name === this.chosen);
    return u ? u.token : URL_TOKEN;
  }

  /** The library's `token` function: the chosen user's token, fetched again
   *  for a reconnect (at most every 2 s). */
  async token() {
    if (this.chosen && this.reconnecting() && performance.now() - this.fetchedAt > 2000) await this.load();
    return this.current();
  }

  /** A `token` function for user `name` ('' for the page's own user): the
   *  compare view connects its two sides as two users side by side. */
  tokenFor(name) {
    if (!name) return () => this.token();
    return async () => {
      if (this.reconnecting() && performance.now() - this.fetchedAt > 2000) await this.load();
      const u = this.list.find((x) => x.name === name);
      return u ? u.token : URL_TOKEN;
    };
  }

  /** The data delay of user `name` (default: the page's user) from its
   *  token's claims (0: real time). */
  delayMs(name = this.chosen) {
    const u = this.list.find((x) => x.name === name);
    const claims = tokenClaims(u ? u.token : this.current());
    const d = claims && claims.tickrelay ? Number(claims.tickrelay.delay_ms) : 0;
    return Number.isFinite(d) && d > 0 ? d : 0;
  }

  /** "delayed 15 min", or '' for real time. */
  delayLabel(name = this.chosen) {
    const d = this.delayMs(name);
    return d ? 'delayed ' + delayText(d) : '';
  }

  /** The badge: shown while the user's data is delayed. */
  render() {
    const delay = this.delayMs();
    const badge = this.el.badge;
    if (badge) {
      badge.hidden = delay === 0;
      badge.textContent = this.delayLabel();
    }
    document.body.classList.toggle('delayed', delay > 0);
  }
}
