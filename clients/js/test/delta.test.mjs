// tickrelay.js with deltas (docs/PROTOCOL.md, "Delivery modes"), against a
// real relay and a real feed-simulator on loopback: over WebSocket (JSON and
// MessagePack) and SSE the client asks for deltas by default, yet every
// quote it hands the application is whole and equal to what /v1/snapshot
// answers at the same seq; the streams carry fewer bytes than with
// `deltas: false`, which still gets whole quotes on the wire; a delta with
// no whole quote under it (a frame lost on the way, injected here) is a
// protocol error: counted, reported, the stream reconnected, and no partial
// quote reaches the application.
// The bytes are counted below the library: a WebSocket that counts each
// message it receives, a fetch that counts the body of /v1/stream.
// No sleep stands for a condition: each wait is for a witness.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';

import { decodeMsgpack } from '../tickrelay.js';
import { QUOTE_FIELDS } from '../lib/prices.js';
import { QuoteCopies } from '../lib/transport.js';
import {
  killAll, record, startMarket, waitFor,
} from './harness.mjs';

const STREAMS = ['ws', 'ws-msgpack', 'sse'];
let base = '';
let symbols = [];
let sim = null;

async function getJson(p) {
  const r = await fetch(base + p, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${p}: HTTP ${r.status}`);
  return r.json();
}

const snapshot = () => getJson('/v1/snapshot?symbols=' + symbols.join(','));

before(async () => {
  ({ base, sim } = await startMarket('JSDELTA', 40));
  symbols = (await getJson('/v1/symbols')).symbols.slice(0, 8).map((d) => d.symbol);
  assert.equal(symbols.length, 8, 'the directory has symbols');
});

after(() => killAll());

/** Whether a wire quote carries every field (else it is a delta). */
const whole = (raw) => QUOTE_FIELDS.every((k) => k in raw);

/**
 * What the relay's streams send a client, counted below the library: the
 * bytes of WebSocket messages and of /v1/stream bodies, and their quotes,
 * whole or not. `drop(quotes)`, if given, is asked about each frame (event)
 * of quotes of the first connection: true loses it on the way.
 */
function meter(drop) {
  // `orphans`: deltas sent on the first connection of symbols whose frame
  // was lost there (`lost`).
  const m = { bytes: 0, whole: 0, partial: 0, connections: 0, lost: [], orphans: 0 };
  const look = (env, connection) => {
    const quotes = env && Array.isArray(env.quotes) ? env.quotes : [];
    for (const q of quotes) {
      if (whole(q)) m.whole++;
      else m.partial++;
      if (connection === 1 && !whole(q) && m.lost.includes(String(q.symbol))) m.orphans++;
    }
    return quotes;
  };
  const lose = (quotes, connection) => {
    if (!drop || connection !== 1 || !quotes.length || !drop(quotes)) return false;
    m.lost.push(...quotes.map((q) => String(q.symbol)));
    return true;
  };

  class MeteredWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      this.connection = ++m.connections;
      this.lost = false;
    }

    set onmessage(fn) {
      super.onmessage = fn && ((e) => {
        const text = typeof e.data === 'string';
        m.bytes += text ? Buffer.byteLength(e.data) : e.data.byteLength;
        const quotes = look(text ? JSON.parse(e.data) : decodeMsgpack(e.data), this.connection);
        if (!lose(quotes, this.connection)) fn(e);
      });
    }

    get onmessage() {
      return super.onmessage;
    }
  }

  const meteredFetch = async (url, init) => {
    const res = await fetch(url, init);
    if (!new URL(url).pathname.endsWith('/v1/stream') || !res.ok) return res;
    const connection = ++m.connections;
    const dec = new TextDecoder();
    const enc = new TextEncoder();
    let buf = '';
    const events = new TransformStream({
      transform(chunk, ctl) {
        m.bytes += chunk.byteLength;
        buf += dec.decode(chunk, { stream: true });
        let at;
        while ((at = /\r?\n\r?\n/.exec(buf))) {
          const block = buf.slice(0, at.index + at[0].length);
          buf = buf.slice(at.index + at[0].length);
          const data = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          const quotes = /^event: ?(tick|snapshot)\b/m.test(block) ? look(JSON.parse(data), connection) : [];
          if (!lose(quotes, connection)) ctl.enqueue(enc.encode(block));
        }
      },
    });
    return new Response(res.body.pipeThrough(events), { status: res.status, statusText: res.statusText, headers: res.headers });
  };

  return { m, WebSocket: MeteredWebSocket, fetch: meteredFetch };
}

/** A client of this suite's symbols over `transport`, metered. */
function client(transport, options = {}, drop = undefined) {
  const wire = meter(drop);
  const { handle, seen } = record(base, { symbols, transport, WebSocket: wire.WebSocket, fetch: wire.fetch, ...options });
  return { handle, seen, wire: wire.m };
}

/** A quote as the application got it, without the session the client adds:
 *  the wire's JSON shape, as /v1/snapshot answers it. */
const asWire = (q) => {
  const { session, ...rest } = q;
  return rest;
};

/** Every quote of `symbol` at `seq` the application got over the stream. */
const streamedAt = (seen, symbol, seq) => seen.quotes.filter(({ q, info }) => !info.rest && q.symbol === symbol && q.seq === seq).map(({ q }) => q);

/**
 * While the feed ticks: snapshots of the relay, each compared with what the
 * client streamed at the same seq, until every symbol was matched `times`
 * times by a streamed quote. A symbol the client conflated past a snapshot's
 * seq waits for a later snapshot.
 */
async function agreesWithSnapshots(c, times = 2) {
  const matched = new Map(symbols.map((s) => [s, 0]));
  await waitFor(`every symbol streamed at a snapshot's seq ${times} times`, async () => {
    const snap = await snapshot();
    await waitFor('the client to reach the snapshot', () => {
      const behind = snap.quotes.filter((w) => !(c.seen.latest.get(w.symbol)?.seq >= w.seq)).map((w) => w.symbol);
      return { done: behind.length === 0, seen: behind };
    });
    for (const want of snap.quotes) {
      const got = streamedAt(c.seen, want.symbol, want.seq);
      for (const q of got) assert.deepEqual(asWire(q), want, `${want.symbol} at ${want.seq}`);
      if (got.length) matched.set(want.symbol, matched.get(want.symbol) + 1);
    }
    return { done: [...matched.values()].every((n) => n >= times), seen: Object.fromEntries(matched) };
  }, 30000);
}

