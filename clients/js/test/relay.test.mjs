// tickrelay.js against a real relay and a real feed-simulator on loopback:
// each transport fills from REST then ticks; `auto` falls back when
// WebSocket (and SSE) are refused; every client resumes after the relay is
// SIGKILLed and restarted, and ends with exactly the relay's state.
// No sleep stands for a condition: each wait is for a witness (the relay's
// seq, the feed's own packets heard on its group, a client's cursor).
//
// Binaries and helpers: harness.mjs.
// Run: node --experimental-websocket --test clients/js/test/*.test.mjs
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  SIM_BIN, freeTcpPort, freeUdpPort, killAll, record, run, startRelay as spawnRelay, uniqueGroup, waitFor, waitReady,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PRICE = /^-?\d+\.\d{4}$/;
const TRANSPORTS = ['ws', 'ws-msgpack', 'sse', 'poll', 'snapshot'];
const GROUP = uniqueGroup();

let relay = null;
let sim = null;
let base = '';
let relayArgs = [];
let symbols = [];

/** The feed as this test hears it on its group (docs/FEED.md, "Packet"):
 *  the sequence number of the newest message, a witness of how far the feed
 *  has got whether or not the relay is up. */
const heard = { last: -1, socket: null };

function listenToFeed() {
  const i = GROUP.lastIndexOf(':');
  const group = GROUP.slice(0, i);
  const port = Number(GROUP.slice(i + 1));
  // The relay binds the same port (with SO_REUSEADDR and SO_REUSEPORT).
  const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  heard.socket = s;
  s.on('message', (b) => {
    if (b.length < 20) return;
    const seq = Number(b.readBigUInt64BE(10));
    const count = b.readUInt16BE(18);
    // Data packets only: 0 is a heartbeat, 0xFFFF the end of the session.
    if (count > 0 && count !== 0xffff) heard.last = Math.max(heard.last, seq + count - 1);
  });
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, group, () => {
      s.addMembership(group, '127.0.0.1');
      resolve();
    });
  });
}

/** The relay's applied feed sequence: a snapshot envelope's `seq`. */
async function relaySeq() {
  return (await getJson('/v1/snapshot?symbols=' + symbols[0])).seq;
}

async function startRelay() {
  relay = await spawnRelay(relayArgs);
}

