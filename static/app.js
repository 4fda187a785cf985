/* tickrelay trading page.
 *
 * Loads the watchlist's prices over REST, then streams changes over the
 * transport the user picks (WebSocket JSON or MessagePack, SSE, long poll,
 * short poll), and resumes by SESSION:SEQ after any disconnect. No framework,
 * no build step: the server embeds this file as is.
 *
 * Layout: fixed-point prices · clock · MessagePack decoder · statistics ·
 * transports · the App (model, view, watchlist) · boot.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------------------
  // Fixed-point prices: integers in 1/10,000 units, as on the feed (SPEC §3).
  // Kept as Number integers: exact up to 2^53 ten-thousandths ($900 billion).
  // ---------------------------------------------------------------------------

  const SCALE = 10000;

  /** "189.1200" → 1891200, by string surgery so no float ever rounds a price. */
  function parseDecimal(s) {
    const m = /^\s*([+-]?)(\d*)(?:\.(\d*))?\s*$/.exec(s);
    if (!m || (m[2] === '' && !m[3])) return null;
    const whole = m[2] === '' ? 0 : parseInt(m[2], 10);
    const frac = parseInt(((m[3] || '') + '0000').slice(0, 4), 10);
    const v = whole * SCALE + frac;
    return m[1] === '-' ? -v : v;
  }

  /** A wire price (JSON decimal string, MessagePack integer) → ten-thousandths. */
  function toPrice(v, rawInts) {
    if (v === null || v === undefined) return null;
    if (typeof v === 'string') return parseDecimal(v);
    if (typeof v === 'bigint') return Number(v);
    if (typeof v === 'number' && Number.isFinite(v)) {
      // MessagePack carries the raw integer; a JSON number is off-spec, accepted
      // leniently as a decimal.
      return rawInts ? Math.trunc(v) : Math.round(v * SCALE);
    }
    return null;
  }

  /** 1891200 → "189.12"; 1891234 → "189.1234" (2 decimals when the last two are 0). */
  function formatPrice(p) {
    if (p === null || p === undefined) return '';
    const a = Math.abs(p);
    const frac = a % SCALE;
    const whole = (a - frac) / SCALE; // exact: a - frac is a multiple of SCALE
    let f = String(frac).padStart(4, '0');
    if (frac % 100 === 0) f = f.slice(0, 2);
    return (p < 0 ? '-' : '') + whole + '.' + f;
  }

  /** Integers that may arrive as Number, BigInt or numeric string. */
  function toNum(v) {
    if (typeof v === 'number') return Number.isFinite(v) ? v : null;
    if (typeof v === 'bigint') return Number(v);
    if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(+v)) return +v;
    return null;
  }

  /** The wire quote (SPEC §4) → the one internal shape both encodings share. */
  function normaliseQuote(r, rawInts) {
    const ts = toNum(r.ts);
    return {
      symbol: String(r.symbol),
      seq: toNum(r.seq) ?? 0,
      bid: toPrice(r.bid, rawInts),
      ask: toPrice(r.ask, rawInts),
      last: toPrice(r.last, rawInts),
      prevClose: toPrice(r.prev_close, rawInts),
      bidSize: toNum(r.bid_size),
      askSize: toNum(r.ask_size),
      lastSize: toNum(r.last_size),
      volume: toNum(r.volume),
      // ts is ns since the epoch and exceeds 2^53; as a double it keeps ~0.25 µs,
      // plenty for ages and millisecond latencies.
      tsMs: ts === null ? null : ts / 1e6,
    };
  }

  const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

  // ---------------------------------------------------------------------------
  // Wall clock with sub-millisecond resolution, for tick-to-screen latency.
  // Date.now() has whole-ms resolution; performance.now() is fine-grained but
  // monotonic, and can drift from the wall clock (e.g. it pauses during sleep
  // on some systems). So we keep offset = wall - monotonic, re-estimated every
  // second: Date.now() floors, so the largest recent estimate is the closest.
  // ---------------------------------------------------------------------------

  const clock = {
    samples: [],
    offset: Date.now() - performance.now(),
    calibrate() {
      const t = performance.now();
      this.samples.push({ t, o: Date.now() - t });
      while (this.samples.length && t - this.samples[0].t > 30000) this.samples.shift();
      let best = -Infinity;
      for (const s of this.samples) if (s.o > best) best = s.o;
      this.offset = best;
    },
  };
  const nowMs = () => performance.now() + clock.offset;

  // ---------------------------------------------------------------------------
  // MessagePack decoder: the subset the relay sends (maps, arrays, strings,
  // ints up to 64 bits, nil, bool, floats, bin, ext). 64-bit ints go through
  // BigInt and come out as Number: only `ts` exceeds 2^53, and it only needs
  // microseconds.
  // ---------------------------------------------------------------------------

  const utf8 = typeof TextDecoder !== 'undefined' ? new TextDecoder() : null;

  function decodeMsgpack(input) {
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

  // Pure parts, for node-based checks; the page itself needs a document.
  const codec = { decodeMsgpack, parseDecimal, formatPrice, toPrice, normaliseQuote };
  if (typeof module === 'object' && module.exports) module.exports = codec;
  if (typeof document === 'undefined') return;

  // ---------------------------------------------------------------------------
  // Statistics: sliding-window rates and a latency sample ring.
  // ---------------------------------------------------------------------------

  /** Events per second over a sliding window of fixed buckets. */
  class Rate {
    constructor(bucketMs, buckets, minSpanMs = 1000) {
      this.bucketMs = bucketMs;
      this.minSpanMs = minSpanMs;
      this.counts = new Float64Array(buckets);
      this.start = performance.now();
      this.head = Math.floor(this.start / bucketMs);
    }

    advance(now) {
      const b = Math.floor(now / this.bucketMs);
      if (b <= this.head) return;
      const n = this.counts.length;
      if (b - this.head >= n) this.counts.fill(0);
      else for (let i = this.head + 1; i <= b; i++) this.counts[i % n] = 0;
      this.head = b;
    }

    add(v) {
      const now = performance.now();
      this.advance(now);
      this.counts[this.head % this.counts.length] += v;
    }

    perSecond() {
      const now = performance.now();
      this.advance(now);
      let sum = 0;
      for (const c of this.counts) sum += c;
      // The window is the full buckets plus the current partial one, and never
      // more than we have been counting (so a fresh transport isn't diluted).
      const span = Math.min((this.counts.length - 1) * this.bucketMs + (now - this.head * this.bucketMs), now - this.start);
      return (sum * 1000) / Math.max(span, this.minSpanMs);
    }
  }

  /** The last `n` latency samples; percentiles by nearest rank. */
  class Samples {
    constructor(n) {
      this.buf = new Float64Array(n);
      this.len = 0;
      this.i = 0;
    }

    add(v) {
      this.buf[this.i] = v;
      this.i = (this.i + 1) % this.buf.length;
      if (this.len < this.buf.length) this.len++;
    }

    percentile(p) {
      if (!this.len) return null;
      const a = this.buf.slice(0, this.len).sort();
      return a[Math.min(this.len - 1, Math.max(0, Math.ceil(p * this.len) - 1))];
    }
  }

  /** Live figures of one transport run; fresh on every switch. */
  class Stats {
    constructor() {
      this.updates = new Rate(250, 21); // 5 s
      this.bytes = new Rate(250, 21);
      // 60 s; a few connect requests right after a switch mustn't read as a storm.
      this.requests = new Rate(1000, 61, 10000);
      this.latency = new Samples(1000);
    }
  }

  // ---------------------------------------------------------------------------
  // Small helpers.
  // ---------------------------------------------------------------------------

  const $ = (sel) => document.querySelector(sel);
  const pageParams = new URLSearchParams(location.search);
  const token = pageParams.get('token'); // optional bearer token (SPEC §6)
  const TRANSPORTS = ['ws', 'ws-msgpack', 'sse', 'poll', 'snapshot'];
  const SYMBOL_RE = /^[A-Z0-9.\-/_^*]{1,16}$/; // the server's ticker syntax
  const MAX_WATCH = 500; // well under the server's per-request limit (1024)
  const DEFAULT_WATCH = 20; // a screenful at 1280x800
  const FLASH_MS = 700; // keep in step with the flash animations in app.css
  const POLL_TIMEOUT_MS = 25000;
  // Screen batching (batch_ms): the server gathers changes for up to one
  // frame of a 60 Hz screen. Switchable in the header; on by default.
  const BATCH_MS = 16;
  const batchMs = () => (store.get('batch', true) ? BATCH_MS : 0);
  const batchParam = () => (batchMs() ? '&batch_ms=' + batchMs() : '');

  const store = {
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

  const symParam = (syms) => syms.map(encodeURIComponent).join(',');
  const cursorText = (c) => (c ? c.session + ':' + c.seq : '');

  /** Full-jitter exponential backoff: 125 ms … 10 s. */
  function backoff(attempt) {
    const cap = Math.min(10000, 250 * 2 ** Math.min(attempt, 10));
    return cap / 2 + Math.random() * (cap / 2);
  }

  /** Relative URL → absolute, with the auth token for clients that can't set headers. */
  function apiUrl(path, ws) {
    const u = new URL(path, location.href);
    if (ws) u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (token && (ws || path.startsWith('v1/stream'))) u.searchParams.set('token', token);
    return u.toString();
  }

  class HttpError extends Error {
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

  /** fetch, counted against a transport's stats; returns the body as text. */
  async function http(path, { signal, headers, stats } = {}) {
    const h = new Headers(headers || {});
    if (token) h.set('Authorization', 'Bearer ' + token);
    if (stats) stats.requests.add(1);
    // no-store: the browser cache must not answer for us, or 304s would be hidden.
    const res = await fetch(apiUrl(path), { signal, headers: h, cache: 'no-store' });
    const text = await res.text();
    if (stats) stats.bytes.add(text.length);
    return { status: res.status, ok: res.ok, headers: res.headers, text };
  }

  /** The unknown symbols named by a 404 `unknown_symbol` ("unknown symbol(s): A,B"). */
  function unknownFromError(err) {
    if (!(err instanceof HttpError) || err.code !== 'unknown_symbol') return [];
    const i = err.message.lastIndexOf(':');
    return i < 0 ? [] : err.message.slice(i + 1).split(',').map((s) => s.trim().toUpperCase()).filter(Boolean);
  }

  // ---------------------------------------------------------------------------
  // Transports. Each owns one connection at a time, reconnects itself with
  // backoff, and hands envelopes to the App; the App owns the resume cursor.
  // `gen` guards every async callback: after a stop or a reconnect, callbacks
  // of the old connection fall silent.
  // ---------------------------------------------------------------------------

  class Transport {
    constructor(app, name) {
      this.app = app;
      this.name = name;
      this.stats = new Stats();
      this.gen = 0;
      this.attempt = 0;
      this.timer = 0;
      this.running = false;
      this.upAt = 0;
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
      if (!this.app.requestSymbols().length) {
        this.app.transportIdle(this);
        return;
      }
      this.app.transportConnecting(this);
      this.connect(gen);
    }

    live(gen) {
      return this.running && gen === this.gen;
    }

    /** The connection works: report it once per connection. */
    up() {
      if (this.upAt) return;
      this.upAt = performance.now();
      this.app.transportUp(this);
    }

    /** Drops the connection and schedules the next attempt. */
    retry(reason, delayMs) {
      if (!this.running) return;
      // A connection that stayed up a while was healthy: restart the backoff.
      if (this.upAt && performance.now() - this.upAt > 5000) this.attempt = 0;
      this.close();
      this.gen++;
      const delay = delayMs ?? backoff(this.attempt);
      this.attempt++;
      this.app.transportDown(this, delay, reason);
      this.timer = setTimeout(() => this.open(), delay);
    }

    /** Retry now if waiting in backoff (e.g. the browser came back online). */
    kick() {
      if (this.running && !this.upAt) this.open();
    }

    /** Watchlist changed. URL-bound transports simply reconnect with the new list. */
    symbolsChanged() {
      if (this.running) this.open();
    }

    connect(_gen) {}

    /** The App moved the resume cursor backwards or to a new session. */
    cursorReset() {}

    close() {
      this.upAt = 0;
    }
  }

  /** WebSocket, JSON text or MessagePack binary frames. */
  class WsTransport extends Transport {
    constructor(app, msgpack) {
      super(app, msgpack ? 'ws-msgpack' : 'ws');
      this.msgpack = msgpack;
      this.ws = null;
      this.heartbeat = 0;
      this.lastRx = 0;
      this.shutdownMs = null;
    }

    connect(gen) {
      let ws;
      try {
        ws = this.msgpack ? new WebSocket(apiUrl('v1/ws', true), 'tickrelay.msgpack') : new WebSocket(apiUrl('v1/ws', true));
      } catch (e) {
        this.retry(String(e.message || e));
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      this.shutdownMs = null;
      this.stats.requests.add(1); // the upgrade request

      ws.onopen = () => {
        if (!this.live(gen)) return;
        this.lastRx = performance.now();
        this.subscribe(this.app.requestSymbols(), this.app.cursor);
        // Server pings are invisible to JS, so we ping too: the pongs prove the
        // path is alive even when the watchlist is quiet.
        this.heartbeat = setInterval(() => {
          if (!this.live(gen)) return;
          if (performance.now() - this.lastRx > 25000) this.retry('no data for 25 s');
          else this.send({ op: 'ping' });
        }, 10000);
        this.up();
      };

      ws.onmessage = (e) => {
        if (!this.live(gen)) return;
        this.lastRx = performance.now();
        let frame;
        let rawInts = false;
        try {
          if (typeof e.data === 'string') {
            this.stats.bytes.add(e.data.length);
            frame = JSON.parse(e.data);
          } else {
            this.stats.bytes.add(e.data.byteLength);
            frame = decodeMsgpack(e.data);
            rawInts = true;
          }
        } catch (err) {
          this.app.message('bad frame: ' + err.message, true);
          return;
        }
        this.onFrame(frame, rawInts);
      };

      ws.onclose = (e) => {
        if (!this.live(gen)) return;
        this.ws = null;
        this.retry(closeReason(e), this.shutdownMs ?? (e.code === 4009 || e.code === 4001 ? Math.max(5000, backoff(this.attempt)) : undefined));
      };

      ws.onerror = () => { /* onclose follows with the details */ };
    }

    onFrame(f, rawInts) {
      if (!f || typeof f !== 'object') return;
      const app = this.app;
      switch (f.type) {
        case 'snapshot':
          // Catch-up after (re)subscribing: its quotes may be old, so they
          // would measure the outage, not tick-to-screen latency.
          app.onEnvelope(f, { kind: 'stream', rawInts, stats: this.stats, sample: false });
          break;
        case 'ticks':
          app.onEnvelope(f, { kind: 'stream', rawInts, stats: this.stats });
          break;
        case 'subscribed':
          if (Array.isArray(f.unknown) && f.unknown.length) app.markUnknown(f.unknown.map(String));
          break;
        case 'feed':
          app.onFeed(f.status, f.session, f);
          break;
        case 'pong':
          break;
        case 'error':
          app.message('server: ' + (f.message || f.code), true);
          break;
        case 'shutdown': {
          // Spread reconnects over the server's hint so clients don't stampede.
          const ms = toNum(f.reconnect_ms);
          this.shutdownMs = (ms ?? 1000) + Math.random() * 250;
          app.message('server shutting down; reconnecting in ' + (this.shutdownMs / 1000).toFixed(1) + ' s');
          break;
        }
        default:
          break;
      }
    }

    send(obj) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
    }

    subscribe(symbols, cursor) {
      if (!symbols.length) return;
      const msg = { op: 'subscribe', symbols, mode: 'conflate', batch_ms: batchMs() };
      if (cursor) msg.since = cursorText(cursor);
      this.send(msg);
    }

    /** A WebSocket changes its subscription in place, without reconnecting. */
    symbolsChanged(added, removed, since) {
      if (!this.running) return;
      const ws = this.ws;
      if (ws && ws.readyState === WebSocket.CONNECTING) return; // onopen subscribes the current list
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        this.open();
        return;
      }
      if (removed.length) this.send({ op: 'unsubscribe', symbols: removed });
      this.subscribe(added, since);
    }

    close() {
      super.close();
      clearInterval(this.heartbeat);
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

  /** Server-Sent Events. We reconnect by hand rather than letting EventSource
   *  do it: a refused or non-200 reconnect would leave it CLOSED anyway, and by
   *  hand we control backoff and pass last_event_id from our own cursor. */
  class SseTransport extends Transport {
    constructor(app) {
      super(app, 'sse');
      this.es = null;
    }

    connect(gen) {
      let path = 'v1/stream?symbols=' + symParam(this.app.requestSymbols()) + batchParam();
      if (this.app.cursor) path += '&last_event_id=' + encodeURIComponent(cursorText(this.app.cursor));
      const es = new EventSource(apiUrl(path));
      this.es = es;
      this.stats.requests.add(1);
      let shutdownMs = null;

      const data = (e, name) => {
        if (!this.live(gen)) return null;
        // Approximate wire size: the data plus the event/id lines.
        this.stats.bytes.add(e.data.length + name.length + (e.lastEventId || '').length + 20);
        try {
          return JSON.parse(e.data);
        } catch (_) {
          this.app.message('bad ' + name + ' event', true);
          return null;
        }
      };
      const sessionOf = (id) => {
        const i = id ? id.lastIndexOf(':') : -1;
        return i > 0 ? id.slice(0, i) : undefined;
      };

      es.onopen = () => {
        if (this.live(gen)) this.up();
      };
      es.addEventListener('snapshot', (e) => {
        const d = data(e, 'snapshot');
        if (d) this.app.onEnvelope(d, { kind: 'stream', stats: this.stats, session: sessionOf(e.lastEventId), sample: false });
      });
      es.addEventListener('tick', (e) => {
        const d = data(e, 'tick');
        if (d) this.app.onEnvelope(d, { kind: 'stream', stats: this.stats, session: sessionOf(e.lastEventId) });
      });
      es.addEventListener('feed', (e) => {
        const d = data(e, 'feed');
        if (d) this.app.onFeed(d.status, d.session, d);
      });
      es.addEventListener('shutdown', (e) => {
        const d = data(e, 'shutdown') || {};
        shutdownMs = (toNum(d.reconnect_ms) ?? 1000) + Math.random() * 250;
        this.app.message('server shutting down; reconnecting in ' + (shutdownMs / 1000).toFixed(1) + ' s');
      });
      // One listener for both: a server `event: error` (a MessageEvent with
      // data) and the connection failing (a plain Event).
      es.addEventListener('error', (e) => {
        if (!this.live(gen)) return;
        if (typeof e.data === 'string' && e.data) {
          const d = data(e, 'error') || {};
          this.app.message('server: ' + (d.message || d.code || e.data), true);
          return;
        }
        // EventSource hides the HTTP status. If it never opened twice running,
        // ask REST, which names unknown symbols (404) and new sessions.
        if (!this.upAt && this.attempt >= 1) this.app.resync();
        this.retry(shutdownMs !== null ? 'server restarting' : 'stream closed', shutdownMs ?? undefined);
      });
    }

    close() {
      super.close();
      if (this.es) this.es.close();
      this.es = null;
    }
  }

  /** Long polling: one request held by the server, re-issued at once with the returned cursor. */
  class LongPollTransport extends Transport {
    constructor(app) {
      super(app, 'poll');
      this.ctl = null;
      this.afterFailure = false;
    }

    async connect(gen) {
      while (this.live(gen)) {
        const syms = this.app.requestSymbols();
        if (!syms.length) return this.open();
        // After a failure, the first poll answers soon even if nothing changed,
        // so a restarted server's new cursor is learnt without a 25 s wait.
        const timeout = this.afterFailure ? 2000 : POLL_TIMEOUT_MS;
        let path = 'v1/poll?symbols=' + symParam(syms) + '&timeout_ms=' + timeout + batchParam();
        const since = cursorText(this.app.cursor);
        if (since) path += '&since=' + encodeURIComponent(since);
        const ctl = new AbortController();
        this.ctl = ctl;
        this.inflightSince = since;
        const guard = setTimeout(() => ctl.abort(), timeout + 10000); // a hung server
        // The server holds a quiet poll for up to 25 s; a refused connection
        // fails within milliseconds. Still pending after 1 s means it's up.
        const upTimer = setTimeout(() => this.live(gen) && this.up(), 1000);
        const t0 = performance.now();
        let env;
        try {
          const r = await http(path, { signal: ctl.signal, stats: this.stats });
          if (!this.live(gen)) return;
          if (!r.ok) throw new HttpError(r.status, r.text);
          env = JSON.parse(r.text);
        } catch (e) {
          if (!this.live(gen)) return; // aborted on purpose
          this.afterFailure = true;
          this.app.noteUnknown(e);
          return this.retry(e.message || 'poll failed');
        } finally {
          clearTimeout(guard);
          clearTimeout(upTimer);
          if (this.ctl === ctl) this.ctl = null;
        }
        this.afterFailure = false;
        this.up();
        this.app.onEnvelope(env, { kind: 'stream', stats: this.stats });
        // "Loop immediately", unless the server answers empty instantly with
        // nothing new, which would otherwise become a hot loop.
        if ((!env.quotes || !env.quotes.length) && performance.now() - t0 < 100 && cursorText(this.app.cursor) === since) {
          await new Promise((r) => setTimeout(r, 1000));
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
      if (this.running && this.ctl && this.inflightSince !== cursorText(this.app.cursor)) this.restart();
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

  /** Short polling: the REST snapshot every N ms, with If-None-Match → 304. */
  class ShortPollTransport extends Transport {
    constructor(app) {
      super(app, 'snapshot');
      this.ctl = null;
      this.etag = null;
    }

    async connect(gen) {
      while (this.live(gen)) {
        const syms = this.app.requestSymbols();
        if (!syms.length) return this.open();
        const t0 = performance.now();
        const ctl = new AbortController();
        this.ctl = ctl;
        const guard = setTimeout(() => ctl.abort(), 15000);
        try {
          const headers = this.etag ? { 'If-None-Match': this.etag } : {};
          const r = await http('v1/snapshot?symbols=' + symParam(syms), { signal: ctl.signal, headers, stats: this.stats });
          if (!this.live(gen)) return;
          if (r.status === 304) {
            this.up();
          } else if (r.ok) {
            const env = JSON.parse(r.text);
            this.etag = r.headers.get('ETag');
            this.up();
            this.app.onEnvelope(env, { kind: 'full', stats: this.stats, sentAt: t0 });
          } else {
            throw new HttpError(r.status, r.text);
          }
        } catch (e) {
          if (!this.live(gen)) return;
          this.app.noteUnknown(e);
          return this.retry(e.message || 'snapshot failed');
        } finally {
          clearTimeout(guard);
        }
        // Fixed rate: the interval counts from the start of the request.
        const wait = this.app.pollInterval - (performance.now() - t0);
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

  function makeTransport(app, name) {
    switch (name) {
      case 'ws-msgpack': return new WsTransport(app, true);
      case 'sse': return new SseTransport(app);
      case 'poll': return new LongPollTransport(app);
      case 'snapshot': return new ShortPollTransport(app);
      default: return new WsTransport(app, false);
    }
  }

  // ---------------------------------------------------------------------------
  // The App: watchlist, rows, resume cursor, status and rendering.
  //
  // Merge rule, per symbol: a quote replaces the shown one if it belongs to
  // another session, or has a higher `seq` in the same session. That makes
  // REST/stream races, resume overlaps and duplicate deliveries harmless.
  // ---------------------------------------------------------------------------

  const STATUS_TEXT = {
    connecting: 'Connecting',
    live: 'Live',
    stale: 'Feed stale',
    recovering: 'Recovering',
    reconnecting: 'Reconnecting',
    disconnected: 'Disconnected',
    idle: 'Idle',
  };

  class App {
    constructor() {
      this.directory = new Map(); // symbol → {symbol, name, prevClose}
      this.dirList = [];
      this.dirAt = 0;
      this.dirTimer = 0;
      this.dirRechecks = 0;
      this.watchlist = [];
      this.rows = new Map(); // symbol → row (DOM + current quote)
      this.cursor = null; // {session, seq}: resume point, from the last envelope
      this.epoch = 0; // bumped whenever a session is adopted
      this.feedStatus = 'live';
      this.conn = 'connecting';
      this.retryAt = 0;
      this.transport = null;
      this.transportName = 'ws';
      this.pending = new Map();
      this.flushQueued = false;
      this.visibleAt = 0;
      this.resyncing = false;
      this.resyncAgain = false;
      this.lastResync = -Infinity;
      this.needResync = false;
      this.cursorAt = 0;
      this.fillAt = -Infinity;
      this.changeTimer = 0;
      this.msgTimer = 0;
      this.changes = { added: new Set(), removed: new Set() };
      this.pollInterval = 1000;
      this.urlSymbols = pageParams.has('symbols');

      // Test hooks (SPEC'd for automated browser tests); mutated in place.
      this.hooks = {
        transport: 'ws',
        updates: 0,
        connected: false,
        lastSeq: null,
        session: null,
        status: 'connecting',
        latency: { p50: null, p99: null },
      };
      window.tickrelay = this.hooks;

      this.el = {
        tbody: $('#quotes tbody'),
        status: $('#status'),
        statusLabel: $('#status .label'),
        statusDetail: $('#status .detail'),
        transport: $('#transport'),
        interval: $('#interval'),
        intervalCtl: $('#interval-ctl'),
        search: $('#search'),
        results: $('#results'),
        count: $('#wl-count'),
        cursor: $('#cursor'),
        msg: $('#msg'),
        empty: $('#empty'),
        totals: $('#totals'),
        ups: $('#st-ups'),
        rpm: $('#st-rpm'),
        bps: $('#st-bps'),
        p50: $('#st-p50'),
        p99: $('#st-p99'),
      };
    }

    // --- boot -----------------------------------------------------------------

    async boot() {
      const fromUrl = pageParams.get('transport');
      const saved = store.get('transport', 'ws');
      this.transportName = TRANSPORTS.includes(fromUrl) ? fromUrl : TRANSPORTS.includes(saved) ? saved : 'ws';
      this.hooks.transport = this.transportName;
      this.el.transport.value = this.transportName;
      this.pollInterval = clampInterval(store.get('pollInterval', 1000));
      this.el.interval.value = this.pollInterval;
      this.el.intervalCtl.hidden = this.transportName !== 'snapshot';

      this.bindUi();
      clock.calibrate();
      setInterval(() => clock.calibrate(), 1000);
      setInterval(() => this.renderAges(), 250);
      setInterval(() => this.renderStats(), 500);
      this.renderStatus();

      // Initial prices always come from REST; the transport starts after.
      for (let attempt = 0; ; attempt++) {
        try {
          await this.loadDirectory();
          if (!this.watchlist.length && !this.rows.size) this.initWatchlist();
          if (!this.watchlist.length && !this.urlSymbols && !this.dirList.length) {
            throw new Error('waiting for the symbol directory');
          }
          await this.restSnapshot(this.requestSymbols(), 'full');
          break;
        } catch (e) {
          const delay = backoff(attempt);
          this.conn = attempt >= 3 ? 'disconnected' : 'reconnecting';
          this.retryAt = performance.now() + delay;
          this.message(e.message || String(e), true);
          this.renderStatus();
          await new Promise((r) => setTimeout(r, delay));
        }
      }
      this.message('');
      this.startTransport();
    }

    /** Watchlist precedence: ?symbols= › saved › the first DEFAULT_WATCH of the directory. */
    initWatchlist() {
      let list = null;
      if (this.urlSymbols) {
        list = pageParams.get('symbols').split(',');
      } else {
        const saved = store.get('watchlist', null);
        // A saved list from another symbol universe (none of it known) is dropped.
        if (Array.isArray(saved) && saved.some((s) => this.directory.has(String(s).toUpperCase()))) list = saved;
      }
      if (!list) list = this.dirList.slice(0, DEFAULT_WATCH).map((d) => d.symbol);
      const clean = [];
      for (const s of list) {
        const sym = String(s).trim().toUpperCase();
        if (SYMBOL_RE.test(sym) && !clean.includes(sym) && clean.length < MAX_WATCH) clean.push(sym);
      }
      this.watchlist = clean;
      for (const sym of clean) this.addRow(sym);
      this.renderCount();
    }

    async loadDirectory() {
      const r = await http('v1/symbols');
      if (!r.ok) throw new HttpError(r.status, r.text);
      const data = JSON.parse(r.text);
      const list = Array.isArray(data) ? data : data && Array.isArray(data.symbols) ? data.symbols : [];
      const dir = new Map();
      for (const e of list) {
        const d = typeof e === 'string' ? { symbol: e } : e;
        if (!d || d.symbol == null) continue;
        const symbol = String(d.symbol).toUpperCase();
        dir.set(symbol, { symbol, name: d.name ? String(d.name) : '', prevClose: toPrice(d.prev_close, false) });
      }
      const before = this.requestSymbols();
      this.directory = dir;
      this.dirList = [...dir.values()];
      this.dirAt = performance.now();
      for (const row of this.rows.values()) {
        const info = dir.get(row.symbol);
        // The relay lists it (again): whatever called it unknown is over, e.g.
        // a restarted relay answering before the feed's directory arrived.
        if (info) row.serverUnknown = false;
        row.cells.name.textContent = info ? info.name : dir.size ? 'not in directory' : '';
        row.tr.classList.toggle('unknown', dir.size > 0 && !info);
        if (info && !row.q) this.renderRow(row);
      }
      // Symbols that appeared or vanished change what we subscribe to.
      const after = this.requestSymbols();
      const added = after.filter((s) => !before.includes(s));
      const removed = before.filter((s) => !after.includes(s));
      if (this.transport && (added.length || removed.length)) this.queueChange(added, removed);
      if (this.watchlist.some((s) => !dir.has(s) || this.rows.get(s)?.serverUnknown)) this.recheckDirectory();
    }

    /** Some watched symbols are not (yet) known to the relay: look again a
     *  few times, 1 s, 2 s … 30 s apart, then leave them marked. A relay
     *  that just restarted learns the directory from the feed a moment after
     *  it starts answering; a real typo stays unknown. */
    recheckDirectory() {
      if (this.dirTimer || this.dirRechecks >= 6) return;
      const delay = Math.min(30000, 1000 * 2 ** this.dirRechecks++);
      this.dirTimer = setTimeout(() => {
        this.dirTimer = 0;
        this.loadDirectory().catch(() => this.recheckDirectory());
      }, delay);
    }

    // --- watchlist --------------------------------------------------------------

    /** What we ask the server for: the watchlist minus symbols it doesn't know. */
    requestSymbols() {
      if (!this.directory.size) return this.watchlist.filter((s) => !this.rows.get(s)?.serverUnknown);
      return this.watchlist.filter((s) => this.directory.has(s) && !this.rows.get(s)?.serverUnknown);
    }

    add(symbol) {
      const sym = String(symbol).trim().toUpperCase();
      this.dirRechecks = 0;
      if (!SYMBOL_RE.test(sym)) return this.message('not a ticker: ' + symbol, true);
      if (this.rows.has(sym)) return this.highlight(sym);
      if (this.watchlist.length >= MAX_WATCH) return this.message('watchlist is full (' + MAX_WATCH + ')', true);
      this.watchlist.push(sym);
      this.addRow(sym);
      this.saveWatchlist();
      this.highlight(sym);
      if (this.requestSymbols().includes(sym)) this.queueChange([sym], []);
      else this.message(sym + ' is not in the symbol directory', true);
    }

    remove(symbol) {
      const row = this.rows.get(symbol);
      if (!row) return;
      const wasRequested = this.requestSymbols().includes(symbol);
      this.watchlist = this.watchlist.filter((s) => s !== symbol);
      row.tr.remove();
      this.rows.delete(symbol);
      this.pending.delete(symbol);
      this.saveWatchlist();
      if (wasRequested) this.queueChange([], [symbol]);
    }

    saveWatchlist() {
      this.renderCount();
      if (this.urlSymbols) {
        // The URL chose the list; keep it the source of truth across reloads.
        const u = new URL(location.href);
        u.searchParams.set('symbols', this.watchlist.join(','));
        history.replaceState(null, '', u);
      } else {
        store.set('watchlist', this.watchlist);
      }
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
      const added = [...this.changes.added].filter((s) => this.rows.has(s));
      const removed = [...this.changes.removed];
      this.changes = { added: new Set(), removed: new Set() };
      let since = this.cursor;
      if (added.length) {
        // New rows get their first prices from REST, then the stream resumes
        // from that snapshot's cursor for them.
        try {
          const env = await this.restSnapshot(added, 'add');
          if (env && env.session) since = { session: env.session, seq: toNum(env.seq) ?? 0 };
        } catch (e) {
          this.message('snapshot of ' + added.join(',') + ': ' + e.message, true);
        }
      }
      if (this.transport) this.transport.symbolsChanged(added, removed, since);
    }

    // --- REST snapshot ------------------------------------------------------------

    async restSnapshot(symbols, kind) {
      if (!symbols.length) return null;
      const epoch = this.epoch;
      const sentAt = performance.now();
      const r = await http('v1/snapshot?symbols=' + symParam(symbols), { stats: this.transport && this.transport.stats });
      if (!r.ok) {
        const err = new HttpError(r.status, r.text);
        this.noteUnknown(err);
        throw err;
      }
      const env = JSON.parse(r.text);
      // Symbols added while this was in flight aren't in it: then it is no
      // longer a snapshot of the whole watchlist.
      if (kind === 'full' && !this.requestSymbols().every((s) => symbols.includes(s))) kind = 'add';
      this.onEnvelope(env, { kind, epoch, sentAt, sample: false });
      return env;
    }

    /** Re-reads the whole watchlist over REST: after a session change, or when
     *  a stream went behind our cursor (a restarted feed reusing its session
     *  name, or a lagging relay). At most once a second. */
    async resync() {
      if (this.resyncing) {
        this.resyncAgain = true;
        return;
      }
      this.resyncing = true;
      this.needResync = false;
      try {
        const wait = this.lastResync + 1000 - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        this.lastResync = performance.now();
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

    /** A 404 unknown_symbol: mark those rows and stop asking for them. */
    noteUnknown(err) {
      const unknown = unknownFromError(err);
      if (unknown.length) {
        this.markUnknown(unknown);
        this.loadDirectory().catch(() => {});
      }
    }

    markUnknown(symbols) {
      let marked = 0;
      for (const s of symbols) {
        const row = this.rows.get(s);
        if (!row || row.serverUnknown) continue;
        row.serverUnknown = true;
        row.tr.classList.add('unknown');
        row.cells.name.textContent = 'unknown symbol';
        marked++;
      }
      if (marked) this.recheckDirectory();
    }

    // --- envelopes and quotes -------------------------------------------------------

    /** Every envelope from every source comes through here.
     *  kind: 'full'   — a REST snapshot of the whole requested watchlist;
     *        'add'    — a REST snapshot of newly added symbols only;
     *        'stream' — a transport's envelope (changes only). */
    onEnvelope(env, meta) {
      if (!env || typeof env !== 'object') return;
      const seq = toNum(env.seq);
      const c = this.cursor;
      const session = env.session != null ? String(env.session) : meta.session ?? (c ? c.session : '');
      const quotes = Array.isArray(env.quotes) ? env.quotes : [];
      const sample = meta.sample !== false && meta.kind !== 'add';
      const opt = { rawInts: !!meta.rawInts, stats: meta.stats || null, sample, force: false };

      // A REST answer that predates a session switch is stale, not news.
      if (meta.epoch !== undefined && meta.epoch !== this.epoch && c && session !== c.session) return;

      if (!c || session !== c.session) {
        // First contact, or a new feed session (relay or feed restarted):
        // the old cursor means nothing here. Adopt the new one.
        const hadSession = !!c;
        this.adopt(session, seq ?? 0);
        this.applyQuotes(quotes, session, opt);
        if (hadSession) {
          this.message('new feed session ' + session);
          this.loadDirectory().catch(() => {});
          // Only a full snapshot covers every row; otherwise fetch one.
          if (meta.kind !== 'full') this.resync();
        }
        return;
      }

      if (seq !== null) {
        if (meta.kind === 'add') {
          // The new symbols are only as fresh as this snapshot: never resume past it.
          c.seq = Math.min(c.seq, seq);
        } else if (seq >= c.seq) {
          if (seq > c.seq) this.cursorAt = performance.now();
          c.seq = seq;
        } else if (meta.kind === 'full') {
          if (meta.sentAt === undefined || this.cursorAt <= meta.sentAt) {
            // A whole-watchlist snapshot behind a cursor that hasn't moved since
            // we asked: the feed restarted under the same session name, or this
            // relay lags. Either way it is the truth now.
            c.seq = seq;
            this.cursorAt = performance.now();
            opt.force = true;
            if (this.transport) this.transport.cursorReset();
          }
          // Otherwise the stream moved on while it was in flight; the per-row
          // seq check keeps the newer prices.
        } else {
          this.resync();
        }
        this.renderCursor();
      }
      this.applyQuotes(quotes, session, opt);
    }

    adopt(session, seq) {
      const had = !!this.cursor;
      this.dirRechecks = 0; // a new session may bring the symbols back
      this.cursor = { session, seq };
      this.epoch++;
      this.cursorAt = performance.now();
      this.hooks.session = session;
      this.renderCursor();
      if (had && this.transport) this.transport.cursorReset();
    }

    applyQuotes(list, session, opt) {
      let n = 0;
      const at = performance.now();
      for (const raw of list) {
        if (!raw || raw.symbol == null) continue;
        const row = this.rows.get(String(raw.symbol).toUpperCase());
        if (!row) continue; // removed meanwhile
        const q = normaliseQuote(raw, opt.rawInts);
        // Older than shown: skip. Equal seq is let through: a recovered half
        // can change a symbol without moving its seq (the newest half's).
        if (!opt.force && row.session === session && q.seq < row.seq) continue;
        row.session = session;
        row.seq = q.seq;
        row.q = q;
        n++;
        const p = this.pending.get(row.symbol);
        this.pending.set(row.symbol, { row, stats: opt.sample ? opt.stats : p ? p.stats : null, at });
      }
      if (!n) return 0;
      this.hooks.updates += n;
      if (opt.stats) opt.stats.updates.add(n);
      this.scheduleFlush();
      return n;
    }

    onFeed(status, session, detail) {
      if (session != null && this.cursor && String(session) !== this.cursor.session) {
        // The relay moved to a new feed session mid-connection.
        this.adopt(String(session), 0);
        this.message('new feed session ' + session);
        this.loadDirectory().catch(() => {});
        this.resync();
      }
      if (status === 'live' || status === 'stale' || status === 'recovering') {
        this.feedStatus = status;
        // `complete: false`: the relay lacks state it is rebuilding (a late
        // join, a loss beyond repair). Every row may be missing a change
        // until it says complete again; recovered prices arrive as ticks.
        const uncertain = !!detail && detail.complete === false;
        this.feedDetail = detail || null;
        if (uncertain !== !!this.uncertain) {
          this.uncertain = uncertain;
          document.body.classList.toggle('uncertain', uncertain);
          this.hooks.uncertain = uncertain;
        }
        this.renderStatus();
      }
    }

    // --- transport lifecycle --------------------------------------------------------

    startTransport() {
      if (this.transport) this.transport.stop();
      // Pollers carry no feed status; don't keep a stale one from a stream.
      if (this.transportName === 'poll' || this.transportName === 'snapshot') this.feedStatus = 'live';
      this.transport = makeTransport(this, this.transportName);
      this.transport.start();
    }

    switchTransport(name) {
      if (!TRANSPORTS.includes(name) || name === this.transportName) return;
      this.transportName = name;
      this.hooks.transport = name;
      this.el.transport.value = name;
      this.el.intervalCtl.hidden = name !== 'snapshot';
      store.set('transport', name);
      if (pageParams.has('transport')) {
        const u = new URL(location.href);
        u.searchParams.set('transport', name);
        history.replaceState(null, '', u);
      }
      this.message('');
      // Before boot finishes there is no cursor yet; boot starts the transport.
      if (this.transport) this.startTransport();
      this.renderStats();
    }

    transportConnecting(t) {
      if (t !== this.transport) return;
      if (this.conn === 'up' || this.conn === 'idle') this.conn = 'reconnecting';
      this.retryAt = 0; // an attempt is in flight
      this.setConnected(false);
    }

    transportUp(t) {
      if (t !== this.transport) return;
      this.conn = 'up';
      this.setConnected(true);
      this.message('');
      if (this.needResync) return void this.resync();
      // Rows that never got a price (a REST call failed during an outage)
      // won't be filled by a resume, which sends only changes: ask REST.
      const missing = this.requestSymbols().filter((s) => !this.rows.get(s).q);
      if (missing.length && performance.now() - this.fillAt > 2000) {
        this.fillAt = performance.now();
        this.restSnapshot(missing, 'add').catch(() => {});
      }
    }

    transportDown(t, delay, reason) {
      if (t !== this.transport) return;
      this.conn = t.attempt > 3 ? 'disconnected' : 'reconnecting';
      this.retryAt = performance.now() + delay;
      this.setConnected(false);
      if (reason) this.message(t.name + ': ' + reason, true);
    }

    transportIdle(t) {
      if (t !== this.transport) return;
      this.conn = 'idle';
      this.setConnected(false);
    }

    setConnected(v) {
      this.hooks.connected = v;
      this.renderStatus();
    }

    // --- rendering --------------------------------------------------------------------

    addRow(sym) {
      const tr = document.createElement('tr');
      tr.dataset.symbol = sym;
      const cells = {};
      for (const k of ['sym', 'name', 'bsz', 'bid', 'ask', 'asz', 'last', 'net', 'chg', 'vol', 'age', 'x']) {
        const td = document.createElement('td');
        td.className = k;
        tr.appendChild(td);
        cells[k] = td;
      }
      cells.sym.textContent = sym;
      const info = this.directory.get(sym);
      cells.name.textContent = info ? info.name : '';
      if (info) cells.name.title = info.name;
      if (this.directory.size && !info) {
        tr.classList.add('unknown');
        cells.name.textContent = 'not in directory';
      }
      const rm = document.createElement('button');
      rm.type = 'button';
      rm.className = 'rm';
      rm.title = 'Remove ' + sym;
      rm.setAttribute('aria-label', 'Remove ' + sym);
      rm.textContent = '×';
      cells.x.appendChild(rm);
      this.el.tbody.appendChild(tr);
      const row = { symbol: sym, tr, cells, q: null, session: null, seq: -1, shown: {}, serverUnknown: false };
      this.rows.set(sym, row);
      this.el.empty.hidden = true;
      return row;
    }

    scheduleFlush() {
      if (this.flushQueued) return;
      this.flushQueued = true;
      // Paint-aligned when visible; hidden tabs get no frames, so use a timer.
      if (document.hidden) setTimeout(() => this.flush(), 250);
      else requestAnimationFrame(() => this.flush());
    }

    flush() {
      this.flushQueued = false;
      const batch = this.pending;
      this.pending = new Map();
      for (const { row } of batch.values()) this.renderRow(row);
      // Tick-to-screen: measured right after the DOM writes of this frame.
      // Updates that waited out a hidden tab would only measure the tab switch.
      if (document.hidden) return;
      const now = nowMs();
      for (const { row, stats, at } of batch.values()) {
        if (stats && row.q && row.q.tsMs !== null && at >= this.visibleAt) stats.latency.add(now - row.q.tsMs);
      }
    }

    renderRow(row) {
      const q = row.q;
      const c = row.cells;
      row.tr.dataset.seq = q ? String(q.seq) : '';
      if (!q) {
        for (const k of ['bsz', 'bid', 'ask', 'asz', 'last', 'net', 'chg', 'vol', 'age']) c[k].textContent = '';
        return;
      }
      this.setPrice(row, 'bid', q.bid);
      this.setPrice(row, 'ask', q.ask);
      this.setPrice(row, 'last', q.last);
      setText(c.bsz, q.bidSize === null || q.bid === null ? '' : intFmt.format(q.bidSize));
      setText(c.asz, q.askSize === null || q.ask === null ? '' : intFmt.format(q.askSize));
      setText(c.vol, q.volume === null ? '' : intFmt.format(q.volume));

      // Change against the previous close; the last trade, else the mid.
      const info = this.directory.get(row.symbol);
      const prev = q.prevClose || (info && info.prevClose) || null;
      const ref = q.last !== null ? q.last : q.bid !== null && q.ask !== null ? Math.round((q.bid + q.ask) / 2) : null;
      if (prev && ref !== null) {
        const net = ref - prev; // exact, in ten-thousandths
        const pct = (net / prev) * 100; // display only
        setText(c.net, (net > 0 ? '+' : '') + formatPrice(net));
        setText(c.chg, (pct > 0 ? '+' : '') + pct.toFixed(2) + '%');
        const title = (q.last !== null ? 'last' : 'mid') + ' vs previous close ' + formatPrice(prev);
        for (const cell of [c.net, c.chg]) {
          cell.classList.toggle('pos', net > 0);
          cell.classList.toggle('neg', net < 0);
          cell.title = title;
        }
      } else {
        setText(c.net, '');
        setText(c.chg, '');
      }
      this.renderAge(row, nowMs());
    }

    /** Writes a price cell and flashes it green/red when it moved. */
    setPrice(row, key, v) {
      const cell = row.cells[key];
      const text = formatPrice(v);
      if (cell.textContent !== text) {
        cell.textContent = text;
        // 2-decimal prices get padding so decimal points stay aligned.
        cell.classList.toggle('d2', text !== '' && text.length - text.indexOf('.') === 3);
      }
      const old = row.shown[key];
      row.shown[key] = v;
      if (old === undefined || old === null || v === null || v === old) return;
      const dir = v > old ? 'up' : 'dn';
      if (key === 'last') {
        cell.classList.toggle('tick-up', dir === 'up');
        cell.classList.toggle('tick-dn', dir === 'dn');
      }
      // At most one flash per cell per FLASH_MS: a symbol ticking 50 times a
      // second blinks instead of glowing solid, so the eye still catches the
      // cells that just moved.
      const now = performance.now();
      if (now - (cell._flashAt || -Infinity) < FLASH_MS) return;
      cell._flashAt = now;
      // Alternate between two identical animations so a new flash restarts it.
      const k = (cell._flip = cell._flip ? 0 : 1);
      cell.classList.remove('up0', 'up1', 'dn0', 'dn1');
      cell.classList.add(dir + k);
    }

    renderAge(row, now) {
      if (!row.q || row.q.tsMs === null) return;
      const s = Math.max(0, (now - row.q.tsMs) / 1000);
      setText(row.cells.age, (s < 10 ? s.toFixed(1) : String(Math.round(s))) + 's');
      row.cells.age.classList.toggle('old', s >= 30);
    }

    renderAges() {
      const now = nowMs();
      for (const row of this.rows.values()) this.renderAge(row, now);
    }

    renderStatus() {
      let status;
      let detail = '';
      if (this.conn === 'up') {
        status = this.feedStatus;
        if (status === 'stale') detail = 'no feed data';
        else if (status === 'recovering' && this.uncertain) {
          const d = this.feedDetail || {};
          const parts = ['rebuilding prices'];
          if (toNum(d.incomplete)) parts.push(toNum(d.incomplete) + ' symbols uncertain');
          if (toNum(d.lost)) parts.push(toNum(d.lost) + ' messages lost');
          detail = parts.join(' · ');
        } else if (status === 'recovering') detail = 'repairing a gap';
      } else {
        status = this.conn;
        if (this.retryAt) {
          const left = Math.max(0, this.retryAt - performance.now());
          detail = left > 0 ? 'retry in ' + (left / 1000).toFixed(left < 10000 ? 1 : 0) + ' s' : 'connecting…';
        } else if (status === 'idle') {
          detail = 'no symbols';
        }
      }
      this.hooks.status = status;
      const el = this.el.status;
      if (el.dataset.status !== status) {
        el.dataset.status = status;
        document.body.dataset.status = status;
        this.el.statusLabel.textContent = STATUS_TEXT[status] || status;
        // A background tab shows trouble in its title.
        document.title = status === 'live' || status === 'connecting' ? 'tickrelay' : (STATUS_TEXT[status] || status) + ' · tickrelay';
      }
      setText(this.el.statusDetail, detail);
    }

    renderCursor() {
      this.hooks.lastSeq = this.cursor ? this.cursor.seq : null;
      const c = this.cursor;
      setText(this.el.cursor, c ? 'session ' + c.session + ' · seq ' + intFmt.format(c.seq) : '');
    }

    renderCount() {
      setText(this.el.count, this.watchlist.length + (this.watchlist.length === 1 ? ' symbol' : ' symbols'));
      this.el.empty.hidden = this.watchlist.length > 0;
    }

    renderStats() {
      const t = this.transport;
      this.renderStatus(); // keeps the retry countdown moving
      if (!t) return;
      const s = t.stats;
      const p50 = s.latency.percentile(0.5);
      const p99 = s.latency.percentile(0.99);
      this.hooks.latency.p50 = p50;
      this.hooks.latency.p99 = p99;
      setText(this.el.ups, fmtRate(s.updates.perSecond()));
      setText(this.el.rpm, fmtRate(s.requests.perSecond() * 60));
      setText(this.el.bps, fmtBytes(s.bytes.perSecond()));
      setText(this.el.p50, fmtMs(p50));
      setText(this.el.p99, fmtMs(p99));
      setText(this.el.totals, intFmt.format(this.hooks.updates) + ' updates');
    }

    /** The toolbar message. Errors stay until cleared; notices fade after 8 s. */
    message(text, isError) {
      clearTimeout(this.msgTimer);
      setText(this.el.msg, text || '');
      this.el.msg.classList.toggle('error', !!isError && !!text);
      if (text && !isError) this.msgTimer = setTimeout(() => this.message(''), 8000);
    }

    highlight(sym) {
      const row = this.rows.get(sym);
      if (!row) return;
      row.tr.scrollIntoView({ block: 'nearest' });
      row.tr.classList.remove('hl');
      void row.tr.offsetWidth; // restart the animation
      row.tr.classList.add('hl');
    }

    // --- UI events -----------------------------------------------------------------------

    bindUi() {
      this.el.transport.addEventListener('change', () => this.switchTransport(this.el.transport.value));
      const batch = $('#batch');
      if (batch) {
        batch.checked = batchMs() > 0;
        batch.addEventListener('change', () => {
          store.set('batch', batch.checked);
          if (this.transport) this.startTransport();
        });
      }
      this.el.interval.addEventListener('change', () => {
        this.pollInterval = clampInterval(this.el.interval.value);
        this.el.interval.value = this.pollInterval;
        store.set('pollInterval', this.pollInterval);
        if (this.transportName === 'snapshot' && this.transport) this.transport.open();
      });
      this.el.tbody.addEventListener('click', (e) => {
        const btn = e.target.closest('button.rm');
        if (btn) this.remove(btn.closest('tr').dataset.symbol);
      });
      this.bindSearch();
      document.addEventListener('visibilitychange', () => {
        if (!document.hidden) {
          this.visibleAt = performance.now();
          if (this.pending.size) this.scheduleFlush();
        }
      });
      window.addEventListener('online', () => this.transport && this.transport.kick());
    }

    bindSearch() {
      const input = this.el.search;
      const list = this.el.results;
      let items = [];
      let sel = 0;

      const close = () => {
        list.hidden = true;
        items = [];
      };
      const show = () => {
        const q = input.value.trim().toUpperCase();
        if (!q) return close();
        items = this.searchDirectory(q, 12);
        // Not in the (possibly stale) directory but a valid ticker: offer it anyway.
        if (!items.length && SYMBOL_RE.test(q)) items = [{ symbol: q, name: '', prevClose: null, adhoc: true }];
        sel = 0;
        list.replaceChildren(...items.map((d, i) => {
          const li = document.createElement('li');
          li.setAttribute('role', 'option');
          li.dataset.symbol = d.symbol;
          if (i === sel) li.classList.add('sel');
          if (this.rows.has(d.symbol)) li.classList.add('have');
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
        this.add(sym);
        input.value = '';
        close();
      };

      input.addEventListener('input', show);
      input.addEventListener('focus', () => {
        // The directory grows as the feed announces symbols; refresh if old.
        if (performance.now() - this.dirAt > 30000) this.loadDirectory().then(show).catch(() => {});
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

    /** Exact ticker first, then ticker prefixes, then name matches. */
    searchDirectory(q, limit) {
      const exact = [];
      const prefix = [];
      const name = [];
      const lq = q.toLowerCase();
      for (const d of this.dirList) {
        if (d.symbol === q) exact.push(d);
        else if (d.symbol.startsWith(q)) { if (prefix.length < limit) prefix.push(d); }
        else if (name.length < limit && d.name.toLowerCase().includes(lq)) name.push(d);
        if (exact.length && prefix.length >= limit) break;
      }
      return exact.concat(prefix, name).slice(0, limit);
    }
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function clampInterval(v) {
    const n = Math.round(Number(v));
    return Number.isFinite(n) ? Math.min(60000, Math.max(100, n)) : 1000;
  }

  function fmtRate(v) {
    return v >= 100 ? intFmt.format(Math.round(v)) : v.toFixed(1);
  }

  function fmtBytes(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(2) + ' MB/s';
    if (v >= 1e3) return (v / 1e3).toFixed(1) + ' kB/s';
    return Math.round(v) + ' B/s';
  }

  function fmtMs(v) {
    if (v === null) return '–';
    return (Math.abs(v) >= 100 ? Math.round(v) : v.toFixed(Math.abs(v) >= 10 ? 1 : 2)) + ' ms';
  }

  // ---------------------------------------------------------------------------
  // Boot.
  // ---------------------------------------------------------------------------

  const app = new App();
  app.boot();
})();
