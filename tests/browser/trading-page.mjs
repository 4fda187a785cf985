#!/usr/bin/env node
// The trading page in a real browser: headless Chromium driven by Playwright
// against a real `tickrelay demo` (relay + in-process simulator on loopback
// multicast).
//
// Over 700 lines because it is one scenario, step by step, against one page
// session (each step depends on the state the previous left).
//
//   node trading-page.mjs [TICKRELAY_BIN] [SCREENSHOT_DIR]
//
// Arguments may also come from the environment: TICKRELAY_BIN, SCREENSHOT_DIR;
// CHROMIUM overrides /usr/bin/chromium. tests/it/browser.rs runs this with the
// binary cargo just built. Exit 0 when every check passed; otherwise exit 1
// with the failed check, what was last seen, the page's errors and the
// relay's last log lines.
//
// What it checks, on the page as a user sees it (the DOM, not internals):
//   1. per transport (ws, ws-msgpack, sse, poll, snapshot), on a fresh load:
//      the table fills from REST before the transport connects, every row
//      shows a quote, prices then change on screen, and the rows agree with
//      the relay's own /v1/snapshot; over WebSocket, Chromium agreed
//      permessage-deflate (the relay runs `--deflate small_context`);
//   2. switching transports live (the <select>) keeps the table live and
//      closes the old connection on the relay;
//   3. per transport, the relay is SIGKILLed and restarted on the same port
//      (a new feed session): the page shows it is down, then recovers by
//      itself, without a reload, onto the new session, with every row
//      refreshed;
//   4. when the relay calls the watched symbols unknown once (as a relay
//      that is still starting does), the page looks again and recovers;
//   5. nothing on the page throws, and it asks for nothing off loopback;
//   6. the compare view draws two transports side by side;
//   7. the user menu (the demo's users): choosing one reconnects as that
//      user (the relay counts a connection of its class), and a delayed
//      user gets the "delayed 15 min" badge while the page keeps running;
//      the compare view shows the two users side by side;
//   8. the depth ladder: clicking a symbol opens its book, live over each
//      transport the page can use, sizes drawn as bars to scale, sorted,
//      every frame checked, equal to /v1/book; the same click opens its
//      candlestick chart (Lightweight Charts' canvas, the TradingView
//      attribution shown) and its time and sales: the tape gains rows and
//      the last candle changes while the feed runs, the tape holds what
//      /v1/trades holds, the candles what /v1/bars holds, at 1 min and 1 s;
//      fed by the relay's streams (WebSocket, then SSE when the page
//      switches to it), with no REST poll beside them.
// Screenshots of each stage go to SCREENSHOT_DIR.
//
// Network: the relay listens on 127.0.0.1 and its simulator publishes on a
// 239.255.x.y group via 127.0.0.1 with TTL 0 (the demo's defaults); Chromium
// runs with the background-networking, component-update and sync features off.

import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

// ----------------------------------------------------------------------------
// Settings.
// ----------------------------------------------------------------------------

const BIN = process.argv[2] || process.env.TICKRELAY_BIN;
const SHOTS = path.resolve(process.argv[3] || process.env.SCREENSHOT_DIR || path.join(os.tmpdir(), 'tickrelay-browser-shots'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const TRANSPORTS = ['ws', 'ws-msgpack', 'sse', 'poll', 'snapshot'];
const FIRST_TICKERS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA'];
const VIEWPORT = { width: 1280, height: 800 };
const SIM_SYMBOLS = 80;
const SIM_RATE = 400; // msg/s: every watched symbol moves several times a second
const TOTAL_BUDGET_MS = 210_000; // the whole run, cleanup included, stays under 3.5 minutes (tests/it/browser.rs waits 4)
const WAIT_MS = 15_000; // default for one wait
const OUTAGE_MS = 3000; // how long the relay stays dead in each restart check

// ----------------------------------------------------------------------------
// Output and waiting.
// ----------------------------------------------------------------------------

const t0 = Date.now();
const deadline = t0 + TOTAL_BUDGET_MS - 10_000; // leave time to clean up
const secs = (ms) => (ms / 1000).toFixed(1) + ' s';
const stamp = () => ('[' + ((Date.now() - t0) / 1000).toFixed(1).padStart(5) + 's]');
const log = (msg) => console.log(stamp() + ' ' + msg);
let passed = 0;
const ok = (msg) => {
  passed++;
  log('ok   ' + msg);
};

class Failure extends Error {}
const fail = (msg) => {
  throw new Failure(msg);
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Rejects after `ms` with a message naming `what`. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure('timed out after ' + secs(ms) + ': ' + what)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Polls `probe` until it returns { done: true, value }, or fails after
 * `timeoutMs` saying what was awaited and what was seen last.
 */
async function waitFor(what, probe, { timeoutMs = WAIT_MS, everyMs = 100 } = {}) {
  const start = Date.now();
  const until = Math.min(start + timeoutMs, deadline);
  let last = 'nothing yet';
  for (;;) {
    const r = await withTimeout(probe(), 10_000, 'a probe while waiting for ' + what);
    if (r.done) return { value: r.value, ms: Date.now() - start };
    if (r.seen !== undefined) last = r.seen;
    if (Date.now() >= until) {
      const why = Date.now() >= deadline ? 'the total time budget ran out' : 'timed out after ' + secs(timeoutMs);
      fail(why + ' waiting for ' + what + '\n       last seen: ' + last);
    }
    await sleep(everyMs);
  }
}

// ----------------------------------------------------------------------------
// Ports, groups and the relay process.
// ----------------------------------------------------------------------------

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.on('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A 239.255.x.y group of its own: the other tests use x in 10..209. */
function uniqueGroup() {
  const x = 210 + (process.pid % 40);
  const y = 1 + Math.floor(Math.random() * 250);
  return `239.255.${x}.${y}`;
}

/** `tickrelay demo` on a fixed port, so a restart comes back at the same URL. */
class Relay {
  constructor(bin, httpPort, feed) {
    this.bin = bin;
    this.httpPort = httpPort;
    this.feed = feed;
    this.child = null;
    this.logLines = [];
    this.base = null;
  }

  args() {
    return [
      'demo',
      '--http', `127.0.0.1:${this.httpPort}`,
      '--feed-a', this.feed,
      '--interface', '127.0.0.1',
      '--symbols', String(SIM_SYMBOLS),
      '--rate', String(SIM_RATE),
      // Context takeover in a small window: Chromium's own inflater must
      // read it (checked in freshLoad).
      '--deflate', 'small_context',
    ];
  }

  /** Starts it and waits for "tickrelay listening on URL"; retries if the port is briefly still taken. */
  async start() {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startOnce();
      } catch (e) {
        if (attempt >= 5 || !/in use|cannot listen/i.test(e.message)) throw e;
        log('     relay could not bind yet (' + e.message.split('\n')[0] + '); retrying');
        await sleep(300);
      }
    }
  }

  startOnce() {
    // Only our settings: no TICKRELAY_* from the environment (a token, say).
    const env = { ...process.env, RUST_LOG: process.env.TEST_RELAY_LOG || 'warn', NO_COLOR: '1' };
    for (const k of Object.keys(env)) if (k.startsWith('TICKRELAY_')) delete env[k];
    const child = spawn(this.bin, this.args(), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const keep = (chunk) => {
      for (const line of String(chunk).split('\n')) {
        if (!line.trim()) continue;
        this.logLines.push(line);
        if (this.logLines.length > 60) this.logLines.shift();
      }
    };
    child.stderr.on('data', keep);
    return withTimeout(new Promise((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (chunk) => {
        keep(chunk);
        buf += chunk;
        const m = /tickrelay listening on (\S+)/.exec(buf);
        if (m && !this.base) {
          this.base = m[1].replace(/\/$/, '');
          resolve(this.base);
        }
      });
      child.on('error', (e) => reject(new Failure('cannot start ' + this.bin + ': ' + e.message)));
      child.on('exit', (code, signal) => {
        if (!this.base || this.child === child) {
          reject(new Failure('relay exited (' + (signal || 'code ' + code) + ') before listening:\n' + this.tail(10)));
        }
      });
    }), 20_000, 'the relay to print "tickrelay listening on"').finally(() => {
      if (!this.base) this.stopNow();
    });
  }

  /** SIGKILL, and wait until the process is gone. */
  async kill() {
    const child = this.child;
    if (!child) return;
    this.child = null;
    this.base = null;
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await withTimeout(gone, 5000, 'the killed relay to exit');
    }
  }

  /** Synchronous last resort, for exit paths. */
  stopNow() {
    const child = this.child;
    this.child = null;
    if (child && child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGKILL');
      } catch (_) { /* gone */ }
    }
  }

  tail(n) {
    return this.logLines.slice(-n).map((l) => '       relay| ' + l).join('\n');
  }
}

