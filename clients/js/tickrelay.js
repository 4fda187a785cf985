/* tickrelay — the JavaScript client (clients/js/README.md).
 *
 *   import { connect } from './tickrelay.js';
 *   const feed = connect('http://127.0.0.1:8080/', {
 *     symbols: ['AAPL', 'MSFT'],
 *     transport: 'auto',             // 'ws' | 'ws-msgpack' | 'sse' | 'poll' | 'snapshot'
 *     onQuote: (q) => console.log(q.symbol, q.bid, q.ask),
 *     onStatus: (s) => console.log(s.connection, s.feed.status),
 *   });
 *   feed.subscribe(['NVDA']); feed.unsubscribe(['MSFT']); feed.close();
 *
 * What it does for the caller: loads the snapshot over REST first, then
 * streams changes over the chosen transport; reconnects with jittered
 * backoff and resumes by `since` / Last-Event-ID (the relay's seq promise
 * makes that lossless); `auto` falls back WebSocket → SSE → long polling
 * when one cannot connect; a new feed session (a restarted relay or feed)
 * is detected and the watchlist re-read. Prices stay exact decimal strings
 * ("189.1200"); the price helpers below compare and format them without
 * floats. MessagePack frames are decoded here, prices from their fixed-point
 * integers.
 *
 * No build step, no dependencies: an ES module for browsers and Node 20+
 * (Node 20 needs --experimental-websocket, or pass `WebSocket` in options).
 * Layout: prices · MessagePack · HTTP · transports · the client · connect.
 * One file (over 700 lines) on purpose: a distributable library is copied or
 * imported as one module, with nothing to bundle.
 */

// ---------------------------------------------------------------------------
// Prices: exact decimals. On the wire, JSON carries decimal strings and
// MessagePack fixed-point integers in 1/10,000 (docs/FEED.md). Internally a price
// may be held as "ticks": integer ten-thousandths, exact as a Number up to
// 2^53 ($900 billion).
// ---------------------------------------------------------------------------

/** Ticks per unit of price. */
export const PRICE_SCALE = 10000;

/** "189.12" → 1891200 ticks, by string surgery so no float ever rounds a price. */
export function parseDecimal(s) {
  const m = /^\s*([+-]?)(\d*)(?:\.(\d*))?\s*$/.exec(String(s));
  if (!m || (m[2] === '' && !m[3])) return null;
  const whole = m[2] === '' ? 0 : parseInt(m[2], 10);
  const frac = parseInt(((m[3] || '') + '0000').slice(0, 4), 10);
  const v = whole * PRICE_SCALE + frac;
  return m[1] === '-' ? -v : v;
}

/** 1891200 ticks → "189.1200": the wire's decimal text, four decimals. */
export function ticksToDecimal(t) {
  if (t === null || t === undefined) return null;
  const n = typeof t === 'bigint' ? t : BigInt(Math.trunc(Number(t)));
  const a = n < 0n ? -n : n;
  const scale = BigInt(PRICE_SCALE);
  return (n < 0n ? '-' : '') + (a / scale).toString() + '.' + (a % scale).toString().padStart(4, '0');
}

/** Ticks → display text: two decimals when the last two are zero ("189.12"), else four. */
export function formatTicks(p) {
  if (p === null || p === undefined) return '';
  const a = Math.abs(p);
  const frac = a % PRICE_SCALE;
  const whole = (a - frac) / PRICE_SCALE; // exact: a - frac is a multiple of the scale
  let f = String(frac).padStart(4, '0');
  if (frac % 100 === 0) f = f.slice(0, 2);
  return (p < 0 ? '-' : '') + whole + '.' + f;
}

/** A decimal price string → display text ("189.1200" → "189.12"); '' for null. */
export function formatPrice(s) {
  const t = s === null || s === undefined ? null : parseDecimal(s);
  return t === null ? '' : formatTicks(t);
}

/** Compares two decimal price strings exactly: -1, 0 or 1. Null sorts first. */
export function comparePrices(a, b) {
  const x = a === null || a === undefined ? null : parseDecimal(a);
  const y = b === null || b === undefined ? null : parseDecimal(b);
  if (x === y) return 0;
  if (x === null) return -1;
  if (y === null) return 1;
  return x < y ? -1 : 1;
}

/** a − b of two decimal price strings, as a decimal string (null if either is). */
export function priceDifference(a, b) {
  const x = a === null || a === undefined ? null : parseDecimal(a);
  const y = b === null || b === undefined ? null : parseDecimal(b);
  return x === null || y === null ? null : ticksToDecimal(x - y);
}