/** The fields a relay's quote always has (null only for `bid`, `ask` and
 *  `last` before the first quote or trade): a partial quote, normalised,
 *  would show one of these as null. */
const ALWAYS = ['seq', 'bid_size', 'ask_size', 'last_size', 'volume', 'prev_close', 'ts'];

/** Asserts that every quote `c` got is whole. */
function allWhole(c) {
  for (const { q } of c.seen.quotes) {
    for (const k of ALWAYS) assert.notEqual(q[k], null, `${q.symbol}@${q.seq}.${k}: a whole quote`);
  }
}

/** Asserts that every quote `c` got is whole, and the same as the one the
 *  reference client `wholes` (deltas: false) got at the same seq, if it did. */
function sameAsWhole(c, wholes) {
  const key = (q) => q.symbol + '@' + q.seq;
  const reference = new Map(wholes.seen.quotes.map(({ q }) => [key(q), asWire(q)]));
  let common = 0;
  allWhole(c);
  for (const { q } of c.seen.quotes) {
    const want = reference.get(key(q));
    if (!want) continue;
    common++;
    assert.deepEqual(asWire(q), want, key(q));
  }
  assert.ok(common >= symbols.length, `quotes at a seq both clients got: ${common}`);
}

/** Waits until each of `clients` has had `n` streamed quotes. */
const ticking = (clients, n = 5) => waitFor('the clients to tick', () => ({
  done: clients.every((c) => c.seen.ticks >= n),
  seen: clients.map((c) => c.seen.ticks),
}));

test('a delta merges into the copy field by field; null makes a field unknown', () => {
  const copies = new QuoteCopies();
  const first = { symbol: 'AB', seq: 5, bid: '1.0000', ask: '1.0100', bid_size: 100, ask_size: 200, last: '1.0050', last_size: 10, volume: 900, prev_close: '0.9000', ts: 7 };
  assert.deepEqual(copies.merge([first]).quotes, [first]);
  const { quotes, orphans } = copies.merge([{ symbol: 'AB', seq: 9, bid: '1.0200', last: null, ts: 8 }]);
  assert.deepEqual(orphans, []);
  assert.deepEqual(quotes, [{ ...first, seq: 9, bid: '1.0200', last: null, ts: 8 }]);
  // A delta with no copy under it is never handed on as a quote.
  const lone = copies.merge([{ symbol: 'CD', seq: 10, ask: '2.0000' }, { symbol: 'AB', seq: 11, ask: '1.0300' }]);
  assert.deepEqual(lone.orphans, ['CD']);
  assert.deepEqual(lone.quotes.map((q) => [q.symbol, q.seq, q.ask, q.bid]), [['AB', 11, '1.0300', '1.0200']]);
  copies.clear();
  assert.deepEqual(copies.merge([{ symbol: 'AB', seq: 12, bid: '1.0400' }]).orphans, ['AB'], 'a new connection starts empty');
});