async function getJson(url) {
  const res = await withTimeout(fetch(url, { cache: 'no-store' }), 5000, 'GET ' + url);
  const text = await res.text();
  if (!res.ok) fail('GET ' + url + ' → ' + res.status + ' ' + text.slice(0, 200));
  return JSON.parse(text);
}

async function metric(base, name) {
  const res = await withTimeout(fetch(base + '/metrics'), 5000, 'GET /metrics');
  const text = await res.text();
  for (const line of text.split('\n')) {
    if (line.startsWith(name + ' ')) return Number(line.slice(name.length + 1));
  }
  return null;
}

// ----------------------------------------------------------------------------
// The page, read as a user sees it.
// ----------------------------------------------------------------------------

/** Rows of #quotes, the banner and window.tickrelay, in one snapshot. */
function readPage(page) {
  return withTimeout(page.evaluate(() => {
    const rows = [...document.querySelectorAll('#quotes tbody tr[data-symbol]')].map((tr) => {
      const cell = (k) => {
        const td = tr.querySelector('td.' + k);
        return td ? td.textContent.trim() : null;
      };
      return {
        symbol: tr.dataset.symbol,
        seq: tr.dataset.seq || '',
        sym: cell('sym'),
        name: cell('name'),
        bid: cell('bid'),
        ask: cell('ask'),
        last: cell('last'),
        net: cell('net'),
        bsz: cell('bsz'),
        asz: cell('asz'),
        chg: cell('chg'),
        vol: cell('vol'),
        age: cell('age'),
        flashing: !!tr.querySelector('td.up0, td.up1, td.dn0, td.dn1'),
      };
    });
    const st = document.querySelector('#status');
    const tbody = document.querySelector('#quotes tbody');
    return {
      rows,
      dimmed: tbody ? Number(getComputedStyle(tbody).opacity) < 1 : false,
      status: st ? st.dataset.status : null,
      statusText: st ? [...st.querySelectorAll('.label, .detail')].map((e) => e.textContent.trim()).filter(Boolean).join(' · ') : null,
      hooks: window.tickrelay ? JSON.parse(JSON.stringify(window.tickrelay)) : null,
      marker: window.__browserTestMarker || null,
      transportSelect: document.querySelector('select#transport')?.value ?? null,
    };
  }), 5000, 'reading the page');
}

const PRICE_RE = /^\d+\.\d{2}(\d{2})?$/;
const INT_RE = /^\d{1,3}(,\d{3})*$/;

function describe(s) {
  const h = s.hooks || {};
  const rows = s.rows.slice(0, 3).map((r) => `${r.symbol} seq=${r.seq} ${r.bid}/${r.ask} last=${r.last}`).join('; ');
  return `status=${s.status} (${s.statusText}) transport=${h.transport} connected=${h.connected} updates=${h.updates} ` +
    `session=${h.session} lastSeq=${h.lastSeq}; ${s.rows.length} rows: ${rows}`;
}

/** Every watched row shows a full quote in the formats a trader expects. */
function rowProblems(rows) {
  const bad = [];
  for (const r of rows) {
    const why = [];
    if (r.sym !== r.symbol) why.push(`symbol cell "${r.sym}"`);
    if (!r.name || /not in directory|unknown/.test(r.name)) why.push(`name "${r.name}"`);
    if (!PRICE_RE.test(r.bid)) why.push(`bid "${r.bid}"`);
    if (!PRICE_RE.test(r.ask)) why.push(`ask "${r.ask}"`);
    if (r.last && !PRICE_RE.test(r.last)) why.push(`last "${r.last}"`);
    if (!INT_RE.test(r.bsz) || !INT_RE.test(r.asz)) why.push(`sizes "${r.bsz}"/"${r.asz}"`);
    if (r.vol && !INT_RE.test(r.vol)) why.push(`volume "${r.vol}"`);
    if (r.chg && !/^[+-]?\d+\.\d{2}%$/.test(r.chg)) why.push(`change "${r.chg}"`);
    if (r.net && !/^[+-]?\d+\.\d{2}(\d{2})?$/.test(r.net)) why.push(`net change "${r.net}"`);
    if (!/^\d+(\.\d)?s$/.test(r.age)) why.push(`age "${r.age}"`);
    if (!/^\d+$/.test(r.seq)) why.push(`data-seq "${r.seq}"`);
    if (PRICE_RE.test(r.bid) && PRICE_RE.test(r.ask) && ticks(r.bid) > ticks(r.ask)) why.push(`crossed ${r.bid} > ${r.ask}`);
    if (why.length) bad.push(r.symbol + ': ' + why.join(', '));
  }
  return bad;
}

/** "189.12" or "189.1200" → 1891200 (ten-thousandths), exactly. */
function ticks(s) {
  const m = /^(-?)(\d+)(?:\.(\d{1,4}))?$/.exec(s);
  if (!m) return null;
  const v = Number(m[2]) * 10000 + Number((m[3] || '').padEnd(4, '0'));
  return m[1] ? -v : v;
}

/** Waits until the table shows a price in every row of the watchlist. */
async function waitFilled(page, what) {
  return waitFor(what, async () => {
    const s = await readPage(page);
    const syms = s.rows.map((r) => r.symbol);
    const missing = FIRST_TICKERS.filter((t) => !syms.includes(t));
    if (missing.length) return { done: false, seen: 'rows missing ' + missing.join(',') + '; ' + describe(s) };
    const bad = rowProblems(s.rows);
    if (bad.length) return { done: false, seen: bad.slice(0, 3).join(' | ') };
    return { done: true, value: s };
  });
}

/**
 * Waits until prices change on screen: at least `minRows` rows show a new
 * bid, ask or last with a higher data-seq than in `before`, the page counts
 * the updates, and something flashes.
 */
async function waitMoving(page, before, what, { minRows = 3, timeoutMs = WAIT_MS } = {}) {
  const prev = new Map(before.rows.map((r) => [r.symbol, r]));
  return waitFor(what, async () => {
    const s = await readPage(page);
    let changed = 0;
    for (const r of s.rows) {
      const p = prev.get(r.symbol);
      if (!p) continue;
      const moved = r.bid !== p.bid || r.ask !== p.ask || r.last !== p.last;
      if (moved && Number(r.seq) !== Number(p.seq)) changed++;
    }
    const updates = (s.hooks?.updates ?? 0) - (before.hooks?.updates ?? 0);
    const flashing = s.rows.some((r) => r.flashing);
    const done = changed >= minRows && updates >= minRows && flashing && s.status === 'live' && s.hooks?.connected === true;
    return { done, value: { state: s, changed, updates }, seen: `${changed} rows changed, ${updates} updates, flashing=${flashing}; ${describe(s)}` };
  }, { timeoutMs });
}