async function killRelay() {
  const child = relay;
  relay = null;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

async function getJson(p) {
  const r = await fetch(base + p, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${p}: HTTP ${r.status}`);
  return r.json();
}

before(async () => {
  const port = await freeTcpPort();
  const retransmit = `127.0.0.1:${await freeUdpPort()}`;
  base = `http://127.0.0.1:${port}`;
  await listenToFeed();
  sim = run(SIM_BIN, [
    '--group', GROUP, '--interface', '127.0.0.1', '--ttl', '0', '--no-progress',
    '--retransmit', retransmit, '--symbols', '40', '--rate', '400', '--duration', '600', '--session', 'JSCLIENT',
  ]);
  relayArgs = ['serve', '--http', `127.0.0.1:${port}`, '--feed-a', GROUP, '--interface', '127.0.0.1', '--retransmit', retransmit];
  await startRelay();
  await waitReady(base);
  const dir = await getJson('/v1/symbols');
  symbols = dir.symbols.slice(0, 6).map((d) => d.symbol);
  assert.equal(symbols.length, 6, 'the directory has symbols');
});

after(async () => {
  killAll();
  if (heard.socket) heard.socket.close();
});

/** A client of this suite's symbols that records what it is given. */
const watch = (options) => record(base, { symbols, ...options });

for (const transport of TRANSPORTS) {
  test(`${transport}: fills from REST, then ticks, prices as exact decimal strings`, async () => {
    const { handle, seen } = watch({ transport, pollIntervalMs: 300 });
    try {
      await waitFor(`${transport} ticks`, () => ({ done: seen.ticks >= 5, seen: { ticks: seen.ticks, rest: seen.rest, last: seen.statuses.at(-1) } }));
      assert.equal(handle.transport, transport);
      // The first quotes of every symbol came from the REST snapshot.
      const first = new Map();
      for (const { q, info } of seen.quotes) if (!first.has(q.symbol)) first.set(q.symbol, info);
      assert.deepEqual([...first.keys()].sort(), [...symbols].sort(), 'every symbol filled');
      for (const [sym, info] of first) assert.ok(info.rest, `${sym}'s first quote came over REST`);
      for (const { q } of seen.quotes) {
        for (const k of ['bid', 'ask', 'last', 'prev_close']) {
          if (q[k] !== null) assert.match(q[k], PRICE, `${transport} ${q.symbol}.${k}`);
        }
      }
      assert.equal(seen.regressions, 0, 'never an older quote after a newer one');
      const live = seen.statuses.filter((s) => s.connection === 'live');
      assert.ok(live.length > 0, 'reported live');
      assert.equal(live.at(-1).transport, transport);
      assert.equal(live.at(-1).feed.complete, true);
      assert.ok(seen.bytes > 0 && seen.requests > 0);
    } finally {
      handle.close();
    }
  });
}

test('subscribe and unsubscribe change what arrives', async () => {
  const { handle, seen } = watch({ transport: 'ws' });
  try {
    await waitFor('ticks', () => ({ done: seen.ticks >= 3, seen: seen.ticks }));
    const dir = await getJson('/v1/symbols');
    const extra = dir.symbols.map((d) => d.symbol).find((s) => !symbols.includes(s));
    handle.subscribe([extra, 'NOSUCHSYM']);
    await waitFor(`${extra} to arrive`, () => ({ done: seen.latest.has(extra), seen: [...seen.latest.keys()] }));
    await waitFor('NOSUCHSYM reported unknown', () => ({ done: seen.unknown.includes('NOSUCHSYM'), seen: seen.unknown }));
    handle.unsubscribe(symbols);
    // From here on the handle passes on no quote of those symbols.
    const mark = seen.quotes.length;
    const unsubscribedAt = await relaySeq();
    // Witness: the relay changed an unsubscribed symbol after that point, and
    // the client's cursor has passed that change — by the seq promise it
    // would have been given that quote by now had it still been subscribed —
    // and ticks of the symbol still subscribed arrive from after that point.
    await waitFor('the stream to pass a change of an unsubscribed symbol', async () => {
      const snap = await getJson('/v1/snapshot?symbols=' + symbols.join(','));
      const changed = Math.max(...snap.quotes.map((q) => q.seq));
      const cursor = handle.cursor ? handle.cursor.seq : -1;
      const fresh = seen.quotes.slice(mark).some(({ q }) => q.symbol === extra && q.seq > unsubscribedAt);
      return { done: changed > unsubscribedAt && cursor >= changed && fresh, seen: { unsubscribedAt, changed, cursor, fresh } };
    });
    const after = seen.quotes.slice(mark).map(({ q }) => q.symbol);
    assert.ok(after.every((s) => s === extra), `only ${extra} after unsubscribing: ${after}`);
    assert.deepEqual(handle.symbols, [extra, 'NOSUCHSYM']);
  } finally {
    handle.close();
  }
});

test('the relay serves the client library as it is on disk, under / and /clients/js/', async () => {
  const dir = path.resolve(here, '..');
  const files = ['tickrelay.js', ...fs.readdirSync(path.join(dir, 'lib')).filter((f) => f.endsWith('.js')).map((f) => 'lib/' + f)];
  for (const prefix of ['/', '/clients/js/']) {
    // Every module tickrelay.js imports, followed as a browser would.
    const todo = [new URL(prefix + 'tickrelay.js', base + '/').href];
    const served = new Set();
    while (todo.length) {
      const url = todo.pop();
      if (served.has(url)) continue;
      served.add(url);
      const r = await fetch(url, { cache: 'no-store' });
      assert.equal(r.status, 200, url);
      assert.match(r.headers.get('content-type'), /^text\/javascript/, url);
      const rel = new URL(url).pathname.slice(prefix.length);
      assert.ok(files.includes(rel), `${url} is a file of clients/js/`);
      assert.equal(await r.text(), fs.readFileSync(path.join(dir, rel), 'utf8'), `${url} as on disk`);
      const text = fs.readFileSync(path.join(dir, rel), 'utf8');
      for (const m of text.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+'(\.[^']+)'/gms)) todo.push(new URL(m[1], url).href);
    }
    const paths = [...served].map((u) => new URL(u).pathname.slice(prefix.length)).sort();
    assert.deepEqual(paths, [...files].sort(), `every file of clients/js/lib/ is imported and served under ${prefix}`);
  }
});

/** A WebSocket that always dials a port where nothing listens: a real refusal. */
async function refusedWebSocket() {
  const dead = await freeTcpPort();
  return class RefusedWebSocket extends WebSocket {
    constructor(url, protocols) {
      const u = new URL(url);
      u.port = String(dead);
      super(u.toString(), protocols);
    }
  };
}

