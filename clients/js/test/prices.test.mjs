// The pure parts of tickrelay.js: exact prices and the MessagePack decoder.
// Run: node --test clients/js/test/
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  comparePrices, decodeMsgpack, formatPrice, formatTicks, normaliseQuote, parseDecimal,
  percentChange, priceDifference, ticksToDecimal,
} from '../tickrelay.js';

test('decimal prices parse to exact ten-thousandths and back', () => {
  assert.equal(parseDecimal('189.1200'), 1891200);
  assert.equal(parseDecimal('0.0001'), 1);
  assert.equal(parseDecimal('-3.5'), -35000);
  assert.equal(parseDecimal('abc'), null);
  // 0.1 + 0.2 is the classic float trap: here it is exact.
  assert.equal(ticksToDecimal(parseDecimal('0.1') + parseDecimal('0.2')), '0.3000');
  assert.equal(ticksToDecimal(1891234), '189.1234');
  assert.equal(ticksToDecimal(-5n), '-0.0005');
  assert.equal(formatTicks(1891200), '189.12');
  assert.equal(formatTicks(1891234), '189.1234');
  assert.equal(formatPrice('189.1200'), '189.12');
  assert.equal(formatPrice(null), '');
});

test('prices compare and subtract without floats', () => {
  assert.equal(comparePrices('189.12', '189.1200'), 0);
  assert.equal(comparePrices('189.1201', '189.12'), 1);
  assert.equal(comparePrices('9.99', '10.00'), -1);
  assert.equal(comparePrices(null, '1.00'), -1);
  assert.equal(priceDifference('189.1300', '187.0000'), '2.1300');
  assert.equal(priceDifference('0.3000', '0.1000'), '0.2000');
  assert.equal(percentChange('110.0000', '100.0000'), '10.00');
  assert.equal(percentChange('99.9950', '100.0000', 3), '-0.005');
  assert.equal(percentChange('1.0000', '3.0000'), '-66.67');
  assert.equal(percentChange('1.0000', '0'), null);
});

test('MessagePack quotes come out with decimal-string prices', () => {
  // {"symbol":"AB","seq":7,"bid":1891200,"ask":null,"ts":2^62}
  const bytes = Uint8Array.from([
    0x85,
    0xa6, ...Buffer.from('symbol'), 0xa2, ...Buffer.from('AB'),
    0xa3, ...Buffer.from('seq'), 0x07,
    0xa3, ...Buffer.from('bid'), 0xce, 0x00, 0x1c, 0xdb, 0x80,
    0xa3, ...Buffer.from('ask'), 0xc0,
    0xa2, ...Buffer.from('ts'), 0xcf, 0x40, 0, 0, 0, 0, 0, 0, 0,
  ]);
  const raw = decodeMsgpack(bytes);
  assert.equal(raw.bid, 1891200);
  const q = normaliseQuote(raw, true);
  assert.equal(q.symbol, 'AB');
  assert.equal(q.seq, 7);
  assert.equal(q.bid, '189.1200');
  assert.equal(q.ask, null);
  assert.equal(q.ts, 2 ** 62);
  assert.throws(() => decodeMsgpack(bytes.subarray(0, 10)), /truncated/);
  // JSON quotes keep their strings as they are.
  assert.equal(normaliseQuote({ symbol: 'x', seq: '3', bid: '1.5000' }).bid, '1.5000');
});

test('a snapshot behind the cursor is the truth only from a relay that holds every symbol', async () => {
  const { ResumeState } = await import('../lib/resume.js');
  // A relay rejoining mid-session answers seq 0 until its state is whole
  // (complete=false): behind, not a reset; each symbol's newest wins.
  const r = new ResumeState();
  r.adopt('S1', 500);
  assert.equal(r.pass('AAA', 'S1', 480, false), true);
  assert.equal(r.advance(0, 'full', undefined, false), 'kept');
  assert.equal(r.cursor.seq, 500, 'the cursor stays');
  assert.equal(r.pass('AAA', 'S1', 300, false), false, 'an older AAA is not passed on');
  // A whole relay's snapshot behind a cursor that has not moved since it was
  // asked for: the feed restarted under the same name; it is the truth.
  assert.equal(r.advance(120, 'full', undefined, true), 'reset');
  assert.equal(r.cursor.seq, 120);
});