/**
 * The page against the relay's own truth: read the rows first, then
 * GET /v1/snapshot. No row may be ahead of the relay (a higher seq than the
 * relay has for it, or another session), and a row at the relay's seq must
 * show exactly the relay's quote. Retried until at least `minExact` rows
 * are exactly current (the market keeps moving under the check).
 */
async function waitConsistent(page, base, what, { minExact = 1, timeoutMs = WAIT_MS } = {}) {
  return waitFor(what, async () => {
    const s = await readPage(page);
    const snap = await getJson(base + '/v1/snapshot?symbols=' + s.rows.map((r) => encodeURIComponent(r.symbol)).join(','));
    const truth = new Map(snap.quotes.map((q) => [q.symbol, q]));
    if (s.hooks?.session !== snap.session) {
      return { done: false, seen: `page session ${s.hooks?.session}, relay session ${snap.session}` };
    }
    const problems = [];
    let exact = 0;
    for (const r of s.rows) {
      const q = truth.get(r.symbol);
      if (!q) {
        problems.push(r.symbol + ' not in the relay snapshot');
        continue;
      }
      const seq = Number(r.seq);
      if (seq > q.seq) {
        problems.push(`${r.symbol} shows seq ${seq} > relay's ${q.seq} (a quote from another session?)`);
      } else if (seq === q.seq) {
        const fmtInt = (v) => (v === null || v === undefined ? '' : Number(v).toLocaleString('en-US'));
        const diffs = [];
        for (const k of ['bid', 'ask', 'last']) {
          const want = q[k] === null || q[k] === undefined ? null : ticks(q[k]);
          const got = r[k] === '' ? null : ticks(r[k]);
          if (want !== got) diffs.push(`${k} "${r[k]}" vs "${q[k]}"`);
        }
        if (r.bsz.replace(/,/g, '') !== String(q.bid_size ?? '')) diffs.push(`bid size "${r.bsz}" vs ${q.bid_size}`);
        if (r.asz.replace(/,/g, '') !== String(q.ask_size ?? '')) diffs.push(`ask size "${r.asz}" vs ${q.ask_size}`);
        if (r.vol !== fmtInt(q.volume)) diffs.push(`volume "${r.vol}" vs ${q.volume}`);
        // Net change, exact in fixed point: last − previous close.
        if (q.last != null && q.prev_close != null && r.net !== null) {
          const want = ticks(q.last) - ticks(q.prev_close);
          if (ticks(r.net.replace(/^\+/, '')) !== want) diffs.push(`net change "${r.net}" vs ${q.last} − ${q.prev_close}`);
        }
        if (diffs.length) problems.push(`${r.symbol} at seq ${seq}: ${diffs.join(', ')}`);
        else exact++;
      }
    }
    if (problems.length) return { done: false, seen: problems.slice(0, 4).join(' | ') };
    return { done: exact >= minExact, value: { exact, rows: s.rows.length }, seen: `${exact} rows exactly current` };
  }, { timeoutMs });
}

// ----------------------------------------------------------------------------
// The browser.
// ----------------------------------------------------------------------------

let browser = null;
let userDataDir = null;
const pageErrors = []; // uncaught exceptions in any page: always a failure
const consoleErrors = []; // kept for diagnostics (refused connections are expected while the relay is down)
const offLoopback = []; // any request to a non-loopback host: always a failure

async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    fail(`${CHROMIUM} is missing: install Debian's chromium (bash scripts/test.sh does it)`);
  }
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tickrelay-chromium-'));
  // Exactly our flags: Playwright's own defaults are switched off, so the
  // command line is these, the fresh profile and the automation pipe.
  const args = [...CHROMIUM_FLAGS, `--user-data-dir=${userDataDir}`, '--remote-debugging-pipe'];
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    ignoreDefaultArgs: true,
    args,
    timeout: 30_000,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  log(`     chromium ${browser.version()}: ${path.basename(CHROMIUM)} ${args.join(' ')}`);
}

/** A fresh context (own storage) and page, watched for errors and stray requests. */
async function openPage(label) {
  const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1, colorScheme: 'dark' });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  const events = []; // request order, for "REST first"
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') {
      consoleErrors.push(`${label}: ${m.text()}`);
      if (consoleErrors.length > 200) consoleErrors.shift();
    }
  });
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (/^(https?|wss?):$/.test(u.protocol) && u.hostname !== '127.0.0.1') offLoopback.push(`${label}: ${r.url()}`);
    events.push({ t: Date.now(), ev: 'request', path: u.pathname });
  });
  page.on('requestfinished', (r) => events.push({ t: Date.now(), ev: 'finished', path: new URL(r.url()).pathname }));
  const sockets = [];
  page.on('websocket', (ws) => {
    const entry = { url: ws.url(), open: true };
    sockets.push(entry);
    events.push({ t: Date.now(), ev: 'websocket', path: new URL(ws.url()).pathname });
    ws.on('close', () => { entry.open = false; });
  });
  return { context, page, events, sockets, label };
}

/** Runs `fn` on a fresh page; on failure saves FAILED-<label>.png; always closes the page. */
async function withPage(label, fn) {
  const p = await openPage(label);
  try {
    return await fn(p);
  } catch (e) {
    await screenshot(p.page, 'FAILED-' + label.replace(/\W+/g, '-')).then(
      (f) => log('     screenshot of the failure: ' + f),
      () => {},
    );
    throw e;
  } finally {
    await withTimeout(p.context.close(), 10_000, 'closing a page').catch(() => {});
  }
}

async function screenshot(page, name) {
  const file = path.join(SHOTS, name + '.png');
  await withTimeout(page.screenshot({ path: file }), 10_000, 'screenshot ' + name);
  return file;
}

function checkPageHealth(where) {
  if (pageErrors.length) fail(`uncaught error in the page (${where}): ${pageErrors.join(' | ')}`);
  if (offLoopback.length) fail(`the page asked for something off loopback (${where}): ${offLoopback.join(' | ')}`);
}

/** The transport's own connection: what must come after the REST snapshot. */
function isStreamEvent(e, transport) {
  switch (transport) {
    case 'ws':
    case 'ws-msgpack':
      return e.ev === 'websocket' && e.path === '/v1/ws';
    case 'sse':
      return e.ev === 'request' && e.path === '/v1/stream';
    case 'poll':
      return e.ev === 'request' && e.path === '/v1/poll';
    default:
      return false;
  }
}

// ----------------------------------------------------------------------------
// The scenarios.
// ----------------------------------------------------------------------------

