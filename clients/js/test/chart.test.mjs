// tickrelay.js's chart channels (lib/chart.js) against a real relay fed by
// a real feed-simulator: `subscribeTrades` gives history then live trades,
// each once and in feed order, with none missing when compared with what
// /v1/trades keeps; `subscribeBars` ends equal to /v1/bars; and a network
// outage (connections and requests refused, the chart's connection dropped)
// loses no trade. Each runs on a WebSocket client (the relay's `trades` and
// `bars` channels on a WebSocket: mode 'ws', no REST poll), an SSE client
// (`/v1/stream?trades=…` / `?bars=…`: mode 'sse', no REST poll) and a
// long-polling one (REST polls: mode 'poll'). A streaming client the relay
// closes as slow (4008, behind by more than every_queue) resumes with
// `since` and loses no trade.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';

import { connect } from '../tickrelay.js';
import {
  killAll, startMarket, waitFor,
} from './harness.mjs';

let base = '';
let symbol = '';

/** The symbol of the relay at `at` that trades most so far: the tape moves fast. */
async function busiest(at) {
  const dir = (await (await fetch(at + '/v1/symbols')).json()).symbols.map((d) => d.symbol);
  let sym = '';
  await waitFor('trades of some symbol', async () => {
    let best = 0;
    for (const s of dir) {
      const n = (await (await fetch(`${at}/v1/trades/${s}`)).json()).trades.length;
      if (n > best) [best, sym] = [n, s];
    }
    return { done: best >= 20, seen: { sym, best } };
  });
  return sym;
}

before(async () => {
  ({ base } = await startMarket('JSCHART', 8, ['--book-depth', '0']));
  symbol = await busiest(base);
});

after(() => killAll());

/** A client whose network can be cut: while `net.down`, fetches reject and
 *  WebSockets cannot be opened. `net` records the requests (`urls`) and
 *  the WebSocket ops sent (`sent`). */
