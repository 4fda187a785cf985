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
import { watchBook } from '../tickrelay.js';
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