for (const transport of STREAMS) {
  test(`${transport}: deltas on the wire, whole quotes to the application, equal to /v1/snapshot at the same seq`, async () => {
    const withDeltas = client(transport);
    const wholes = client(transport, { deltas: false });
    try {
      await ticking([withDeltas, wholes]);
      await agreesWithSnapshots(withDeltas);
      assert.ok(withDeltas.wire.partial > 0, `the relay sent deltas (${withDeltas.wire.partial} partial, ${withDeltas.wire.whole} whole)`);
      assert.equal(wholes.wire.partial, 0, 'deltas: false gets whole quotes on the wire');
      sameAsWhole(withDeltas, wholes);
      assert.equal(withDeltas.seen.regressions, 0);
      assert.ok(!withDeltas.seen.notices.some((n) => n.isError), JSON.stringify(withDeltas.seen.notices));
    } finally {
      withDeltas.handle.close();
      wholes.handle.close();
    }
  });

  test(`${transport}: deltas take fewer bytes than deltas: false over the same changes`, async (t) => {
    const withDeltas = client(transport);
    const wholes = client(transport, { deltas: false });
    try {
      await ticking([withDeltas, wholes]);
      // From one moment to one after both streams promised 800 more feed
      // messages (two seconds at 400 a second): the same changes for both.
      const from = [withDeltas.wire.bytes, wholes.wire.bytes];
      const ticksFrom = [withDeltas.seen.ticks, wholes.seen.ticks];
      const target = (await snapshot()).seq + 800;
      await waitFor('both streams past the target seq', () => ({
        done: [withDeltas, wholes].every((c) => c.handle.cursor.seq >= target),
        seen: { target, cursors: [withDeltas.handle.cursor.seq, wholes.handle.cursor.seq] },
      }));
      const bytes = [withDeltas.wire.bytes - from[0], wholes.wire.bytes - from[1]];
      const ticks = [withDeltas.seen.ticks - ticksFrom[0], wholes.seen.ticks - ticksFrom[1]];
      t.diagnostic(`${transport}: ${bytes[0]} B for ${ticks[0]} quotes with deltas, ${bytes[1]} B for ${ticks[1]} whole (${(bytes[0] / bytes[1]).toFixed(2)})`);
      assert.ok(ticks[0] > 0 && ticks[1] > 0, `both ticked: ${ticks}`);
      assert.ok(bytes[0] < bytes[1], `deltas ${bytes[0]} B < whole ${bytes[1]} B`);
      assert.equal(wholes.wire.partial, 0, 'deltas: false gets whole quotes on the wire');
    } finally {
      withDeltas.handle.close();
      wholes.handle.close();
    }
  });
}

for (const transport of ['ws', 'sse']) {
  test(`${transport}: a delta with no whole quote under it is a protocol error: counted, reported, reconnected, never a partial quote`, async () => {
    // The first frame of quotes of the first connection is lost on the way:
    // the next quote of each of its symbols is a delta to a copy this client
    // never got.
    let dropped = false;
    const drop = () => !dropped && (dropped = true);
    const c = client(transport, {}, drop);
    const wholes = client(transport, { deltas: false });
    const lost = c.wire.lost;
    try {
      await waitFor('a delta of a lost symbol on the wire', () => ({ done: c.wire.orphans > 0, seen: { lost, orphans: c.wire.orphans } }));
      allWhole(c);
      await waitFor('the protocol error counted, and the stream live again', () => {
        const last = c.seen.statuses.at(-1) || {};
        return { done: last.protocolErrors >= 1 && last.connection === 'live' && c.wire.connections >= 2, seen: { lost, last, connections: c.wire.connections } };
      });
      const notice = c.seen.notices.find((n) => n.isError && /delta/.test(n.text));
      assert.ok(notice, `reported: ${JSON.stringify(c.seen.notices)}`);
      assert.ok(lost.some((s) => notice.text.includes(s)), `the notice names a symbol of the lost frame (${lost}): ${notice.text}`);
      // Whatever came before the error, and the whole quotes of the new
      // connection after it: each equal to the relay's at its seq.
      await agreesWithSnapshots(c);
      sameAsWhole(c, wholes);
      assert.equal(c.seen.regressions, 0);
    } finally {
      c.handle.close();
      wholes.handle.close();
    }
  });
}

test('at the end of a run, every delta client holds exactly the relay\'s state', async () => {
  const clients = STREAMS.map((transport) => ({ transport, ...client(transport) }));
  try {
    await ticking(clients);
    const simGone = new Promise((r) => (sim.exitCode !== null || sim.signalCode !== null ? r() : sim.once('exit', r)));
    sim.kill('SIGTERM');
    await simGone;
    await waitFor('every client to hold the relay\'s final state', async () => {
      const snap = await snapshot();
      const wrong = [];
      for (const c of clients) {
        for (const want of snap.quotes) {
          const got = c.seen.latest.get(want.symbol);
          try {
            assert.deepEqual(asWire(got), want);
          } catch (_) {
            wrong.push(`${c.transport}/${want.symbol}: ${got && got.seq} vs ${want.seq}`);
          }
        }
      }
      return { done: wrong.length === 0, seen: wrong.slice(0, 6) };
    });
    for (const c of clients) assert.ok(c.wire.partial > 0, `${c.transport}: deltas on the wire`);
  } finally {
    for (const c of clients) c.handle.close();
  }
});