function flakyClient(transport, at = base) {
  const net = { down: false, pagedBack: 0, urls: [], sent: [] };
  const realFetch = globalThis.fetch;
  const RealWS = globalThis.WebSocket;
  class FlakyWS extends RealWS {
    constructor(...args) {
      if (net.down) throw new Error('network down');
      super(...args);
    }

    send(data) {
      net.sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  const notices = [];
  const feed = connect(at + '/', {
    symbols: [],
    transport,
    fetch: (url, init) => {
      if (net.down) return Promise.reject(new Error('network down'));
      net.urls.push(String(url));
      if (/before_seq=/.test(url)) net.pagedBack++;
      return realFetch(url, init);
    },
    WebSocket: FlakyWS,
    onNotice: (text, isError) => notices.push({ text, isError }),
  });
  return { feed, net, notices };
}

/** Records a trades subscription: every trade handed on, and the calls. */
function recordTrades(feed, history, sym = symbol) {
  const got = { trades: [], calls: [], gaps: 0 };
  got.sub = feed.subscribeTrades(sym, { history }, (trades, info) => {
    got.calls.push({ n: trades.length, ...info });
    if (info.gap) got.gaps++;
    if (info.reset) got.trades = [];
    got.trades.push(...trades);
  });
  return got;
}

/** The trades /v1/trades keeps with seq from `first` to `last`. */
async function restTrades(first, last, at = base, sym = symbol) {
  const body = await (await fetch(`${at}/v1/trades/${sym}?limit=1000&before_seq=${last + 1}`)).json();
  return body.trades.filter((t) => t.seq >= first);
}

/** Every trade once, in feed order, and exactly those /v1/trades has in the range. */
async function assertWhole(got, what, at = base, sym = symbol) {
  const seqs = got.trades.map((t) => t.seq);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${what}: seq ${seqs[i]} after ${seqs[i - 1]}`);
  const rest = await restTrades(seqs[0], seqs[seqs.length - 1], at, sym);
  assert.ok(rest.length > 0, `${what}: /v1/trades still keeps the range`);
  // A busy tape keeps its newest 1,000: compare those.
  const held = rest.length >= 1000 ? got.trades.filter((t) => t.seq >= rest[0].seq) : got.trades;
  assert.deepEqual(held.map((t) => [t.seq, t.price, t.size]), rest.map((t) => [t.seq, t.price, t.size]), `${what}: the trades handed on are those the relay took`);
}

/** Whether `net` saw REST reads of the chart (`/v1/trades/`, `/v1/bars/`):
 *  a streaming client makes none, but for a fill (`before_seq`). */
const restReads = (net, what) => net.urls.filter((u) => u.includes(`/v1/${what}/`) && !u.includes('before_seq='));

/** A trades resume point as the client sends it: `SESSION:SEQ`, the
 *  session its trades frames named (URL-encoded in an SSE request). */
const SINCE = /^[^:]+:[1-9]\d*$/;
const SINCE_QUERY = /[?&]since=[^&:]+%3A[1-9]\d*/;

/** The stream of `net`'s client carried `kind` of `symbol`: a WebSocket
 *  subscribe op, or an SSE request; `since` when `resumed`. */
function streamed(net, transport, kind, resumed) {
  if (transport === 'ws') return net.sent.some((op) => op.op === 'subscribe' && op.channel === kind && op.symbols.includes(symbol) && (!resumed || SINCE.test(op.since)));
  return net.urls.some((u) => u.includes(`/v1/stream?${kind}=${symbol}`) && (!resumed || SINCE_QUERY.test(u)));
}

for (const transport of ['ws', 'sse', 'poll']) {
  test(`${transport}: history, then every live trade once, in order, none missing`, async () => {
    const { feed, net } = flakyClient(transport);
    const got = recordTrades(feed, 20);
    try {
      await waitFor('the history and 60 live trades', async () => ({
        done: got.calls.length > 1 && got.calls[0].history && got.trades.length >= 80,
        seen: { calls: got.calls.slice(0, 3), n: got.trades.length },
      }), 40000);
      assert.equal(got.calls[0].n, 20, 'the first call is the history asked for');
      assert.ok(got.calls.slice(1).every((c) => !c.history && !c.reset), JSON.stringify(got.calls.slice(0, 5)));
      // Each transport its own way: the relay's stream, REST for a poller.
      assert.equal(got.sub.mode, transport);
      if (transport === 'poll') assert.ok(restReads(net, 'trades').length > 1, 'a poller reads /v1/trades');
      else {
        assert.ok(streamed(net, transport, 'trades', false), `the trades came over ${transport}: ${net.urls.join(' ')}`);
        assert.deepEqual(restReads(net, 'trades'), [], 'no REST poll beside the stream');
      }
      got.sub.close();
      const t = got.trades[0];
      assert.match(t.price, /^\d+\.\d{4}$/, 'prices are decimal strings');
      assert.ok(Number.isInteger(t.size) && t.ts > 1e18, JSON.stringify(t));
      await assertWhole(got, transport);
    } finally {
      feed.close();
    }
  });

  test(`${transport}: bars history then live, ending equal to /v1/bars`, async () => {
    const { feed, net } = flakyClient(transport);
    const bars = new Map();
    let calls = 0;
    let updates = 0;
    const sub = feed.subscribeBars(symbol, '1s', { history: 50 }, (list, info) => {
      calls++;
      if (info.reset) bars.clear();
      else updates++;
      for (const b of list) bars.set(b.t, b);
    });
    try {
      await waitFor('live bar updates', async () => ({ done: updates >= 5, seen: { calls, updates, bars: bars.size } }), 30000);
      await waitFor('the bars held to equal /v1/bars', async () => {
        const rest = (await (await fetch(`${base}/v1/bars/${symbol}?interval=1s&limit=20`)).json()).bars;
        const held = rest.map((b) => bars.get(b.t) || null);
        const same = held.every((h, i) => h && JSON.stringify(h) === JSON.stringify(rest[i]));
        return { done: same && rest.length > 0, seen: { rest: rest.slice(-2), held: held.slice(-2) } };
      }, 20000);
      const newest = [...bars.values()].pop();
      assert.match(newest.c, /^\d+\.\d{4}$/);
      assert.ok([...bars.values()].slice(0, -1).every((b) => b.closed), 'every bar before the newest is closed');
      assert.equal(sub.mode, transport);
      if (transport !== 'poll') {
        assert.ok(streamed(net, transport, 'bars', false), `the bars came over ${transport}`);
        assert.deepEqual(restReads(net, 'bars'), [], 'no REST poll beside the stream');
      }
    } finally {
      sub.close();
      feed.close();
    }
  });

  test(`${transport}: an outage and a dropped connection lose no trade and repeat none`, async () => {
    const { feed, net } = flakyClient(transport);
    // A short history, and an outage longer than a poll's page (100
    // trades): a poller's first answer after it does not reach back to the
    // last trade held, so it must read the ones between from REST; a stream
    // resumes with `since`, and the relay's first frame carries them.
    const got = recordTrades(feed, 5);
    try {
      await waitFor('trades before the outage', async () => ({ done: got.trades.length >= 15, seen: got.trades.length }), 30000);
      const before = got.trades.length;
      const lastBefore = got.trades[before - 1].seq;
      net.down = true;
      got.sub.reconnect();
      // Out until the symbol traded more than the history asked for.
      await waitFor('trades during the outage', async () => {
        const r = await restTrades(lastBefore + 1, Number.MAX_SAFE_INTEGER);
        return { done: r.length >= 130, seen: r.length };
      }, 40000);
      net.down = false;
      got.sub.reconnect();
      await waitFor('trades after the outage', async () => ({
        done: got.trades.length >= before + 30,
        seen: { n: got.trades.length, calls: got.calls.slice(-3) },
      }), 40000);
      got.sub.close();
      assert.equal(got.gaps, 0, 'the relay still kept every trade between');
      if (transport === 'poll') assert.ok(net.pagedBack > 0, 'the trades between were read back from /v1/trades');
      else {
        assert.ok(streamed(net, transport, 'trades', true), 'the stream resumed with since');
        assert.equal(net.pagedBack, 0, 'since needs no REST fill');
      }
      assert.ok(!got.calls.some((c) => c.reset), 'no reset: the same session');
      await assertWhole(got, transport + ' across the outage');
    } finally {
      feed.close();
    }
  });
}

// A relay that closes a client more than one trade behind (every_queue 1)
// while the feed sends 4,000 messages a second, 30 a packet: a symbol's trades often come
// two at once, and the streaming client is closed as slow (4008, SSE: an
// `error` event) again and again. Each time it resumes with `since`.
test('ws and sse: closed as slow (4008), the stream resumes with since, losing no trade', async () => {
  const slow = await startMarket('JSCHARTQ', 8, ['--book-depth', '0', '--messages-per-packet', '30'], ['--every-queue', '1'], 4000);
  const sym = await busiest(slow.base);
  for (const transport of ['ws', 'sse']) {
    const { feed, net, notices } = flakyClient(transport, slow.base);
    const got = recordTrades(feed, 5, sym);
    try {
      const slowNotices = () => notices.filter((n) => /4008/.test(n.text)).length;
      await waitFor(`${transport}: closes for slowness, and trades after them`, async () => ({
        done: slowNotices() >= 2 && got.trades.length >= 60,
        seen: { closes: slowNotices(), n: got.trades.length },
      }), 40000);
      got.sub.close();
      assert.equal(got.sub.mode, transport);
      assert.equal(got.gaps, 0, 'the relay kept every trade after since');
      assert.ok(!got.calls.some((c) => c.reset), 'no reset: the same session');
      const resumed = transport === 'ws' ? net.sent.filter((op) => SINCE.test(op.since)) : net.urls.filter((u) => SINCE_QUERY.test(u));
      // A close can come before the history frame reached the client (it
      // then holds no trade and subscribes afresh): only the first can.
      const closes = slowNotices();
      assert.ok(resumed.length >= Math.max(1, closes - 1), `${transport}: resumed with since after each close (${resumed.length} resumes, ${closes} closes)`);
      assert.equal(net.pagedBack, 0, 'since needs no REST fill');
      await assertWhole(got, `${transport} across 4008 closes`, slow.base, sym);
    } finally {
      feed.close();
    }
  }
  slow.sim.kill('SIGKILL');
});

test('a symbol the relay does not know is told to onError, and not polled again', async () => {
  const { feed, net } = flakyClient('poll');
  const errors = [];
  const sub = feed.subscribeBars('NOSUCH', '1m', { onError: (e) => errors.push(e) }, () => assert.fail('no bars of an unknown symbol'));
  try {
    await waitFor('the refusal', async () => ({ done: errors.length === 1, seen: errors }));
    assert.equal(errors[0].code, 'unknown_symbol');
    // Meanwhile a known symbol's trades are polled four times (every
    // 0.5 s: 1.5 s), longer than a bars poll's 1 s: the unknown one was not asked again.
    const polls = () => net.urls.filter((u) => u.includes('/v1/trades/' + symbol)).length;
    const other = feed.subscribeTrades(symbol, {}, () => {});
    await waitFor('four polls of a known symbol', async () => ({ done: polls() >= 4, seen: polls() }));
    other.close();
    assert.equal(net.urls.filter((u) => u.includes('NOSUCH')).length, 1, net.urls.join(' '));
  } finally {
    sub.close();
    feed.close();
  }
});