/** 1. A fresh load on each transport: REST first, then live prices. */
async function freshLoad(relay, transport) {
  return withPage('load ' + transport, async (p) => {
    const { page, events } = p;
    await withTimeout(page.goto(relay.base + '/?transport=' + transport, { waitUntil: 'domcontentloaded' }), 15_000, 'loading the page');
    const filled = await waitFilled(page, `${transport}: the table to fill`);
    const s = filled.value;
    if (s.transportSelect !== transport) fail(`${transport}: select#transport shows "${s.transportSelect}"`);

    // REST first: the snapshot's answer arrived before the transport connected.
    const restDone = events.findIndex((e) => e.ev === 'finished' && e.path === '/v1/snapshot');
    if (restDone < 0) fail(`${transport}: the page never loaded /v1/snapshot; requests: ${events.map((e) => e.ev + ' ' + e.path).join(', ')}`);
    const streamAt = transport === 'snapshot' ? Infinity : (await waitFor(`${transport}: the transport to connect`, async () => {
      const i = events.findIndex((e) => isStreamEvent(e, transport));
      return { done: i >= 0, value: i, seen: events.map((e) => e.ev + ' ' + e.path).join(', ') };
    })).value;
    if (streamAt < restDone) {
      fail(`${transport}: the stream connected before the REST snapshot answered: ${events.map((e) => e.ev + ' ' + e.path).join(', ')}`);
    }
    ok(`${transport}: table filled from REST (${s.rows.length} rows, /v1/snapshot answered before the transport connected) in ${secs(filled.ms)}`);

    const moving = await waitMoving(page, s, `${transport}: prices to change on screen`);
    const h = moving.value.state.hooks;
    if (h.transport !== transport) fail(`${transport}: window.tickrelay.transport is "${h.transport}"`);
    if (typeof h.session !== 'string' || !h.session) fail(`${transport}: window.tickrelay.session is ${JSON.stringify(h.session)}`);
    if (!Number.isFinite(h.lastSeq)) fail(`${transport}: window.tickrelay.lastSeq is ${JSON.stringify(h.lastSeq)}`);
    ok(`${transport}: prices change on screen (${moving.value.changed} rows moved, ${moving.value.updates} updates, status live) in ${secs(moving.ms)}`);
    if (transport.startsWith('ws')) await deflateAgreed(relay, transport);

    const lat = await waitFor(`${transport}: tick-to-screen latency figures`, async () => {
      const st = await readPage(page);
      const l = st.hooks.latency || {};
      const good = Number.isFinite(l.p50) && Number.isFinite(l.p99) && l.p50 >= 0 && l.p99 >= l.p50;
      return { done: good, value: l, seen: JSON.stringify(l) };
    });
    const consistent = await waitConsistent(page, relay.base, `${transport}: the rows to agree with the relay's /v1/snapshot`);
    ok(`${transport}: rows agree with /v1/snapshot (${consistent.value.exact}/${consistent.value.rows} exactly current, none ahead); ` +
      `latency p50 ${lat.value.p50.toFixed(1)} ms, p99 ${lat.value.p99.toFixed(1)} ms`);
    await screenshot(page, 'load-' + transport);
    checkPageHealth(transport);
  });
}

/**
 * Chromium agreed permessage-deflate with the relay (small_context: context
 * takeover in a 2 KiB window) and inflated every frame the page showed: the
 * relay counts the page's WebSocket among its deflate connections, holding
 * a few KiB for it.
 */
async function deflateAgreed(relay, transport) {
  const r = await waitFor(`${transport}: the relay to count the page's WebSocket with permessage-deflate`, async () => {
    const conns = await metric(relay.base, 'tickrelay_ws_deflate_connections');
    const held = await metric(relay.base, 'tickrelay_ws_deflate_bytes');
    const done = conns >= 1 && held > 0 && held <= conns * 16 * 1024;
    return { done, value: { conns, held }, seen: `${conns} deflate connections holding ${held} bytes` };
  });
  ok(`${transport}: Chromium agreed permessage-deflate (small_context): ${r.value.conns} connection(s), ${r.value.held} bytes held by the relay`);
}

/** Loads the page on WebSocket and waits until its table is filled and moving. */
async function loadLive(page, relay, label) {
  await withTimeout(page.goto(relay.base + '/?transport=ws', { waitUntil: 'domcontentloaded' }), 15_000, 'loading the page');
  const filled = await waitFilled(page, label + ': the table to fill');
  return waitMoving(page, filled.value, label + ': ws to go live');
}

/** Open streaming connections the relay counts for `transport` (its metrics). */
function clients(base, transport) {
  return metric(base, `tickrelay_clients{transport="${transport === 'ws-msgpack' ? 'ws' : transport}"}`);
}

/** Switches with the <select> as a user would; waits for the new transport to be live. */
async function switchTo(page, transport) {
  const before = await readPage(page);
  await withTimeout(page.selectOption('select#transport', transport), 5000, 'choosing ' + transport);
  const live = await waitFor(`switch to ${transport}: the page to be live on it`, async () => {
    const s = await readPage(page);
    const done = s.hooks.transport === transport && s.status === 'live' && s.hooks.connected === true;
    return { done, value: s, seen: describe(s) };
  });
  const moving = await waitMoving(page, live.value, `switch to ${transport}: prices to keep changing`);
  return { before, ms: live.ms + moving.ms, moving };
}

/** 2. Live switching through every transport on one page. */
async function liveSwitching(relay) {
  return withPage('switching', async (p) => {
    const { page, sockets } = p;
    await loadLive(page, relay, 'switching');
    const order = ['sse', 'poll', 'snapshot', 'ws-msgpack', 'ws'];
    let from = 'ws';
    for (const to of order) {
      const r = await switchTo(page, to);
      // The old connection is gone: the relay counts no client of the old kind
      // (the page is the relay's only client), and no WebSocket stays open.
      const closed = await waitFor(`switch ${from} → ${to}: the ${from} connection to close`, async () => {
        const openWs = sockets.filter((s) => s.open).length;
        const wantWs = to.startsWith('ws') ? 1 : 0;
        const oldKind = from === 'ws-msgpack' ? 'ws' : from;
        const newKind = to === 'ws-msgpack' ? 'ws' : to;
        const old = oldKind === newKind || oldKind === 'snapshot' ? 0 : await clients(relay.base, from);
        return { done: openWs === wantWs && !old, seen: `${openWs} WebSockets open in the page, relay counts ${old} ${oldKind} clients` };
      });
      ok(`switch ${from} → ${to}: live again in ${secs(r.ms)} (${r.moving.value.changed} rows moved), old connection closed in ${secs(closed.ms)}`);
      from = to;
    }
    await screenshot(page, 'switched');
    checkPageHealth('switching');
  });
}

/** 3. Kill -9 the relay under each transport; the page must come back by itself. */
async function restarts(relay, transports) {
  return withPage('restart', async (p) => {
    const { page } = p;
    await withTimeout(page.goto(relay.base + '/?transport=' + transports[0], { waitUntil: 'domcontentloaded' }), 15_000, 'loading the page');
    const filled = await waitFilled(page, 'restart: the table to fill');
    await waitMoving(page, filled.value, `restart: ${transports[0]} to go live`);
    // Survives only if the page is never reloaded.
    await page.evaluate(() => { window.__browserTestMarker = 'no reload'; });

    for (const transport of transports) {
      const cur = await readPage(page);
      if (cur.hooks.transport !== transport) await switchTo(page, transport);
      const before = await readPage(page);
      const oldSession = before.hooks.session;

      await relay.kill();
      const killedAt = Date.now();
      const down = await waitFor(`${transport}: the page to notice the relay is gone`, async () => {
        const s = await readPage(page);
        // Disconnected in the hooks, in the banner, and the old prices dimmed.
        const done = s.hooks.connected === false && ['reconnecting', 'disconnected'].includes(s.status) && s.dimmed;
        return { done, value: s, seen: describe(s) };
      });
      if (transport === transports[0]) await screenshot(page, 'relay-down');
      // A real outage: several failed reconnects. The page must never claim
      // to be live meanwhile.
      const statuses = new Set();
      while (Date.now() - killedAt < OUTAGE_MS) {
        const s = await readPage(page);
        statuses.add(s.status);
        if (s.status === 'live' || s.hooks.connected !== false || !s.dimmed) {
          fail(`${transport}: with the relay down the page shows ${describe(s)}, dimmed=${s.dimmed}`);
        }
        await sleep(200);
      }
      const downRows = new Map((await readPage(page)).rows.map((r) => [r.symbol, r.seq]));

      await relay.start(); // same port, a new feed session
      const back = await waitFor(`${transport}: the page to recover by itself after the restart`, async () => {
        const s = await readPage(page);
        const done = s.status === 'live' && s.hooks.connected === true && s.hooks.session && s.hooks.session !== oldSession && !s.dimmed;
        return { done, value: s, seen: describe(s) };
      }, { timeoutMs: 25_000 });
      if (back.value.marker !== 'no reload') fail(`${transport}: the page was reloaded to recover`);
      if (back.value.hooks.transport !== transport) fail(`${transport}: the page changed transport to ${back.value.hooks.transport}`);
      // Every row shows a quote of the new session: each has changed since
      // the outage, and none is ahead of (or differs from) the relay's.
      const fresh = await waitFor(`${transport}: every row to show a quote of the new session`, async () => {
        const s = await readPage(page);
        const stale = s.rows.filter((r) => r.seq === downRows.get(r.symbol)).map((r) => r.symbol);
        return { done: !stale.length, seen: 'rows unchanged since the outage: ' + stale.join(',') };
      });
      await waitConsistent(page, relay.base, `${transport}: the rows to agree with the new relay's /v1/snapshot`);
      const moving = await waitMoving(page, back.value, `${transport}: prices to move again after the restart`);
      ok(`restart under ${transport}: down noticed in ${secs(down.ms)} (${[...statuses].join(', ')}); ` +
        `live again ${secs(back.ms)} after the relay came back on the same port, all rows refreshed in ${secs(fresh.ms)}, ` +
        `session ${oldSession} → ${back.value.hooks.session}, prices moving, no reload`);
      await screenshot(page, 'recovered-' + transport);
      checkPageHealth('restart ' + transport);
    }
  });
}