/** (a − b) / b in percent, rounded half away from zero to `digits`, as text; integer arithmetic. */
export function percentChange(a, b, digits = 2) {
  const x = a === null || a === undefined ? null : parseDecimal(a);
  const y = b === null || b === undefined ? null : parseDecimal(b);
  if (x === null || y === null || y === 0) return null;
  const unit = 10n ** BigInt(digits);
  const num = BigInt(x - y) * 100n * unit;
  const den = BigInt(y < 0 ? -y : y);
  const neg = num < 0n;
  const q = ((neg ? -num : num) * 2n + den) / (2n * den);
  const whole = q / unit;
  const frac = digits ? '.' + (q % unit).toString().padStart(digits, '0') : '';
  return (neg && q !== 0n ? '-' : '') + whole.toString() + frac;
}

/** Integers that may arrive as Number, BigInt or numeric string. */
export function toNum(v) {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(+v)) return +v;
  return null;
}

/** A wire price → its exact decimal string (JSON strings pass; MessagePack integers are ticks). */
function wirePrice(v, rawInts) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return parseDecimal(v) === null ? null : v;
  if (typeof v === 'bigint') return ticksToDecimal(v);
  if (typeof v === 'number' && Number.isFinite(v)) {
    // MessagePack carries the raw integer; a JSON number is off-spec and is
    // read as the decimal it prints as.
    return rawInts ? ticksToDecimal(Math.trunc(v)) : ticksToDecimal(parseDecimal(String(v)));
  }
  return null;
}

/** A wire quote (docs/PROTOCOL.md, "The quote", either encoding) → the quote this library hands out:
 *  the JSON shape, prices as exact decimal strings. `ts` (ns since the epoch)
 *  exceeds 2^53, so as a Number it keeps about 0.25 µs. */
export function normaliseQuote(r, rawInts = false) {
  return {
    symbol: String(r.symbol).toUpperCase(),
    seq: toNum(r.seq) ?? 0,
    bid: wirePrice(r.bid, rawInts),
    ask: wirePrice(r.ask, rawInts),
    bid_size: toNum(r.bid_size),
    ask_size: toNum(r.ask_size),
    last: wirePrice(r.last, rawInts),
    last_size: toNum(r.last_size),
    volume: toNum(r.volume),
    prev_close: wirePrice(r.prev_close, rawInts),
    ts: toNum(r.ts),
  };
}

// ---------------------------------------------------------------------------
// MessagePack decoder: the subset the relay sends (maps, arrays, strings, ints
// up to 64 bits, nil, bool, floats, bin, ext). 64-bit ints go through BigInt
// and come out as Number: only `ts` exceeds 2^53, and it needs microseconds.
// ---------------------------------------------------------------------------

const utf8 = new TextDecoder();

/** Decodes one MessagePack value from bytes (Uint8Array, ArrayBuffer or a view). */
export function decodeMsgpack(input) {
  const bytes = input instanceof Uint8Array ? input
    : ArrayBuffer.isView(input) ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength)
    : new Uint8Array(input);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;

  const need = (n) => {
    if (pos + n > bytes.length) throw new RangeError('msgpack: truncated at byte ' + pos);
  };
  const read = (n, get) => {
    need(n);
    const v = view[get](pos);
    pos += n;
    return v;
  };
  const u8 = () => read(1, 'getUint8');
  const u16 = () => read(2, 'getUint16');
  const u32 = () => read(4, 'getUint32');
  const str = (n) => {
    need(n);
    const s = utf8.decode(bytes.subarray(pos, pos + n));
    pos += n;
    return s;
  };
  const bin = (n) => {
    need(n);
    const b = bytes.slice(pos, pos + n);
    pos += n;
    return b;
  };
  const ext = (n) => {
    const type = read(1, 'getInt8');
    return { extType: type, data: bin(n) };
  };
  const arr = (n) => {
    const a = new Array(n);
    for (let i = 0; i < n; i++) a[i] = value();
    return a;
  };
  const map = (n) => {
    const o = {};
    for (let i = 0; i < n; i++) {
      const k = value();
      const key = typeof k === 'string' ? k : String(k);
      const v = value();
      // Plain assignment of "__proto__" would set the prototype instead.
      if (key === '__proto__') Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true });
      else o[key] = v;
    }
    return o;
  };

  function value() {
    const t = u8();
    if (t <= 0x7f) return t; // positive fixint
    if (t >= 0xe0) return t - 0x100; // negative fixint
    if (t <= 0x8f) return map(t & 0x0f);
    if (t <= 0x9f) return arr(t & 0x0f);
    if (t <= 0xbf) return str(t & 0x1f);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xc7: return ext(u8());
      case 0xc8: return ext(u16());
      case 0xc9: return ext(u32());
      case 0xca: return read(4, 'getFloat32');
      case 0xcb: return read(8, 'getFloat64');
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: return Number(read(8, 'getBigUint64'));
      case 0xd0: return read(1, 'getInt8');
      case 0xd1: return read(2, 'getInt16');
      case 0xd2: return read(4, 'getInt32');
      case 0xd3: return Number(read(8, 'getBigInt64'));
      case 0xd4: return ext(1);
      case 0xd5: return ext(2);
      case 0xd6: return ext(4);
      case 0xd7: return ext(8);
      case 0xd8: return ext(16);
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return arr(u16());
      case 0xdd: return arr(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new TypeError('msgpack: reserved byte 0x' + t.toString(16) + ' at ' + (pos - 1));
    }
  }

  return value();
}

