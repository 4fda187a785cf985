// tickrelay.js's book copy (lib/book.js) by the rules of docs/PROTOCOL.md
// ("Depth of book"): the documented checksum example, diff frames applied
// (size 0 deletes, the side re-sorted and cut to the depth), a missed frame
// and a wrong checksum detected; then against a real relay fed by a real
// feed-simulator with books: every /v1/book answer's checksum agrees with
// the copy built from it, at several depths; and watchBook, live over the
// relay's WebSocket while the simulator moves the books, applies every frame
// with no gap and holds what /v1/book answers.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';

import { BookCopy, BookGap, bookChecksum, crc32 } from '../lib/book.js';
import { connect, watchBook } from '../tickrelay.js';
import {
  killAll, startMarket, waitFor,
} from './harness.mjs';

test('the documented checksum example', () => {
  assert.equal(crc32('1891400200189150050018912003001891100100'), 1731565731);
  const copy = new BookCopy('AAPL', 10).apply({
    symbol: 'AAPL', seq: 1234570, prev: 1234570, snapshot: true,
    bids: [['189.1200', 300, 3], ['189.1100', 100, 1]],
    asks: [['189.1400', 200, 2], ['189.1500', 500, 4]],
    checksum: 1731565731,
  });
  assert.equal(copy.seq, 1234570);
  assert.deepEqual(copy.view().bids, [
    { price: '189.1200', size: 300, orders: 3 }, { price: '189.1100', size: 100, orders: 1 },
  ]);
});

/** A frame of `copy`'s next state, as the relay would send it. */
function frame(prev, seq, bids, asks, after) {
  return { symbol: 'X', seq, prev, snapshot: false, bids, asks, checksum: bookChecksum(after.bids, after.asks) };
}

test('diff frames: size 0 deletes, sides stay sorted and cut to the depth', () => {
  const copy = new BookCopy('X', 2).apply({
    symbol: 'X', seq: 10, prev: 10, snapshot: true,
    bids: [['10.0000', 5, 1], ['9.9900', 7, 2]], asks: [['10.0100', 3, 1]],
  });
  // The best bid goes; 9.98 moves into the two levels; a better ask arrives.
  const expected = {
    bids: [{ ticks: 99900, size: 7 }, { ticks: 99800, size: 4 }],
    asks: [{ ticks: 100050, size: 1 }, { ticks: 100100, size: 3 }],
  };
  copy.apply(frame(10, 12, [['10.0000', 0, 0], ['9.9800', 4, 1]], [['10.0050', 1, 1]], expected));
  assert.equal(copy.seq, 12);
  assert.deepEqual(copy.view().bids.map((l) => [l.price, l.size]), [['9.9900', 7], ['9.9800', 4]]);
  assert.deepEqual(copy.view().asks.map((l) => [l.price, l.size]), [['10.0050', 1], ['10.0100', 3]]);
  // MessagePack: prices as integer ticks.
  const next = { bids: expected.bids, asks: [{ ticks: 100050, size: 2 }, { ticks: 100100, size: 3 }] };
  copy.apply(frame(12, 13, [], [[100050, 2, 2]], next), true);
  assert.equal(copy.view().asks[0].size, 2);
});

test('a missed frame or a wrong checksum is a gap, and the copy is dropped', () => {
  const start = () => new BookCopy('X', 5).apply({ symbol: 'X', seq: 3, prev: 3, snapshot: true, bids: [['1.0000', 1, 1]], asks: [] });
  const a = start();
  assert.throws(() => a.apply({ seq: 9, prev: 7, snapshot: false, bids: [], asks: [] }), BookGap);
  assert.equal(a.seq, null);
  const b = start();
  assert.throws(() => b.apply({ seq: 4, prev: 3, snapshot: false, bids: [['1.0000', 2, 1]], asks: [], checksum: 12345 }), BookGap);
  assert.deepEqual(b.bids, []);
});

let base = '';

before(async () => {
  ({ base } = await startMarket('JSBOOK', 20));
});

after(() => killAll());

test('every /v1/book answer checks out in a copy built from it, at several depths', async () => {
  const symbols = (await (await fetch(base + '/v1/symbols')).json()).symbols.slice(0, 5).map((d) => d.symbol);
  await waitFor('books of five symbols with levels on both sides, at depths 1, 5, 10 and 50', async () => {
    let checked = 0;
    const seen = [];
    for (const s of symbols) {
      for (const depth of [1, 5, 10, 50]) {
        const r = await fetch(`${base}/v1/book/${s}?depth=${depth}`, { cache: 'no-store' });
        assert.equal(r.status, 200, `${s} depth ${depth}`);
        const body = await r.json();
        const copy = new BookCopy(s, depth).apply(body); // throws on a checksum mismatch
        assert.ok(copy.bids.length <= depth && copy.asks.length <= depth);
        if (copy.bids.length && copy.asks.length) checked++;
        seen.push(`${s}/${depth}: ${copy.bids.length}x${copy.asks.length}`);
      }
    }
    return { done: checked === 20, seen };
  });
});

