/* tickrelay — the JavaScript client (clients/js/README.md).
 *
 *   import { connect } from './tickrelay.js';
 *   const feed = connect('http://127.0.0.1:8080/', {
 *     symbols: ['AAPL', 'MSFT'],
 *     transport: 'auto',             // 'ws' | 'ws-msgpack' | 'sse' | 'poll' | 'snapshot'
 *     token: () => fetchMyToken(),   // optional: a string, or a function asked for a fresh one
 *     deltas: true,                  // default: WebSocket and SSE send changed fields only
 *     onQuote: (q) => console.log(q.symbol, q.bid, q.ask),
 *     onStatus: (s) => console.log(s.connection, s.feed.status),
 *   });
 *   feed.subscribe(['NVDA']); feed.unsubscribe(['MSFT']); feed.close();
 *   const book = feed.subscribeBook('AAPL', 10, (b) => draw(b.bids, b.asks));
 *
 * What it does for the caller: loads the snapshot over REST first, then
 * streams changes over the chosen transport; reconnects with jittered
 * backoff and resumes by `since` / Last-Event-ID (the relay's seq promise
 * makes that lossless); `auto` falls back WebSocket → SSE → long polling
 * when one cannot connect; a new feed session (a restarted relay or feed)
 * is detected and the watchlist re-read. A token function is asked for a
 * fresh token before every connection and request, and a WebSocket hands
 * the relay a fresh one before the old one expires; symbols the token does
 * not allow are reported (`onDenied`). WebSocket and SSE ask for deltas
 * (only the fields that changed) and merge them into the symbol's copy, so
 * callbacks always get whole quotes. Prices stay exact decimal strings
 * ("189.1200"); the price helpers compare and format them without floats.
 * MessagePack frames are decoded here, prices from their fixed-point
 * integers.
 *
 * No build step, no dependencies: ES modules for browsers and Node 20+
 * (Node 20 needs --experimental-websocket, or pass `WebSocket` in options).
 * This file is the entry point and holds the public exports; the library
 * lives in lib/, one concern a module, imported relatively (serve or copy
 * lib/ next to this file):
 *
 *   lib/prices.js      exact decimal prices, the quote's shape
 *   lib/msgpack.js     the MessagePack decoder
 *   lib/time.js        the clock, sleeps, reconnect backoff
 *   lib/http.js        the relay's error answers, the symbols parameter
 *   lib/auth.js        the user's token: string or function, its claims, refresh timing
 *   lib/book.js        depth of book: a symbol's copy kept by frames, its checksum
 *   lib/chart.js       bars and trades: history then live, resume without gap or repeat
 *   lib/books.js       the books of a connected client (subscribeBook), on every transport
 *   lib/resume.js      the resume cursor and the per-symbol merge rule
 *   lib/transport.js   what every transport shares (reconnect, backoff, delta merging)
 *   lib/ws.js          WebSocket, JSON or MessagePack
 *   lib/sse.js         Server-Sent Events over a streamed fetch
 *   lib/poll.js        long polling
 *   lib/snapshot.js    short polling of the REST snapshot
 *   lib/transports.js  the transports by name, `auto`'s order
 *   lib/client.js      `connect`: subscriptions, REST, fallback, status
 */

export {
  PRICE_SCALE, comparePrices, formatPrice, formatTicks, normaliseQuote, parseDecimal,
  percentChange, priceDifference, ticksToDecimal, toNum,
} from './lib/prices.js';
export { decodeMsgpack } from './lib/msgpack.js';
export { backoff } from './lib/time.js';
export { HttpError } from './lib/http.js';
export { expiresAt, tokenClaims } from './lib/auth.js';
export { BookCopy, BookGap, bookChecksum, watchBook } from './lib/book.js';
export { INTERVALS } from './lib/chart.js';
export { TRANSPORTS } from './lib/transports.js';
export { connect } from './lib/client.js';
