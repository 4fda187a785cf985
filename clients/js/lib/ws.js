/* tickrelay client — the WebSocket transport, JSON text or MessagePack
 * binary frames, and the refresh of the user's token on the open
 * connection (part of tickrelay.js; clients/js/README.md). */

import { expiresAt, refreshDelay } from './auth.js';
import { decodeMsgpack } from './msgpack.js';
import { toNum } from './prices.js';
import { cursorText } from './resume.js';
import { now } from './time.js';
import { Transport } from './transport.js';

function closeReason(e) {
  const known = {
    1001: 'server going away',
    1006: 'connection lost',
    4001: 'unauthorized',
    4008: 'slow consumer',
    4009: 'limit exceeded',
    4010: 'no pong',
  };
  return 'closed ' + e.code + (e.reason ? ' ' + e.reason : known[e.code] ? ' ' + known[e.code] : '');
}

/** The error code a close reason starts with (`token_expired: …`), or ''. */
const reasonCode = (reason) => (/^([a-z_]+):/.exec(reason || '') || ['', ''])[1];

/** WebSocket, JSON text or MessagePack binary frames. */
export class WsTransport extends Transport {
  constructor(client, msgpack) {
    super(client, msgpack ? 'ws-msgpack' : 'ws');
    this.msgpack = msgpack;
    this.ws = null;
    this.heartbeat = 0;
    this.openTimer = 0;
    this.lastRx = 0;
    this.shutdownMs = null;
    this.refreshTimer = 0;
    this.refreshAt = 0;
    this.warnedStatic = false;
    this.served = false; // this connection had a frame from the relay
  }