/**
 * 4. The relay calls the watchlist unknown for a moment, as a restarted relay
 * does in the few milliseconds before the feed's directory reaches it (seen
 * in this test: the page then sat "Live" on a frozen table). Made
 * deterministic here by answering once for the relay: a WebSocket subscribe
 * gets `unknown: [all]`, or a long poll gets 404 unknown_symbol. The page
 * must look again and come back by itself.
 */
async function brieflyUnknown(relay, transport) {
  return withPage('unknown ' + transport, async (p) => {
    const { page } = p;
    let armed = false;
    let answered = 0;
    let current = null;
    if (transport === 'ws') {
      await page.routeWebSocket(/\/v1\/ws/, (ws) => {
        current = ws;
        const server = ws.connectToServer();
        ws.onMessage((m) => {
          const f = typeof m === 'string' ? JSON.parse(m) : null;
          if (armed && f && f.op === 'subscribe') {
            armed = false;
            answered++;
            ws.send(JSON.stringify({ type: 'subscribed', symbols: [], unknown: f.symbols }));
            return; // the relay never hears it: nothing is subscribed
          }
          server.send(m);
        });
        server.onMessage((m) => ws.send(m));
      });
    } else {
      await page.route(/\/v1\/poll\?/, (route) => {
        if (!armed) return route.continue();
        armed = false;
        answered++;
        const syms = new URL(route.request().url()).searchParams.get('symbols');
        return route.fulfill({
          status: 404,
          contentType: 'application/json',
          body: JSON.stringify({ error: { code: 'unknown_symbol', message: 'unknown symbol(s): ' + syms } }),
        });
      });
    }
    await withTimeout(page.goto(relay.base + '/?transport=' + transport, { waitUntil: 'domcontentloaded' }), 15_000, 'loading the page');
    const filled = await waitFilled(page, `unknown/${transport}: the table to fill`);
    await waitMoving(page, filled.value, `unknown/${transport}: to go live`);

    armed = true;
    // A WebSocket reconnects into the armed answer; a long poll meets it on its next request.
    if (transport === 'ws') await current.close({ code: 1001, reason: 'going away' });
    await waitFor(`unknown/${transport}: the page to ask again`, async () => ({ done: answered > 0, seen: 'no request answered yet' }));
    const marked = await readPage(page);
    const back = await waitFor(`unknown/${transport}: the page to find its symbols again and go live`, async () => {
      const s = await readPage(page);
      const unknown = s.rows.filter((r) => /unknown|not in directory/.test(r.name)).length;
      const done = unknown === 0 && s.status === 'live' && s.hooks.connected === true;
      return { done, value: s, seen: `${unknown} rows marked unknown; ${describe(s)}` };
    });
    const moving = await waitMoving(page, back.value, `unknown/${transport}: prices to move again`, { minRows: Math.min(10, back.value.rows.length) });
    const shown = marked.rows.filter((r) => /unknown/.test(r.name)).length;
    ok(`${transport}: symbols called unknown once (as by a relay still starting): ` +
      `${shown ? shown + ' rows shown unknown, ' : ''}recovered by itself in ${secs(back.ms)}, ${moving.value.changed} rows moving`);
    checkPageHealth('unknown ' + transport);
  });
}

/** 6. The compare view: two transports side by side on the watchlist, each
 *  with live tick-to-screen latency and bytes per update, drawn. */
async function compareView(relay) {
  return withPage('compare', async (p) => {
    const { page } = p;
    await loadLive(page, relay, 'compare');
    await withTimeout(page.click('#compare-toggle'), 5000, 'clicking Compare');
    await withTimeout(page.selectOption('#compare .side.b select.transport', 'sse'), 5000, 'choosing SSE on the right');
    const both = await waitFor('compare: both sides to show latency and bytes per update', async () => {
      const c = await withTimeout(page.evaluate(() => {
        const h = window.tickrelayCompare || {};
        const pts = [...document.querySelectorAll('#compare svg polyline')].map((l) => (l.getAttribute('points') || '').split(' ').filter(Boolean).length);
        const visible = !document.querySelector('#compare').hidden;
        return { open: h.open, a: h.a, b: h.b, pts, visible };
      }), 5000, 'reading the compare view');
      const side = (x) => x && x.updates > 0 && x.p50 !== null && x.bytesPerUpdate > 0;
      const done = c.open && c.visible && side(c.a) && side(c.b) && c.pts.length === 4 && c.pts.every((n) => n >= 2);
      return { done, value: c, seen: JSON.stringify(c) };
    });
    const { a, b } = both.value;
    if (a.transport !== 'ws' || b.transport !== 'sse') fail(`compare: sides are ${a.transport} and ${b.transport}, not ws and sse`);
    ok(`compare: ${a.transport} p50 ${a.p50.toFixed(1)} ms, ${Math.round(a.bytesPerUpdate)} B/update vs ` +
      `${b.transport} p50 ${b.p50.toFixed(1)} ms, ${Math.round(b.bytesPerUpdate)} B/update, drawn live`);
    await screenshot(page, 'compare');
    await withTimeout(page.click('#compare-toggle'), 5000, 'closing Compare');
    const closed = await withTimeout(page.evaluate(() => document.querySelector('#compare').hidden && !window.tickrelayCompare.open), 5000, 'reading');
    if (!closed) fail('compare: the view did not close');
    checkPageHealth('compare');
  });
}

/** Reads the ladder: its hooks, whether it shows, its rows, and each drawn
 *  size bar (its width in pixels beside the size it stands for). */
function readLadder(page) {
  return withTimeout(page.evaluate(() => {
    const h = window.tickrelayLadder || {};
    const box = document.querySelector('#ladder');
    const trs = [...document.querySelectorAll('#ladder tbody tr')];
    return {
      ...h,
      visible: !!box && !box.hidden,
      title: document.querySelector('#ladder-symbol')?.textContent ?? '',
      rows: trs.map((r) => [r.className, r.querySelector('td.price')?.textContent]),
      drawn: trs.map((r) => ({
        size: Number(r.querySelector('td.size')?.textContent),
        px: r.querySelector('td.bar div')?.getBoundingClientRect().width ?? -1,
      })),
    };
  }), 5000, 'reading the ladder');
}

