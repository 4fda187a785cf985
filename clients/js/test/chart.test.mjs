// tickrelay.js's chart channels (lib/chart.js) against a real relay fed by
// a real feed-simulator: `subscribeTrades` gives history then live trades,
// each once and in feed order, with none missing when compared with what
// /v1/trades keeps; `subscribeBars` ends equal to /v1/bars; and a network
// outage (connections and requests refused, the chart's connection dropped)
// loses no trade. Each runs on a WebSocket client (the relay's bars and
// trades streams, or REST polls where the relay refuses those channels) and
// on a long-polling one (REST polls).
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';

import { connect } from '../tickrelay.js';
import {
  killAll, startMarket, waitFor,
} from './harness.mjs';

let base = '';
let symbol = '';

before(async () => {
  ({ base } = await startMarket('JSCHART', 8, ['--book-depth', '0']));
  // The symbol that trades most so far: the tape moves fast.
  const dir = (await (await fetch(base + '/v1/symbols')).json()).symbols.map((d) => d.symbol);
  await waitFor('trades of some symbol', async () => {
    let best = 0;
    for (const s of dir) {
      const n = (await (await fetch(`${base}/v1/trades/${s}`)).json()).trades.length;
      if (n > best) [best, symbol] = [n, s];
    }
    return { done: best >= 20, seen: { symbol, best } };
  });
});

after(() => killAll());

/** A client whose network can be cut: while `net.down`, fetches reject and
 *  WebSockets cannot be opened. */
function flakyClient(transport) {
  const net = { down: false, pagedBack: 0, urls: [] };
  const realFetch = globalThis.fetch;
  const RealWS = globalThis.WebSocket;
  class FlakyWS extends RealWS {
    constructor(...args) {
      if (net.down) throw new Error('network down');
      super(...args);
    }
  }
  const notices = [];
  const feed = connect(base + '/', {
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
function recordTrades(feed, history) {
  const got = { trades: [], calls: [], gaps: 0 };
  got.sub = feed.subscribeTrades(symbol, { history }, (trades, info) => {
    got.calls.push({ n: trades.length, ...info });
    if (info.gap) got.gaps++;
    if (info.reset) got.trades = [];
    got.trades.push(...trades);
  });
  return got;
}

/** The trades /v1/trades keeps with seq from `first` to `last`. */
async function restTrades(first, last) {
  const body = await (await fetch(`${base}/v1/trades/${symbol}?before_seq=${last + 1}`)).json();
  return body.trades.filter((t) => t.seq >= first);
}

/** Every trade once, in feed order, and exactly those /v1/trades has in the range. */
async function assertWhole(got, what) {
  const seqs = got.trades.map((t) => t.seq);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${what}: seq ${seqs[i]} after ${seqs[i - 1]}`);
  const rest = await restTrades(seqs[0], seqs[seqs.length - 1]);
  assert.ok(rest.length > 0, `${what}: /v1/trades still keeps the range`);
  assert.deepEqual(got.trades.map((t) => [t.seq, t.price, t.size]), rest.map((t) => [t.seq, t.price, t.size]), `${what}: the trades handed on are those the relay took`);
}

for (const transport of ['ws', 'poll']) {
  test(`${transport}: history, then every live trade once, in order, none missing`, async () => {
    const { feed } = flakyClient(transport);
    const got = recordTrades(feed, 20);
    try {
      await waitFor('the history and 60 live trades', async () => ({
        done: got.calls.length > 1 && got.calls[0].history && got.trades.length >= 80,
        seen: { calls: got.calls.slice(0, 3), n: got.trades.length },
      }), 40000);
      assert.equal(got.calls[0].n, 20, 'the first call is the history asked for');
      assert.ok(got.calls.slice(1).every((c) => !c.history && !c.reset), JSON.stringify(got.calls.slice(0, 5)));
      assert.ok(['ws', 'poll'].includes(got.sub.mode));
      if (transport === 'poll') assert.equal(got.sub.mode, 'poll');
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
    const { feed } = flakyClient(transport);
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
    } finally {
      sub.close();
      feed.close();
    }
  });

  test(`${transport}: an outage and a dropped connection lose no trade and repeat none`, async () => {
    const { feed, net } = flakyClient(transport);
    // A short history, and an outage longer than a poll's page (100
    // trades): the first answer after it does not reach back to the last
    // trade held, so the client must read the ones between from REST.
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
      assert.ok(net.pagedBack > 0, 'the trades between were read back from /v1/trades');
      assert.ok(!got.calls.some((c) => c.reset), 'no reset: the same session');
      await assertWhole(got, transport + ' across the outage');
    } finally {
      feed.close();
    }
  });
}

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