test('watchBook follows a live book over WebSocket with no gap and holds what /v1/book answers', async () => {
  const symbol = (await (await fetch(base + '/v1/symbols')).json()).symbols[0].symbol;
  const states = [];
  let frames = 0;
  const w = watchBook(base + '/', symbol, {
    depth: 5,
    onBook: () => frames++,
    onStatus: (s, d) => states.push(d ? `${s}: ${JSON.stringify(d)}` : s),
  });
  try {
    await waitFor('book frames of a moving book', async () => ({ done: frames >= 20, seen: { frames, states: states.slice(-3) } }));
    // Equal to REST: read both until a REST answer and the copy agree (the
    // book moves meanwhile; the copy may hold a seq behind REST's when only
    // deeper levels moved, never levels REST has not).
    await waitFor('the copy to equal /v1/book at depth 5', async () => {
      const rest = new BookCopy(symbol, 5).apply(await (await fetch(`${base}/v1/book/${symbol}?depth=5`)).json());
      const held = w.copy.view();
      const same = JSON.stringify(rest.view().bids) === JSON.stringify(held.bids) &&
        JSON.stringify(rest.view().asks) === JSON.stringify(held.asks);
      return { done: same, seen: { rest: rest.view(), held } };
    });
    assert.equal(w.gaps, 0, `no frame missed and every checksum agreed: ${states.filter((s) => s.startsWith('gap')).join('; ')}`);
    assert.ok(!states.some((s) => s.startsWith('refused')), states.join('; '));
  } finally {
    w.close();
  }
});

// subscribeBook inside a connected client, on every transport: the book is
// kept with `prev` and the checksum checked on every frame, a tampered copy
// (WebSocket, SSE: a `seq` moved back, so the next frame's `prev` disagrees)
// or a tampered answer (long poll: a wrong checksum) is reported through
// onBookGap and resynced, and the copy ends equal to /v1/book.

/** A fetch whose first long-poll answer carrying `symbol`'s book has that
 *  book's checksum wrong (an answer's books come in no promised order). */
function fetchSpoilingOneBook(symbol) {
  let spoiled = false;
  return async (url, init) => {
    const res = await fetch(url, init);
    if (spoiled || !String(url).includes('/v1/poll?')) return res;
    const text = await res.text();
    const body = JSON.parse(text);
    const book = Array.isArray(body.books) ? body.books.find((b) => b.symbol === symbol) : undefined;
    if (!book) return new Response(text, { status: res.status, headers: res.headers });
    spoiled = true;
    book.checksum = (Number(book.checksum) + 1) >>> 0;
    return new Response(JSON.stringify(body), { status: res.status, headers: res.headers });
  };
}

/** Waits until `book`'s copy (cut to `depth`) equals /v1/book at `depth`. */
async function waitEqualToRest(symbol, depth, book) {
  await waitFor(`${symbol}'s copy to equal /v1/book at depth ${depth}`, async () => {
    const rest = new BookCopy(symbol, depth).apply(await (await fetch(`${base}/v1/book/${symbol}?depth=${depth}`)).json()).view();
    const held = book.copy.view();
    const cut = (side) => JSON.stringify(side.slice(0, depth));
    return { done: cut(rest.bids) === cut(held.bids) && cut(rest.asks) === cut(held.asks), seen: { rest, held } };
  });
}

for (const transport of ['ws', 'ws-msgpack', 'sse', 'poll']) {
  test(`subscribeBook over ${transport}: every frame checked, a gap reported and resynced, equal to /v1/book`, async () => {
    const symbols = (await (await fetch(base + '/v1/symbols')).json()).symbols.map((d) => d.symbol);
    const gaps = [];
    const notices = [];
    const client = connect(base + '/', {
      transport,
      symbols: [symbols[2]], // quotes beside the books, on the same stream
      onBookGap: (symbol, reason) => gaps.push({ symbol, reason }),
      onNotice: (text) => notices.push(text),
      ...(transport === 'poll' ? { fetch: fetchSpoilingOneBook(symbols[0]), pollTimeoutMs: 2000 } : {}),
    });
    let views = 0;
    const a = client.subscribeBook(symbols[0], 5, () => views++);
    const b = client.subscribeBook(symbols[1], 10);
    try {
      const enough = transport === 'poll' ? 3 : 15;
      await waitFor(`book frames over ${transport}`, async () => ({ done: a.frames >= enough && b.frames >= 1, seen: { a: a.frames, b: b.frames, notices } }));
      if (transport === 'poll') {
        // The spoiled answer was caught and the book read again over REST.
        await waitFor('the spoiled checksum reported', async () => ({ done: gaps.length === 1, seen: { gaps, notices } }));
        assert.equal(gaps[0].symbol, symbols[0]);
      } else {
        assert.deepEqual(gaps, [], 'no gap before the tampering');
        a.copy.seq -= 1; // the next diff frame's `prev` no longer matches
        await waitFor('the gap reported', async () => ({ done: gaps.length >= 1, seen: { gaps, notices } }));
        assert.equal(gaps[0].symbol, symbols[0]);
        assert.match(gaps[0].reason, /frame after/);
      }
      assert.equal(a.gaps, 1, "one gap, one resync: the diffs in flight are dropped, not more gaps");
      const before = a.frames;
      await waitFor('frames applied after the resync', async () => ({ done: a.frames > before, seen: a.frames }));
      await waitEqualToRest(symbols[0], 5, a);
      await waitEqualToRest(symbols[1], 10, b);
      assert.equal(b.gaps, 0, 'the other book kept going without a gap');
      assert.ok(views >= a.frames - 1, 'onBook after every frame applied');
    } finally {
      client.close();
    }
  });
}