/** Whether the ladder's bars are drawn to scale: one per row, the largest
 *  size full width, every other in proportion (within a pixel and a half). */
function barsToScale(drawn) {
  if (!drawn.length || drawn.some((d) => d.px < 0 || !(d.size > 0))) return false;
  const big = drawn.reduce((a, d) => (d.size > a.size ? d : a));
  if (big.px < 20) return false;
  return drawn.every((d) => Math.abs(d.px - (big.px * d.size) / big.size) <= 1.5);
}

/** The ladder of `symbol` live over the page's `transport`: at least
 *  `frames` frames with no gap, sorted, both sides shown with their bars to
 *  scale; then equal to /v1/book. */
async function ladderLive(page, relay, symbol, transport, frames) {
  const ticks = (p) => Number(p.replace('.', ''));
  const live = await waitFor(`ladder over ${transport}: the book live, ${frames} frames, sorted, bars to scale`, async () => {
    const l = await readLadder(page);
    const bids = (l.bids || []).map((x) => ticks(x.price));
    const asks = (l.asks || []).map((x) => ticks(x.price));
    const sorted = bids.every((b, i) => i === 0 || bids[i - 1] > b) && asks.every((a, i) => i === 0 || asks[i - 1] < a);
    const done = l.visible && l.title === symbol && l.transport === transport && l.state === 'live' && l.frames >= frames &&
      l.gaps === 0 && bids.length > 0 && asks.length > 0 && sorted && bids[0] < asks[0] &&
      l.rows.length === bids.length + asks.length && barsToScale(l.drawn);
    return { done, value: l, seen: JSON.stringify({ ...l, rows: l.rows.length, bids: bids.length, asks: asks.length }) };
  });
  // A book's levels at a `seq` are one: the ladder must equal the /v1/book
  // answer of its own `seq`. REST is sampled often (a polled ladder is up
  // to a poll behind), every answer kept by its `seq`.
  const levels = (bids, asks) => JSON.stringify([bids, asks]);
  const answers = new Map();
  const rest = await waitFor(`ladder over ${transport}: what it shows equal to /v1/book at its seq`, async () => {
    const r = await withTimeout(fetch(`${relay.base}/v1/book/${symbol}?depth=10`).then((x) => x.json()), 5000, 'GET /v1/book');
    answers.set(r.seq, levels(r.bids.map((x) => [x[0], x[1]]), r.asks.map((x) => [x[0], x[1]])));
    const l = await readLadder(page);
    const shown = levels(l.bids.map((x) => [x.price, x.size]), l.asks.map((x) => [x.price, x.size]));
    const want = answers.get(l.seq);
    if (want !== undefined && want !== shown) fail(`ladder over ${transport}: at seq ${l.seq} it shows ${shown}, /v1/book answered ${want}`);
    return { done: want === shown && l.gaps === 0 && barsToScale(l.drawn), value: l, seen: JSON.stringify({ seq: l.seq, answers: answers.size, gaps: l.gaps }) };
  }, { everyMs: 20 });
  ok(`ladder: ${symbol} live over ${transport} in ${secs(live.ms)} (${rest.value.frames} frames, no gap, ${rest.value.drawn.length} bars to scale), equal to /v1/book in ${secs(rest.ms)}`);
}

/** 8. The depth ladder: a click on a row's symbol opens its book beside the
 *  table, kept live frame by frame over the page's own connection (prev and
 *  checksum checked by the library), each size drawn as a bar to scale;
 *  what it shows becomes equal to /v1/book — on WebSocket, then after
 *  switching to SSE, long polling and short polling. */
async function ladderView(relay) {
  return withPage('ladder', async (p) => {
    const { page } = p;
    await loadLive(page, relay, 'ladder');
    const symbol = await withTimeout(page.evaluate(() => document.querySelector('#quotes tbody tr')?.dataset.symbol), 5000, 'reading the first row');
    if (!symbol) fail('ladder: no row to click');
    await withTimeout(page.click(`#quotes tbody tr[data-symbol="${symbol}"] td.sym`), 5000, 'clicking the symbol');
    await ladderLive(page, relay, symbol, 'ws', 10);
    await screenshot(page, 'ladder');
    await chartView(page, relay, symbol);
    for (const t of ['sse', 'poll', 'snapshot']) {
      await switchTo(page, t);
      await ladderLive(page, relay, symbol, t, t === 'sse' ? 10 : 2);
    }
    await withTimeout(page.click('#ladder-close'), 5000, 'closing the ladder');
    const closed = await readLadder(page);
    if (closed.visible || closed.state !== 'closed') fail(`ladder: did not close: ${JSON.stringify(closed)}`);
    checkPageHealth('ladder');
  });
}

/** The chart and the tape the ladder's click opened (chart.js's hooks,
 *  `window.tickrelayChart`, and the DOM). */
function readChart(page) {
  return withTimeout(page.evaluate(() => {
    const box = document.querySelector('#chart');
    const plot = document.querySelector('#chart-plot');
    const canvas = plot ? [...plot.querySelectorAll('canvas')] : [];
    const attr = document.querySelector('#chart a[href^="https://www.tradingview.com/"]');
    return {
      ...(window.tickrelayChart || {}),
      visible: !!box && !box.hidden,
      title: document.querySelector('#chart-symbol')?.textContent ?? '',
      canvases: canvas.filter((c) => c.width > 0 && c.height > 0).length,
      attribution: !!attr && attr.offsetParent !== null,
      tape: [...document.querySelectorAll('#tape tbody tr')].map((r) => [Number(r.dataset.seq), r.querySelector('td.price')?.textContent, Number(r.querySelector('td.size')?.textContent)]),
    };
  }), 5000, 'reading the chart');
}

/** The tape (newest first) is what /v1/trades keeps in its range; the last
 *  candle is /v1/bars's bar of the same start as it was a moment ago (the
 *  same open, no more trades, a range inside it: a busy symbol's bar moves
 *  faster than both can be read), and the newest closed candle at 1 s is
 *  exactly /v1/bars's. */
async function chartMatchesRest(page, relay, symbol, what) {
  const ticks = (p) => Number(p.replace('.', ''));
  return waitFor(`${what}: the tape equal to /v1/trades, the candles to /v1/bars`, async () => {
    const c = await readChart(page);
    if (!c.tape.length || !c.last) return { done: false, seen: JSON.stringify({ tape: c.tape.length, last: c.last }) };
    const top = c.tape[0][0];
    const r = await withTimeout(fetch(`${relay.base}/v1/trades/${symbol}?before_seq=${top + 1}&limit=${c.tape.length}`).then((x) => x.json()), 5000, 'GET /v1/trades');
    const rest = r.trades.slice().reverse().map((t) => [t.seq, t.price, t.size]);
    const b = await withTimeout(fetch(`${relay.base}/v1/bars/${symbol}?interval=${c.interval}&limit=10`).then((x) => x.json()), 5000, 'GET /v1/bars');
    const bar = b.bars.find((x) => x.t === c.last.t);
    const l = c.last;
    const lastOk = !!bar && bar.o === l.o && bar.n >= l.n && bar.v >= l.v && ticks(bar.h) >= ticks(l.h) && ticks(bar.l) <= ticks(l.l) &&
      (bar.n > l.n || ['h', 'l', 'c', 'v'].every((k) => bar[k] === l[k]));
    const closed = c.lastClosed && b.bars.find((x) => x.t === c.lastClosed.t);
    const closedOk = c.interval !== '1s' || (!!closed && ['o', 'h', 'l', 'c', 'v', 'n', 'closed'].every((k) => closed[k] === c.lastClosed[k]));
    const sameTape = JSON.stringify(rest) === JSON.stringify(c.tape);
    return { done: sameTape && lastOk && closedOk, value: c, seen: JSON.stringify({ sameTape, tape: c.tape.slice(0, 2), rest: rest.slice(0, 2), last: c.last, bar, lastClosed: c.lastClosed, closed }) };
  });
}