// ---------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------

/** Full-jitter exponential backoff: 125 ms … 10 s. */
export function backoff(attempt) {
  const cap = Math.min(10000, 250 * 2 ** Math.min(attempt, 10));
  return cap / 2 + Math.random() * (cap / 2);
}

/** Every transport `connect` knows, and the order `auto` tries the streaming ones. */
export const TRANSPORTS = ['ws', 'ws-msgpack', 'sse', 'poll', 'snapshot'];
const AUTO_ORDER = ['ws', 'sse', 'poll'];

const symParam = (syms) => syms.map(encodeURIComponent).join(',');
const cursorText = (c) => (c ? c.session + ':' + c.seq : '');
const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A relay error answer (docs/PROTOCOL.md, "Errors": `{"error":{"code","message"}}`). */
export class HttpError extends Error {
  constructor(status, text) {
    let code = 'http_' + status;
    let message = 'HTTP ' + status;
    try {
      const e = JSON.parse(text).error;
      if (e && e.code) code = e.code;
      if (e && e.message) message = e.message;
    } catch (_) { /* not the JSON error shape */ }
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The unknown symbols named by a 404 `unknown_symbol` ("unknown symbol(s): A,B"). */
function unknownFromError(err) {
  if (!(err instanceof HttpError) || err.code !== 'unknown_symbol') return [];
  const i = err.message.lastIndexOf(':');
  return i < 0 ? [] : err.message.slice(i + 1).split(',').map((s) => s.trim().toUpperCase()).filter(Boolean);
}

// ---------------------------------------------------------------------------
// Transports. Each owns one connection at a time, reconnects itself with
// backoff, and hands envelopes to the client; the client owns the resume
// cursor. `gen` guards every async callback: after a stop or a reconnect,
// callbacks of the old connection fall silent.
// ---------------------------------------------------------------------------

class Transport {
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

/** WebSocket, JSON text or MessagePack binary frames. */
class WsTransport extends Transport {
  constructor(client, msgpack) {
    super(client, msgpack ? 'ws-msgpack' : 'ws');
    this.msgpack = msgpack;
    this.ws = null;
    this.heartbeat = 0;
    this.openTimer = 0;
    this.lastRx = 0;
    this.shutdownMs = null;
  }

  connect(gen) {
    const c = this.client;
    const WS = c.WebSocket;
    let ws;
    try {
      if (!WS) throw new Error('no WebSocket here (Node 20: --experimental-websocket, or pass WebSocket)');
      const url = c.url('v1/ws', true);
      ws = this.msgpack ? new WS(url, 'tickrelay.msgpack') : new WS(url);
    } catch (e) {
      this.retry(String(e.message || e));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.shutdownMs = null;
    c.traffic(0, 1); // the upgrade request

    ws.onopen = () => {
      if (!this.live(gen)) return;
      this.lastRx = now();
      this.subscribe(c.requestSymbols(), c.cursor);
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
        c.notice('bad frame: ' + err.message, true);
        return;
      }
      this.onFrame(frame, rawInts);
    };

    ws.onclose = (e) => {
      if (!this.live(gen)) return;
      this.ws = null;
      this.retry(closeReason(e), this.shutdownMs ?? (e.code === 4009 || e.code === 4001 ? Math.max(5000, backoff(this.attempt)) : undefined));
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
        c.onEnvelope(f, { kind: 'stream', rawInts, snapshot: true });
        break;
      case 'ticks':
        c.onEnvelope(f, { kind: 'stream', rawInts });
        break;
      case 'subscribed':
        if (Array.isArray(f.unknown) && f.unknown.length) c.markUnknown(f.unknown.map(String));
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
    if (cursor) msg.since = cursorText(cursor);
    this.send(msg);
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

/** Server-Sent Events over a streamed fetch: one parser for browsers and
 *  Node, the HTTP status visible (a 404 names unknown symbols), and resume
 *  by our own cursor (`last_event_id`). */
class SseTransport extends Transport {
  constructor(client) {
    super(client, 'sse');
    this.ctl = null;
  }

  async connect(gen) {
    const c = this.client;
    let path = 'v1/stream?symbols=' + symParam(c.requestSymbols()) + c.batchParam();
    if (c.cursor) path += '&last_event_id=' + encodeURIComponent(cursorText(c.cursor));
    const ctl = new AbortController();
    this.ctl = ctl;
    let shutdownMs = null;
    try {
      c.traffic(0, 1);
      const res = await c.fetch(c.url(path), { signal: ctl.signal, headers: c.headers({ Accept: 'text/event-stream' }), cache: 'no-store' });
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
          const block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          const ev = parseSse(block);
          if (!ev) continue;
          const d = parseJson(ev.data);
          if (d === undefined) {
            c.notice('bad ' + ev.event + ' event', true);
            continue;
          }
          const session = sessionOf(ev.id);
          if (ev.event === 'snapshot') c.onEnvelope(d, { kind: 'stream', session, snapshot: true });
          else if (ev.event === 'tick' || ev.event === 'message') c.onEnvelope(d, { kind: 'stream', session });
          else if (ev.event === 'feed') c.onFeed(d);
          else if (ev.event === 'shutdown') {
            shutdownMs = (toNum(d && d.reconnect_ms) ?? 1000) + Math.random() * 250;
            c.notice('server shutting down; reconnecting in ' + (shutdownMs / 1000).toFixed(1) + ' s');
          } else if (ev.event === 'error') {
            c.notice('server: ' + ((d && (d.message || d.code)) || ev.data), true);
          }
        }
      }
    } catch (e) {
      if (!this.live(gen)) return; // closed on purpose
      c.noteUnknown(e);
      return this.retry(e.message || 'stream failed', e instanceof HttpError && (e.status === 401 || e.status === 429) ? Math.max(5000, backoff(this.attempt)) : undefined);
    } finally {
      if (this.ctl === ctl) this.ctl = null;
    }
    if (this.live(gen)) this.retry(shutdownMs !== null ? 'server restarting' : 'stream closed', shutdownMs ?? undefined);
  }

  close() {
    super.close();
    if (this.ctl) this.ctl.abort();
    this.ctl = null;
  }
}

function parseSse(block) {
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

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return undefined;
  }
}

function sessionOf(id) {
  const i = id ? id.lastIndexOf(':') : -1;
  return i > 0 ? id.slice(0, i) : undefined;
}

/** Long polling: one request held by the server, re-issued at once with the returned cursor. */
class LongPollTransport extends Transport {
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
        c.noteUnknown(e);
        return this.retry(e.message || 'poll failed');
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

/** Short polling: the REST snapshot every `pollIntervalMs`, with If-None-Match → 304. */
class ShortPollTransport extends Transport {
  constructor(client) {
    super(client, 'snapshot');
    this.ctl = null;
    this.etag = null;
  }

  async connect(gen) {
    const c = this.client;
    while (this.live(gen)) {
      const syms = c.requestSymbols();
      if (!syms.length) return this.open();
      const t0 = now();
      const ctl = new AbortController();
      this.ctl = ctl;
      const guard = setTimeout(() => ctl.abort(), 15000);
      try {
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
      } catch (e) {
        if (!this.live(gen)) return;
        c.noteUnknown(e);
        return this.retry(e.message || 'snapshot failed');
      } finally {
        clearTimeout(guard);
      }
      // Fixed rate: the interval counts from the start of the request.
      const wait = c.pollIntervalMs - (now() - t0);
      if (wait > 0) await new Promise((r) => { this.timer = setTimeout(r, wait); });
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

function makeTransport(client, name) {
  switch (name) {
    case 'ws-msgpack': return new WsTransport(client, true);
    case 'sse': return new SseTransport(client);
    case 'poll': return new LongPollTransport(client);
    case 'snapshot': return new ShortPollTransport(client);
    default: return new WsTransport(client, false);
  }
}

// ---------------------------------------------------------------------------
// The client: subscriptions, the resume cursor, the merge rule, status.
//
// Merge rule, per symbol: a quote is passed on if it belongs to another
// session, or its `seq` is not older than the one passed on last. Equal seq
// is let through: a recovered half can change a symbol without moving its
// seq (the newest half's). That makes REST/stream races, resume overlaps and
// duplicate deliveries harmless.
// ---------------------------------------------------------------------------

class Client {
  constructor(baseUrl, o) {
    const g = globalThis;
    this.base = String(baseUrl || (g.location ? g.location.href : ''));
    this.token = o.token || null;
    this.batchMs = Math.max(0, Math.min(1000, Math.round(toNum(o.batchMs) ?? 0)));
    this.pollIntervalMs = Math.max(100, toNum(o.pollIntervalMs) ?? 1000);
    this.pollTimeoutMs = Math.max(1000, toNum(o.pollTimeoutMs) ?? 25000);
    this.WebSocket = o.WebSocket || g.WebSocket || null;
    this.fetchFn = o.fetch || (g.fetch ? g.fetch.bind(g) : null);
    this.cb = {
      quote: o.onQuote || (() => {}),
      status: o.onStatus || (() => {}),
      unknown: o.onUnknown || (() => {}),
      notice: o.onNotice || (() => {}),
      traffic: o.onTraffic || (() => {}),
    };
    const wanted = o.transport || 'auto';
    if (wanted !== 'auto' && !TRANSPORTS.includes(wanted)) throw new TypeError('unknown transport: ' + wanted);
    this.auto = wanted === 'auto';
    this.transportName = this.auto ? AUTO_ORDER[0] : wanted;
    this.fallbackAfter = Math.max(1, toNum(o.fallbackAfter) ?? 1);

    this.symbols = [];
    this.unknown = new Set();
    this.shown = new Map(); // symbol → {session, seq} last passed on
    this.cursor = null; // {session, seq}: resume point, from the last envelope
    this.epoch = 0;
    this.cursorAt = 0;
    this.feed = { status: 'live', session: null, complete: true, lost: 0, incomplete: 0 };
    this.connection = 'connecting';
    this.retryAt = 0;
    this.reason = '';
    this.transport = null;
    this.closed = false;
    this.resyncing = false;
    this.resyncAgain = false;
    this.lastResync = -Infinity;
    this.needResync = false;
    this.fillAt = -Infinity;
    this.changes = { added: new Set(), removed: new Set() };
    this.changeTimer = 0;
    this.bootTimer = 0;
    this.add(o.symbols || []);
  }

  // --- plumbing ---------------------------------------------------------------

  url(path, ws) {
    const u = new URL(path, this.base);
    if (ws) u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    // Browsers' WebSocket cannot set headers: the token goes in the query.
    if (this.token && ws) u.searchParams.set('token', this.token);
    return u.toString();
  }

  headers(extra) {
    const h = { ...(extra || {}) };
    if (this.token) h.Authorization = 'Bearer ' + this.token;
    return h;
  }

  fetch(url, init) {
    if (!this.fetchFn) throw new Error('no fetch here');
    return this.fetchFn(url, init);
  }

  /** fetch, counted; returns the body as text. */
  async http(path, { signal, headers } = {}) {
    this.traffic(0, 1);
    // no-store: a browser cache must not answer for us, or 304s would be hidden.
    const res = await this.fetch(this.url(path), { signal, headers: this.headers(headers), cache: 'no-store' });
    const text = await res.text();
    this.traffic(text.length, 0);
    const feed = res.headers.get('tickrelay-feed');
    if (feed) this.feedFromHeader(feed);
    return { status: res.status, ok: res.ok, headers: res.headers, text };
  }

  /**
   * Snapshot and poll answers carry the feed's status in a header
   * (`status=…; session=…; complete=…; lost=…; incomplete=…`): the `feed`
   * event of the request/response transports. Applied when it changed.
   */
  feedFromHeader(value) {
    const d = {};
    for (const part of String(value).split(';')) {
      const i = part.indexOf('=');
      if (i > 0) d[part.slice(0, i).trim()] = part.slice(i + 1).trim();
    }
    const next = {
      status: d.status,
      complete: d.complete !== 'false',
      lost: toNum(d.lost) ?? 0,
      incomplete: toNum(d.incomplete) ?? 0,
    };
    const f = this.feed;
    if (next.status === f.status && next.complete === f.complete && next.lost === f.lost && next.incomplete === f.incomplete) return;
    // The session is the envelopes' business on these transports.
    this.onFeed(next);
  }

  batchParam() {
    return this.batchMs ? '&batch_ms=' + this.batchMs : '';
  }

  traffic(bytes, requests) {
    try {
      this.cb.traffic(bytes, requests);
    } catch (_) { /* a caller's bug must not break the connection */ }
  }

  notice(text, isError) {
    this.cb.notice(text, !!isError);
  }

  status() {
    const left = this.retryAt ? Math.max(0, this.retryAt - now()) : null;
    this.cb.status({
      connection: this.connection,
      transport: this.transportName,
      feed: { ...this.feed },
      complete: this.feed.complete,
      lost: this.feed.lost,
      incomplete: this.feed.incomplete,
      session: this.cursor ? this.cursor.session : null,
      seq: this.cursor ? this.cursor.seq : null,
      retryInMs: left,
      reason: this.reason,
    });
  }

  // --- subscriptions ------------------------------------------------------------

  /** What we ask the server for: the subscriptions minus symbols it doesn't know. */
  requestSymbols() {
    return this.symbols.filter((s) => !this.unknown.has(s));
  }

  add(list) {
    const added = [];
    for (const s of list) {
      const sym = String(s).trim().toUpperCase();
      if (!sym) continue;
      // Asked again: whatever called it unknown may be over (a relay that
      // just restarted learns its directory from the feed a moment later).
      if (this.unknown.delete(sym)) added.push(sym);
      if (!this.symbols.includes(sym)) {
        this.symbols.push(sym);
        added.push(sym);
      }
    }
    return [...new Set(added)];
  }

  subscribe(list) {
    const added = this.add(Array.isArray(list) ? list : [list]);
    if (added.length) this.queueChange(added, []);
  }

  unsubscribe(list) {
    const drop = new Set((Array.isArray(list) ? list : [list]).map((s) => String(s).trim().toUpperCase()));
    const removed = this.symbols.filter((s) => drop.has(s));
    if (!removed.length) return;
    const wasRequested = removed.filter((s) => !this.unknown.has(s));
    this.symbols = this.symbols.filter((s) => !drop.has(s));
    for (const s of removed) {
      this.unknown.delete(s);
      this.shown.delete(s);
    }
    if (wasRequested.length) this.queueChange([], wasRequested);
  }

  /** Batches quick edits so one REST call and one (re)subscribe serve them all. */
  queueChange(added, removed) {
    for (const s of added) {
      if (!this.changes.removed.delete(s)) this.changes.added.add(s);
    }
    for (const s of removed) {
      if (!this.changes.added.delete(s)) this.changes.removed.add(s);
    }
    clearTimeout(this.changeTimer);
    this.changeTimer = setTimeout(() => this.applyChanges(), 60);
  }

  async applyChanges() {
    if (this.closed) return;
    const added = [...this.changes.added].filter((s) => this.symbols.includes(s));
    const removed = [...this.changes.removed];
    this.changes = { added: new Set(), removed: new Set() };
    let since = this.cursor;
    if (added.length) {
      // New symbols get their first prices from REST, then the stream
      // resumes from that snapshot's cursor for them.
      try {
        const env = await this.restSnapshot(added, this.cursor ? 'add' : 'full');
        if (env && env.session) since = { session: String(env.session), seq: toNum(env.seq) ?? 0 };
      } catch (e) {
        this.notice('snapshot of ' + added.join(',') + ': ' + e.message, true);
      }
    }
    if (this.closed || !this.transport) return;
    this.transport.symbolsChanged(added, removed, since);
  }

  markUnknown(symbols) {
    const fresh = [];
    for (const s of symbols) {
      const sym = String(s).toUpperCase();
      if (this.symbols.includes(sym) && !this.unknown.has(sym)) {
        this.unknown.add(sym);
        fresh.push(sym);
      }
    }
    if (fresh.length) this.cb.unknown(fresh);
  }

  /** A 404 unknown_symbol: report those symbols and stop asking for them. */
  noteUnknown(err) {
    const unknown = unknownFromError(err);
    if (unknown.length) this.markUnknown(unknown);
  }

  // --- REST snapshot --------------------------------------------------------------

  async restSnapshot(symbols, kind) {
    if (!symbols.length) return null;
    const epoch = this.epoch;
    const sentAt = now();
    const r = await this.http('v1/snapshot?symbols=' + symParam(symbols));
    if (!r.ok) {
      const err = new HttpError(r.status, r.text);
      this.noteUnknown(err);
      throw err;
    }
    const env = JSON.parse(r.text);
    // Symbols added while this was in flight aren't in it: then it is no
    // longer a snapshot of the whole subscription.
    if (kind === 'full' && !this.requestSymbols().every((s) => symbols.includes(s))) kind = 'add';
    this.onEnvelope(env, { kind, epoch, sentAt, snapshot: true, rest: true });
    return env;
  }

  /** Re-reads every subscribed symbol over REST: after a session change, or
   *  when a stream went behind our cursor. At most once a second. */
  async resync() {
    if (this.closed) return;
    if (this.resyncing) {
      this.resyncAgain = true;
      return;
    }
    this.resyncing = true;
    this.needResync = false;
    try {
      const wait = this.lastResync + 1000 - now();
      if (wait > 0) await sleep(wait);
      this.lastResync = now();
      await this.restSnapshot(this.requestSymbols(), 'full');
    } catch (e) {
      // Server unreachable: retry when a transport is up again, rather than
      // hammering it alongside the transport's own backoff.
      this.needResync = true;
    } finally {
      this.resyncing = false;
    }
    if (this.resyncAgain) {
      this.resyncAgain = false;
      if (!this.needResync) this.resync();
    }
  }

  // --- envelopes and quotes ---------------------------------------------------------

  /** Every envelope from every source comes through here.
   *  kind: 'full'   — a REST snapshot of every requested symbol;
   *        'add'    — a REST snapshot of newly added symbols only;
   *        'stream' — a transport's envelope (changes only). */
  onEnvelope(env, meta) {
    if (this.closed || !env || typeof env !== 'object') return;
    const seq = toNum(env.seq);
    const c = this.cursor;
    const session = env.session != null ? String(env.session) : meta.session ?? (c ? c.session : '');
    const quotes = Array.isArray(env.quotes) ? env.quotes : [];
    const opt = { rawInts: !!meta.rawInts, force: false, snapshot: !!meta.snapshot, rest: !!meta.rest };

    // A REST answer that predates a session switch is stale, not news.
    if (meta.epoch !== undefined && meta.epoch !== this.epoch && c && session !== c.session) return;

    if (!c || session !== c.session) {
      // First contact, or a new feed session (relay or feed restarted): the
      // old cursor means nothing here. Adopt the new one.
      const hadSession = !!c;
      this.adopt(session, seq ?? 0);
      this.applyQuotes(quotes, session, opt);
      if (hadSession) {
        this.notice('new feed session ' + session);
        // Only a full snapshot covers every symbol; otherwise fetch one.
        if (meta.kind !== 'full') this.resync();
      }
      return;
    }

    if (seq !== null) {
      if (meta.kind === 'add') {
        // The new symbols are only as fresh as this snapshot: never resume past it.
        c.seq = Math.min(c.seq, seq);
      } else if (seq >= c.seq) {
        if (seq > c.seq) this.cursorAt = now();
        c.seq = seq;
      } else if (meta.kind === 'full') {
        if (meta.sentAt === undefined || this.cursorAt <= meta.sentAt) {
          // A whole-subscription snapshot behind a cursor that hasn't moved
          // since we asked: the feed restarted under the same session name,
          // or this relay lags. Either way it is the truth now.
          c.seq = seq;
          this.cursorAt = now();
          opt.force = true;
          if (this.transport) this.transport.cursorReset();
        }
        // Otherwise the stream moved on while it was in flight; the
        // per-symbol seq check keeps the newer prices.
      } else {
        this.resync();
      }
      this.status();
    }
    this.applyQuotes(quotes, session, opt);
  }

  adopt(session, seq) {
    const had = !!this.cursor;
    this.cursor = { session, seq };
    this.epoch++;
    this.cursorAt = now();
    this.status();
    if (had && this.transport) this.transport.cursorReset();
  }

  applyQuotes(list, session, opt) {
    let n = 0;
    for (const raw of list) {
      if (!raw || raw.symbol == null) continue;
      const sym = String(raw.symbol).toUpperCase();
      if (!this.symbols.includes(sym)) continue; // unsubscribed meanwhile
      const q = normaliseQuote(raw, opt.rawInts);
      const last = this.shown.get(sym);
      // Strictly older than the one passed on: skip. Equal seq is news.
      if (!opt.force && last && last.session === session && q.seq < last.seq) continue;
      this.shown.set(sym, { session, seq: q.seq });
      q.session = session;
      n++;
      try {
        this.cb.quote(q, { snapshot: opt.snapshot, rest: opt.rest, transport: this.transportName, session });
      } catch (e) {
        // A caller's bug must not break the stream.
        if (typeof console !== 'undefined') console.error(e);
      }
    }
    return n;
  }

  onFeed(d) {
    if (!d || typeof d !== 'object') return;
    const session = d.session;
    if (session != null && this.cursor && String(session) !== this.cursor.session) {
      // The relay moved to a new feed session mid-connection.
      this.adopt(String(session), 0);
      this.notice('new feed session ' + session);
      this.resync();
    }
    if (d.status === 'live' || d.status === 'stale' || d.status === 'recovering') {
      // `complete: false`: the relay lacks state it is rebuilding (a late
      // join, a loss beyond repair). Any symbol may be missing a change until
      // it says complete again; recovered prices arrive as ordinary ticks.
      this.feed = {
        status: d.status,
        session: session != null ? String(session) : this.feed.session,
        complete: d.complete !== false,
        lost: toNum(d.lost) ?? 0,
        incomplete: toNum(d.incomplete) ?? 0,
      };
      this.status();
    }
  }

  // --- transport lifecycle --------------------------------------------------------

  async start() {
    // Initial prices always come from REST; the transport starts after.
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        if (this.requestSymbols().length) await this.restSnapshot(this.requestSymbols(), 'full');
        break;
      } catch (e) {
        if (this.closed) return;
        // Every symbol unknown: nothing to load, stream nothing until asked.
        if (!this.requestSymbols().length) break;
        const delay = backoff(attempt);
        this.connection = attempt >= 3 ? 'disconnected' : 'reconnecting';
        this.retryAt = now() + delay;
        this.reason = e.message || String(e);
        this.status();
        await new Promise((r) => { this.bootTimer = setTimeout(r, delay); });
      }
    }
    if (this.closed) return;
    this.startTransport();
  }

  startTransport() {
    if (this.transport) this.transport.stop();
    // Pollers carry no feed status; don't keep a stale one from a stream.
    if (this.transportName === 'poll' || this.transportName === 'snapshot') this.feed = { ...this.feed, status: 'live' };
    this.transport = makeTransport(this, this.transportName);
    this.transport.start();
  }

  /** `auto`: a transport that never came up moves on to the next. Returns
   *  true when it did. */
  transportFailed(t, reason) {
    if (!this.auto || t !== this.transport || t.everUp) return false;
    const i = AUTO_ORDER.indexOf(t.name);
    if (i < 0 || i + 1 >= AUTO_ORDER.length || t.attempt + 1 < this.fallbackAfter) return false;
    this.transportName = AUTO_ORDER[i + 1];
    this.notice(t.name + ' failed (' + reason + '); trying ' + this.transportName);
    t.running = false;
    this.startTransport();
    return true;
  }

  transportConnecting(t) {
    if (t !== this.transport) return;
    if (this.connection === 'live' || this.connection === 'idle') this.connection = 'reconnecting';
    this.retryAt = 0; // an attempt is in flight
    this.status();
  }

  transportUp(t) {
    if (t !== this.transport) return;
    this.connection = 'live';
    this.retryAt = 0;
    this.reason = '';
    this.status();
    if (this.needResync) return void this.resync();
    // Symbols that never got a price (a REST call failed during an outage)
    // won't be filled by a resume, which sends only changes: ask REST.
    const missing = this.requestSymbols().filter((s) => !this.shown.has(s));
    if (missing.length && now() - this.fillAt > 2000) {
      this.fillAt = now();
      this.restSnapshot(missing, 'add').catch(() => {});
    }
  }

  transportDown(t, delay, reason) {
    if (t !== this.transport) return;
    this.connection = t.attempt > 3 ? 'disconnected' : 'reconnecting';
    this.retryAt = now() + delay;
    this.reason = reason ? t.name + ': ' + reason : '';
    this.status();
  }

  transportIdle(t) {
    if (t !== this.transport) return;
    this.connection = 'idle';
    this.status();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.changeTimer);
    clearTimeout(this.bootTimer);
    if (this.transport) this.transport.stop();
    this.connection = 'closed';
    this.status();
  }
}

/**
 * Connects to a relay at `baseUrl` (e.g. "http://127.0.0.1:8080/").
 *
 * Options: `symbols`, `transport` ("auto" | "ws" | "ws-msgpack" | "sse" |
 * "poll" | "snapshot"; default "auto"), `token`, `batchMs`, `pollIntervalMs`
 * (short poll), `pollTimeoutMs` (long poll), and the callbacks `onQuote(quote,
 * info)`, `onStatus(status)`, `onUnknown(symbols)`, `onNotice(text, isError)`,
 * `onTraffic(bytes, requests)`; `WebSocket` and `fetch` to inject
 * implementations. Returns a handle: `subscribe(symbols)`,
 * `unsubscribe(symbols)`, `close()`, `transport` (the one in use), `cursor`.
 */
export function connect(baseUrl, options = {}) {
  const client = new Client(baseUrl, options);
  // Callbacks never run inside connect(): the caller has its handle first.
  queueMicrotask(() => {
    if (client.closed) return;
    client.status();
    client.start();
  });
  return {
    subscribe: (symbols) => client.subscribe(symbols),
    unsubscribe: (symbols) => client.unsubscribe(symbols),
    close: () => client.close(),
    /** Retry now if waiting in backoff. */
    kick: () => client.transport && client.transport.kick(),
    get transport() {
      return client.transportName;
    },
    get cursor() {
      return client.cursor ? { ...client.cursor } : null;
    },
    get symbols() {
      return client.symbols.slice();
    },
  };
}