test('auto falls back to SSE when WebSocket is refused', async () => {
  const { handle, seen } = watch({ transport: 'auto', WebSocket: await refusedWebSocket() });
  try {
    await waitFor('ticks over SSE', () => ({ done: seen.ticks >= 3 && handle.transport === 'sse', seen: { t: handle.transport, ticks: seen.ticks } }));
    assert.equal(seen.statuses.filter((s) => s.connection === 'live').at(-1).transport, 'sse');
  } finally {
    handle.close();
  }
});

test('auto falls back to long polling when WebSocket and SSE are refused', async () => {
  const dead = await freeTcpPort();
  // Requests for the stream go to a port where nothing listens.
  const refusingStreams = (url, init) => {
    const u = new URL(url);
    if (u.pathname.endsWith('/v1/stream')) u.port = String(dead);
    return fetch(u.toString(), init);
  };
  const { handle, seen } = watch({ transport: 'auto', WebSocket: await refusedWebSocket(), fetch: refusingStreams });
  try {
    await waitFor('ticks over long poll', () => ({ done: seen.ticks >= 3 && handle.transport === 'poll', seen: { t: handle.transport, ticks: seen.ticks } }));
  } finally {
    handle.close();
  }
});

test('every transport resumes after the relay is killed and restarted, missing nothing', async () => {
  const clients = TRANSPORTS.map((transport) => ({ transport, ...watch({ transport, pollIntervalMs: 300 }) }));
  try {
    await waitFor('every client ticking', () => ({
      done: clients.every((c) => c.seen.ticks >= 2),
      seen: clients.map((c) => [c.transport, c.seen.ticks]),
    }));
    const session = clients[0].handle.cursor.session;
    await killRelay();
    await waitFor('every client to notice', () => ({
      done: clients.every((c) => ['reconnecting', 'disconnected'].includes(c.seen.statuses.at(-1).connection)),
      seen: clients.map((c) => [c.transport, c.seen.statuses.at(-1).connection]),
    }));
    const ticksBefore = clients.map((c) => c.seen.ticks);
    // The feed moves on while the relay is down: 200 messages (half a
    // second at 400 a second) past every client's cursor, heard on the
    // feed's group.
    const downAt = Math.max(...clients.map((c) => c.handle.cursor.seq));
    await waitFor('the feed to move on while the relay is down', () => ({ done: heard.last >= downAt + 200, seen: { downAt, heard: heard.last } }));
    await startRelay();
    await waitFor('every client live and ticking again', () => ({
      done: clients.every((c, i) => c.seen.statuses.at(-1).connection === 'live' && c.seen.ticks > ticksBefore[i]),
      seen: clients.map((c) => [c.transport, c.seen.statuses.at(-1).connection, c.seen.ticks]),
    }), 40000);
    for (const c of clients) {
      assert.equal(c.handle.cursor.session, session, `${c.transport}: same feed session, resumed`);
      assert.equal(c.seen.regressions, 0, `${c.transport}: never an older quote after a newer one`);
    }
    // Stop the feed and wait until the relay has applied its last message;
    // then every client must hold exactly the relay's state.
    const simGone = new Promise((r) => (sim.exitCode !== null || sim.signalCode !== null ? r() : sim.once('exit', r)));
    sim.kill('SIGTERM');
    await simGone;
    const lastSent = heard.last;
    await waitFor(`the relay to apply the feed's last message (${lastSent})`, async () => {
      const seq = await relaySeq();
      return { done: seq >= lastSent, seen: seq };
    });
    await waitFor('every client to hold the relay\'s final state', async () => {
      const snap = await getJson('/v1/snapshot?symbols=' + symbols.join(','));
      const want = new Map(snap.quotes.map((q) => [q.symbol, q]));
      const wrong = [];
      for (const c of clients) {
        for (const sym of symbols) {
          const got = c.seen.latest.get(sym);
          const w = want.get(sym);
          const same = got && ['seq', 'bid', 'ask', 'last', 'volume', 'bid_size', 'ask_size'].every((k) => String(got[k]) === String(w[k]));
          if (!same) wrong.push(`${c.transport}/${sym}: ${got && got.seq} vs ${w.seq}`);
        }
      }
      return { done: wrong.length === 0, seen: wrong.slice(0, 6) };
    }, 20000);
  } finally {
    for (const c of clients) c.handle.close();
  }
});