/** The chart's REST reads and streams the page asks for from now on. */
function chartRequests(page) {
  const seen = { rest: [], streams: [], sockets: 0 };
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (/^\/v1\/(trades|bars)\//.test(u.pathname)) seen.rest.push(u.pathname + u.search);
    if (u.pathname === '/v1/stream' && /[?&](trades|bars)=/.test(u.search)) seen.streams.push(u.search);
  });
  page.on('websocket', (ws) => {
    if (new URL(ws.url()).pathname === '/v1/ws') seen.sockets++;
  });
  return seen;
}

async function chartView(page, relay, symbol) {
  // The chart opened with the ladder's click, on the page's WebSocket client.
  const asked = chartRequests(page);
  const first = await waitFor('chart: the canvas drawn, history loaded, the tape filled, attribution shown', async () => {
    const c = await readChart(page);
    const done = c.visible && c.title === symbol && c.symbol === symbol && c.canvases > 0 && c.attribution &&
      c.bars > 0 && c.tape.length > 0 && c.tapeRows === c.tape.length;
    return { done, value: c, seen: JSON.stringify({ ...c, tape: c.tape.length }) };
  });
  const moved = await waitFor('chart: the tape gains rows and the last candle changes', async () => {
    const c = await readChart(page);
    const tapeMoved = c.trades > first.value.trades && c.tape[0][0] > first.value.tape[0][0];
    const candleMoved = JSON.stringify(c.last) !== JSON.stringify(first.value.last) && c.barUpdates > 0;
    const seqs = c.tape.map((r) => r[0]);
    const ordered = seqs.every((q, i) => i === 0 || seqs[i - 1] > q);
    if (!ordered) fail(`chart: the tape is not newest first: ${seqs.slice(0, 10).join(',')}`);
    return { done: tapeMoved && candleMoved && c.gaps === 0, value: c, seen: JSON.stringify({ trades: c.trades, last: c.last, barUpdates: c.barUpdates, gaps: c.gaps }) };
  });
  // Live from the relay's streams (the trades and bars channels of a
  // WebSocket of the chart's own), not REST polls.
  if (moved.value.mode !== 'ws') fail(`chart: fed by ${moved.value.mode}, not the relay's WebSocket streams`);
  if (asked.rest.length) fail(`chart: REST polls beside the streams: ${asked.rest.slice(0, 5).join(' ')}`);
  await chartMatchesRest(page, relay, symbol, 'chart 1 min');
  await screenshot(page, 'chart');
  ok(`chart: ${symbol} at 1 min over ${moved.value.mode}: ${first.value.bars} bars and ${first.value.tape.length} trades of history in ${secs(first.ms)}, moving in ${secs(moved.ms)}, equal to REST`);
  await withTimeout(page.click('#chart .interval[data-interval="1s"]'), 5000, 'choosing 1 s');
  const s1 = await waitFor('chart: 1 s bars loaded and moving', async () => {
    const c = await readChart(page);
    return { done: c.interval === '1s' && c.bars > 0 && c.barUpdates > 0 && c.canvases > 0, value: c, seen: JSON.stringify({ ...c, tape: c.tape.length }) };
  });
  await chartMatchesRest(page, relay, symbol, 'chart 1 s');
  ok(`chart: 1 s bars (${s1.value.bars}) live in ${secs(s1.ms)}`);
  // The page on SSE: the chart follows, over SSE streams of its own.
  await withTimeout(page.selectOption('select#transport', 'sse'), 5000, 'choosing sse');
  const before = (await readChart(page)).trades;
  const sse = await waitFor('chart: over SSE, the tape and the candle moving', async () => {
    const c = await readChart(page);
    const done = c.mode === 'sse' && c.trades > 0 && c.tape.length > 0 && c.barUpdates > 0 && c.gaps === 0 &&
      asked.streams.some((q) => q.includes('trades=' + symbol)) && asked.streams.some((q) => q.includes('bars=' + symbol));
    return { done, value: c, seen: JSON.stringify({ mode: c.mode, trades: c.trades, before, barUpdates: c.barUpdates, streams: asked.streams }) };
  });
  if (asked.rest.length) fail(`chart over SSE: REST polls beside the streams: ${asked.rest.slice(0, 5).join(' ')}`);
  await chartMatchesRest(page, relay, symbol, 'chart over SSE');
  ok(`chart: over SSE (${asked.streams.length} streams) live in ${secs(sse.ms)}, equal to REST`);
  await withTimeout(page.click('#chart-close'), 5000, 'closing the chart');
  const closed = await readChart(page);
  if (closed.visible || closed.symbol) fail(`chart: did not close: ${JSON.stringify({ ...closed, tape: closed.tape.length })}`);
}

/** The user menu, the badge and the page's own view of the user. */
function readUser(page) {
  return withTimeout(page.evaluate(() => {
    const badge = document.querySelector('#delayed');
    const ctl = document.querySelector('#user-ctl');
    return {
      menu: !!ctl && !ctl.hidden,
      options: [...document.querySelectorAll('#user option')].map((o) => o.value),
      chosen: document.querySelector('#user')?.value ?? null,
      badge: badge && !badge.hidden ? badge.textContent.trim() : null,
      user: window.tickrelay?.user,
      delayMs: window.tickrelay?.delayMs,
    };
  }), 5000, 'reading the user menu');
}