  async connect(gen) {
    const c = this.client;
    const WS = c.WebSocket;
    let ws;
    let token;
    try {
      if (!WS) throw new Error('no WebSocket here (Node 20: --experimental-websocket, or pass WebSocket)');
      // A token function is asked for every connection.
      token = await c.tokens.get();
      if (!this.live(gen)) return;
      const url = c.url('v1/ws', true, token);
      ws = this.msgpack ? new WS(url, 'tickrelay.msgpack') : new WS(url);
    } catch (e) {
      this.retry(String(e.message || e));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.shutdownMs = null;
    this.served = false;
    c.traffic(0, 1); // the upgrade request

    ws.onopen = () => {
      if (!this.live(gen)) return;
      this.lastRx = now();
      this.subscribe(c.requestSymbols(), c.cursor);
      this.subscribeBooks(c.books.symbols());
      this.planRefresh(gen, expiresAt(token));
      // Server pings are invisible to JavaScript, so we ping too: the pongs
      // prove the path is alive even when the watchlist is quiet.
      this.heartbeat = setInterval(() => {
        if (!this.live(gen)) return;
        if (now() - this.lastRx > 25000) this.retry('no data for 25 s');
        else this.send({ op: 'ping' });
      }, 10000);
      this.up();
    };

    ws.onmessage = (e) => {
      if (!this.live(gen)) return;
      this.lastRx = now();
      this.served = true;
      let frame;
      let rawInts = false;
      try {
        if (typeof e.data === 'string') {
          c.traffic(e.data.length, 0);
          frame = JSON.parse(e.data);
        } else {
          c.traffic(e.data.byteLength, 0);
          frame = decodeMsgpack(e.data);
          rawInts = true;
        }
      } catch (err) {
        c.protocolError('bad frame: ' + err.message);
        return;
      }
      this.onFrame(frame, rawInts);
    };

    ws.onclose = (e) => {
      if (!this.live(gen)) return;
      this.ws = null;
      const status = e.code === 4001 ? 401 : e.code === 4009 ? 429 : 0;
      // A token refused at the upgrade is closed before any frame: served
      // is false then, and the retry waits.
      this.retry(closeReason(e), this.shutdownMs ?? this.refusedDelay(reasonCode(e.reason), status, this.served));
    };

    // Browsers follow an error with a close event that has the details;
    // Node 20's WebSocket fires only the error when it cannot connect, and
    // a hung handshake fires nothing: both count as a failed attempt here.
    ws.onerror = () => {
      if (this.live(gen) && !this.upAt) {
        this.ws = null;
        this.retry('cannot connect');
      }
    };
    this.openTimer = setTimeout(() => {
      if (this.live(gen) && !this.upAt) this.retry('no answer in 10 s');
    }, 10000);
  }

  onFrame(f, rawInts) {
    if (!f || typeof f !== 'object') return;
    const c = this.client;
    switch (f.type) {
      case 'snapshot':
        // Catch-up after (re)subscribing: its quotes may be old, so they are
        // marked as a snapshot, not as fresh ticks.
        this.deliver(f, { kind: 'stream', rawInts, snapshot: true });
        break;
      case 'ticks':
        this.deliver(f, { kind: 'stream', rawInts });
        break;
      case 'book':
        c.books.apply(f, { rawInts, transport: this });
        break;
      case 'subscribed':
        if (Array.isArray(f.unknown) && f.unknown.length) c.markUnknown(f.unknown.map(String));
        if (Array.isArray(f.denied) && f.denied.length) c.markDenied(f.denied.map(String), 'not_entitled');
        break;
      case 'unsubscribed':
        // A refreshed token no longer allows these: the relay dropped them.
        if (Array.isArray(f.symbols) && f.symbols.length) c.markDenied(f.symbols.map(String), f.reason);
        break;
      case 'auth_expiring': {
        const ms = toNum(f.in_ms);
        if (ms !== null) this.planRefresh(this.gen, Date.now() + ms);
        if (!c.tokens.refreshable && !this.warnedStatic) {
          this.warnedStatic = true;
          c.notice('the token expires in ' + Math.round((ms ?? 0) / 1000) + ' s; pass `token` as a function to refresh it', true);
        }
        break;
      }
      case 'authorized':
        this.planRefresh(this.gen, toNum(f.expires_ms));
        break;
      case 'feed':
        c.onFeed(f);
        break;
      case 'error':
        c.notice('server: ' + (f.message || f.code), true);
        break;
      case 'shutdown': {
        // Spread reconnects over the server's hint so clients don't stampede.
        const ms = toNum(f.reconnect_ms);
        this.shutdownMs = (ms ?? 1000) + Math.random() * 250;
        c.notice('server shutting down; reconnecting in ' + (this.shutdownMs / 1000).toFixed(1) + ' s');
        break;
      }
      default:
        break;
    }
  }

  /**
   * Refreshes the token before `expMs` (ms since the epoch; see
   * refreshDelay), or keeps a refresh already due sooner. Only a token
   * function can give a fresh token.
   */
  planRefresh(gen, expMs) {
    if (expMs === null || expMs === undefined || !this.client.tokens.refreshable || !this.live(gen)) return;
    const at = Date.now() + refreshDelay(expMs - Date.now());
    if (this.refreshTimer && this.refreshAt <= at) return;
    clearTimeout(this.refreshTimer);
    this.refreshAt = at;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = 0;
      this.refresh(gen);
    }, Math.max(0, at - Date.now()));
  }

  /** Asks the token function for a fresh token and hands it to the open
   *  connection (`{"op":"auth"}`): the relay answers `authorized`, or an
   *  `error` (the connection then ends at the old `exp`, and reconnects). */
  async refresh(gen) {
    const c = this.client;
    let token;
    try {
      token = await c.tokens.get();
    } catch (e) {
      if (this.live(gen)) c.notice('token refresh failed: ' + (e.message || e), true);
      return;
    }
    if (!this.live(gen) || !token) return;
    this.send({ op: 'auth', token });
    this.planRefresh(gen, expiresAt(token));
  }

  send(obj) {
    if (this.ws && this.ws.readyState === 1) {
      const text = JSON.stringify(obj);
      this.ws.send(text);
      if (obj.op !== 'ping') this.client.traffic(0, 1);
    }
  }

  subscribe(symbols, cursor) {
    if (!symbols.length) return;
    const msg = { op: 'subscribe', symbols, mode: 'conflate' };
    if (this.client.batchMs) msg.batch_ms = this.client.batchMs;
    // Quotes after each symbol's first as deltas to its copy (deliver merges them).
    if (this.client.deltas) msg.delta = true;
    if (cursor) msg.since = cursorText(cursor);
    this.send(msg);
  }

  /** Subscribes `symbols`' books, each at its own depth: their copies
   *  start again from the snapshot the relay answers (`fresh`: new
   *  subscriptions; a resync keeps dropping diffs until that snapshot). */
  subscribeBooks(symbols, fresh = true) {
    const byDepth = new Map();
    for (const s of symbols) {
      const e = this.client.books.get(s);
      if (!e) continue;
      if (!byDepth.has(e.depth)) byDepth.set(e.depth, []);
      byDepth.get(e.depth).push(s);
    }
    for (const [depth, list] of byDepth) {
      if (fresh) this.client.books.subscribed(list, depth);
      this.send({ op: 'subscribe', channel: 'book', symbols: list, depth });
    }
  }

  resyncBooks(symbols) {
    if (this.ws && this.ws.readyState === 1) this.subscribeBooks(symbols, false);
  }

  /** Books change in place too (onopen subscribes them on a new connection). */
  booksChanged(added, removed) {
    if (!this.running) return;
    const ws = this.ws;
    if (ws && ws.readyState === 0) return;
    if (!ws || ws.readyState !== 1) {
      this.open();
      return;
    }
    if (removed.length) this.send({ op: 'unsubscribe', channel: 'book', symbols: removed });
    this.subscribeBooks(added);
  }

  /** A WebSocket changes its subscription in place, without reconnecting. */
  symbolsChanged(added, removed, since) {
    if (!this.running) return;
    const ws = this.ws;
    if (ws && ws.readyState === 0) return; // onopen subscribes the current list
    if (!ws || ws.readyState !== 1) {
      this.open();
      return;
    }
    if (removed.length) this.send({ op: 'unsubscribe', symbols: removed });
    this.subscribe(added, since);
  }

  close() {
    super.close();
    clearInterval(this.heartbeat);
    clearTimeout(this.openTimer);
    clearTimeout(this.refreshTimer);
    this.refreshTimer = 0;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch (_) { /* already closed */ }
    }
  }
}