/** 7. The user menu: anonymous → real time → 15-min delayed → anonymous. */
async function userMenu(relay) {
  return withPage('users', async (p) => {
    const { page } = p;
    await loadLive(page, relay, 'users');
    const u0 = await readUser(page);
    if (!u0.menu || !['', 'realtime', 'delayed'].every((v) => u0.options.includes(v))) fail(`users: the menu is ${JSON.stringify(u0)}`);
    if (u0.badge !== null || u0.chosen !== '') fail(`users: anonymous starts with ${JSON.stringify(u0)}`);
    const pro = 'tickrelay_user_connections{class="pro",delayed="false"}';

    await withTimeout(page.selectOption('select#user', 'realtime'), 5000, 'choosing the real-time user');
    const live = await waitFor('users: live again as the real-time user, counted by the relay as a pro connection', async () => {
      const s = await readPage(page);
      const n = await metric(relay.base, pro);
      const done = s.hooks.user === 'realtime' && s.status === 'live' && s.hooks.connected === true && n >= 1;
      return { done, value: s, seen: `${pro} ${n}; ${describe(s)}` };
    });
    await waitMoving(page, live.value, 'users: prices moving for the real-time user');
    const u1 = await readUser(page);
    if (u1.badge !== null) fail(`users: a real-time user shows the badge "${u1.badge}"`);
    ok(`users: switched to the real-time user in ${secs(live.ms)}; the relay counts it as a pro connection; no badge`);

    await withTimeout(page.selectOption('select#user', 'delayed'), 5000, 'choosing the delayed user');
    const nonpro = 'tickrelay_user_connections{class="nonpro",delayed="true"}';
    const delayed = await waitFor('users: the delayed badge, and the relay serving a delayed connection', async () => {
      const u = await readUser(page);
      const n = await metric(relay.base, nonpro);
      const done = u.user === 'delayed' && u.badge === 'delayed 15 min' && u.delayMs === 900000 && n >= 1;
      return { done, value: u, seen: `${nonpro} ${n}; ${JSON.stringify(u)}` };
    });
    // The real-time connection is gone: the page is connected as the delayed user only.
    await waitFor('users: the real-time connection closed', async () => {
      const n = await metric(relay.base, pro);
      return { done: n === 0, seen: `${pro} ${n}` };
    });
    await screenshot(page, 'user-delayed');
    checkPageHealth('users: delayed');
    ok(`users: the delayed user shows the "${delayed.value.badge}" badge in ${secs(delayed.ms)}, the page still running`);

    await withTimeout(page.selectOption('select#user', ''), 5000, 'choosing anonymous');
    const back = await waitFor('users: live again as anonymous, no badge', async () => {
      const s = await readPage(page);
      const u = await readUser(page);
      return { done: u.user === '' && u.badge === null && s.status === 'live' && s.hooks.connected === true, value: s, seen: `${JSON.stringify(u)}; ${describe(s)}` };
    });
    await waitMoving(page, back.value, 'users: prices moving again as anonymous');
    ok(`users: back to anonymous in ${secs(back.ms)}, badge gone, prices moving`);

    // The two users side by side in the compare view: the real-time one
    // moves; the delayed one is labelled and never shows a price newer
    // than its delay (the demo has not run 15 min: it shows none).
    await withTimeout(page.click('#compare-toggle'), 5000, 'clicking Compare');
    await withTimeout(page.selectOption('#compare .side.a select.user', 'realtime'), 5000, 'the real-time user on the left');
    await withTimeout(page.selectOption('#compare .side.b select.user', 'delayed'), 5000, 'the delayed user on the right');
    const side = await waitFor('users: the two users side by side, the real-time one moving, the delayed one labelled', async () => {
      const c = await withTimeout(page.evaluate(() => {
        const h = window.tickrelayCompare || {};
        const tag = document.querySelector('#compare .side.b .delayed-badge');
        const tagA = document.querySelector('#compare .side.a .delayed-badge');
        return {
          a: h.a, b: h.b,
          tag: tag && !tag.hidden ? tag.textContent.trim() : null,
          tagA: tagA && !tagA.hidden ? tagA.textContent.trim() : null,
          figures: document.querySelector('#compare .side.b .figures')?.textContent ?? '',
        };
      }), 5000, 'reading the compare view');
      const n = await metric(relay.base, nonpro);
      const p = await metric(relay.base, pro);
      const done = c.a && c.b && c.a.user === 'realtime' && c.b.user === 'delayed' && c.a.updates > 0 &&
        c.tag === 'delayed 15 min' && c.tagA === null && n >= 1 && p >= 1;
      return { done, value: c, seen: `${nonpro} ${n}, ${pro} ${p}; ${JSON.stringify(c)}` };
    });
    const fresh = side.value.b.newestTs;
    if (fresh !== null && fresh / 1e6 > Date.now() - 900000) fail(`users: the delayed side shows a price of ${new Date(fresh / 1e6).toISOString()}, newer than 15 min`);
    await screenshot(page, 'users-side-by-side');
    ok(`users: side by side in ${secs(side.ms)}: real time ${side.value.a.updates} updates, delayed "${side.value.figures}"`);
    await withTimeout(page.click('#compare-toggle'), 5000, 'closing Compare');
    checkPageHealth('users');
  });
}

/** 5. The picture for the README: ws, 1280x800, live for a few seconds. */
async function readmeShot(relay) {
  return withPage('readme', async (p) => {
    const { page } = p;
    await loadLive(page, relay, 'readme');
    await sleep(3000); // let the rate and latency figures settle
    const file = await screenshot(page, 'trading-page');
    ok(`screenshot of the live page: ${file}`);
    checkPageHealth('readme');
  });
}

// ----------------------------------------------------------------------------
// Main: everything started here is stopped here, whatever happens.
// ----------------------------------------------------------------------------

let relay = null;
let cleaning = null;
let interrupted = null;

async function cleanup() {
  if (cleaning) return cleaning;
  cleaning = (async () => {
    if (browser) {
      const b = browser;
      browser = null;
      await withTimeout(b.close(), 10_000, 'closing the browser').catch((e) => log('     ' + e.message));
    }
    if (relay) {
      await relay.kill().catch(() => relay.stopNow());
    }
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  })();
  return cleaning;
}

function lastResort() {
  // Process exit: no awaiting any more. Kill what may still run.
  if (relay) relay.stopNow();
}
process.on('exit', lastResort);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    interrupted = sig;
    console.log(`\nbrowser test: FAILED: interrupted by ${sig}`);
    const hard = setTimeout(() => process.exit(1), 10_000);
    hard.unref();
    cleanup().finally(() => process.exit(1));
  });
}

async function main() {
  if (!BIN) fail('usage: node trading-page.mjs TICKRELAY_BIN [SCREENSHOT_DIR] (or set TICKRELAY_BIN)');
  if (!fs.existsSync(BIN)) fail(`no tickrelay binary at ${BIN}`);
  fs.mkdirSync(SHOTS, { recursive: true });

  const httpPort = await freeTcpPort();
  const feed = `${uniqueGroup()}:${await freeUdpPort()}`;
  relay = new Relay(BIN, httpPort, feed);
  const base = await relay.start();
  log(`     relay: ${BIN} ${relay.args().join(' ')}`);
  log(`     listening on ${base}; screenshots in ${SHOTS}`);
  await waitFor('the relay to be ready (/readyz)', async () => {
    const r = await withTimeout(fetch(base + '/readyz'), 5000, 'GET /readyz').catch(() => null);
    return { done: !!r && r.status === 200, seen: r ? 'status ' + r.status : 'no answer' };
  });

  await launchBrowser();

  log('---- each transport on a fresh page');
  for (const t of TRANSPORTS) await freshLoad(relay, t);
  log('---- switching transports live');
  await liveSwitching(relay);
  log('---- killing and restarting the relay under each transport');
  await restarts(relay, ['ws', 'sse', 'poll', 'ws-msgpack', 'snapshot']);
  log('---- the relay briefly calling the watchlist unknown');
  await brieflyUnknown(relay, 'ws');
  await brieflyUnknown(relay, 'poll');
  log('---- two transports compared side by side');
  await compareView(relay);
  log('---- the depth ladder');
  await ladderView(relay);
  log('---- the user menu');
  await userMenu(relay);
  log('---- the README picture');
  await readmeShot(relay);
}

const budget = setTimeout(() => {
  console.log(`browser test: FAILED: the whole run took longer than ${secs(TOTAL_BUDGET_MS)}`);
  const hard = setTimeout(() => process.exit(1), 10_000);
  hard.unref();
  cleanup().finally(() => process.exit(1));
}, TOTAL_BUDGET_MS);
budget.unref();

let code = 0;
try {
  log(`browser test of the trading page (playwright-core, ${CHROMIUM})`);
  await main();
  checkPageHealth('the end');
  log(`browser test: all ${passed} checks passed in ${secs(Date.now() - t0)}`);
} catch (e) {
  code = 1;
  if (interrupted) {
    // The signal handler said it all and is cleaning up; this is just the fallout.
    await cleanup();
    process.exit(1);
  }
  console.log('');
  console.log(`browser test: FAILED after ${passed} passed checks (${secs(Date.now() - t0)}):`);
  console.log('  ' + (e instanceof Failure ? e.message : e.stack || String(e)));
  if (pageErrors.length) console.log('  page errors:\n' + pageErrors.map((l) => '       ' + l).join('\n'));
  if (consoleErrors.length) console.log('  page console errors (last 10):\n' + consoleErrors.slice(-10).map((l) => '       ' + l).join('\n'));
  if (relay && relay.logLines.length) console.log('  relay output (last 20 lines):\n' + relay.tail(20));
  console.log('  screenshots so far: ' + SHOTS);
} finally {
  await cleanup();
  clearTimeout(budget);
}
process.exit(code);
