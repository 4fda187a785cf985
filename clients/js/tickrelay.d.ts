// Type declarations for tickrelay.js (clients/js/README.md).

/** A quote as the client hands it out: the wire's JSON shape (docs/PROTOCOL.md, "The quote"),
 *  prices as exact decimal strings ("189.1200") or null. */
export interface Quote {
  symbol: string;
  /** Feed sequence of the message that last changed this symbol. */
  seq: number;
  bid: string | null;
  ask: string | null;
  bid_size: number | null;
  ask_size: number | null;
  last: string | null;
  last_size: number | null;
  volume: number | null;
  prev_close: string | null;
  /** Exchange timestamp, ns since the Unix epoch (as a Number: ~0.25 µs precision). */
  ts: number | null;
  /** The feed session the quote belongs to. */
  session: string;
}

export interface QuoteInfo {
  /** Initial or catch-up state (REST or a stream's snapshot), not a fresh tick. */
  snapshot: boolean;
  /** Came from the REST snapshot. */
  rest: boolean;
  transport: TransportName;
  session: string;
}

export type TransportName = "ws" | "ws-msgpack" | "sse" | "poll" | "snapshot";

export interface FeedStatus {
  status: "live" | "stale" | "recovering";
  session: string | null;
  /** false while the relay rebuilds state: any symbol may be missing a change. */
  complete: boolean;
  lost: number;
  incomplete: number;
}

export interface Status {
  connection: "connecting" | "live" | "reconnecting" | "disconnected" | "idle" | "closed";
  transport: TransportName;
  feed: FeedStatus;
  complete: boolean;
  lost: number;
  incomplete: number;
  /** The resume cursor: session and seq of the last envelope. */
  session: string | null;
  seq: number | null;
  /** Time until the next attempt while reconnecting. */
  retryInMs: number | null;
  reason: string;
  /** Frames or events this client could not use: one that did not parse, or
   *  a delta with no whole quote of its symbol before it on the connection
   *  (the stream then reconnects). Each is also reported to `onNotice`. */
  protocolErrors: number;
}

export interface ConnectOptions {
  symbols?: string[];
  transport?: "auto" | TransportName;
  /** The bearer token: a string, or a function (sync or async) asked for a
   *  fresh one before every connection and request, and before a WebSocket's
   *  token expires (it is then handed over with `{"op":"auth"}`). */
  token?: string | null | (() => string | null | Promise<string | null>);
  /** Ask the relay to gather changes for up to this long per frame (0–1000). */
  batchMs?: number;
  /** WebSocket and SSE: ask for deltas (default true), quotes that carry
   *  only the fields that changed; the client merges each into its copy of
   *  the symbol, so `onQuote` gets whole quotes either way. false asks for
   *  whole quotes. Polling always gets whole quotes. */
  deltas?: boolean;
  /** Short polling interval, ms (default 1000). */
  pollIntervalMs?: number;
  /** Long-poll hold time asked of the relay, ms (default 25000). */
  pollTimeoutMs?: number;
  /** `auto`: failed attempts before falling back to the next transport (default 1). */
  fallbackAfter?: number;
  onQuote?: (quote: Quote, info: QuoteInfo) => void;
  onStatus?: (status: Status) => void;
  /** Symbols the relay does not know; they are no longer asked for until subscribed again. */
  onUnknown?: (symbols: string[]) => void;
  /** Symbols the user's token does not allow (`reason`: "not_entitled"):
   *  denied at subscribe, dropped after a refreshed token, or named by a 403.
   *  They are no longer asked for until subscribed again. */
  onDenied?: (symbols: string[], reason: string) => void;
  onNotice?: (text: string, isError: boolean) => void;
  /** A book frame missed (`prev`) or a checksum that disagreed: the book is
   *  resynced (resubscribed, the stream reopened, or read over REST). */
  onBookGap?: (symbol: string, reason: string) => void;
  /** Bytes received and requests sent, as they happen. */
  onTraffic?: (bytes: number, requests: number) => void;
  /** A WebSocket implementation (Node 20 without --experimental-websocket). */
  WebSocket?: unknown;
  fetch?: typeof fetch;
}

export interface Handle {
  subscribe(symbols: string[] | string): void;
  unsubscribe(symbols: string[] | string): void;
  /** Keeps `symbol`'s book (depth 1–50, default 10) on the transport in
   *  use; `onBook` after every frame applied, cut to the depth. */
  subscribeBook(symbol: string, depth?: number, onBook?: (book: BookView) => void): BookSubscription;
  close(): void;
  /** Retry now if waiting in backoff. */
  kick(): void;
  /** The transport in use (with "auto", the one it settled on). */
  readonly transport: TransportName;
  readonly cursor: { session: string; seq: number } | null;
  readonly symbols: string[];
  /** A symbol's bars of `interval`: history, then the bars that change. */
  subscribeBars(symbol: string, interval: BarInterval, options: ChartOptions | undefined, onBars: (bars: Bar[], info: ChartInfo) => void): ChartSubscription;
  /** A symbol's trades: history, then each trade once, in feed order. */
  subscribeTrades(symbol: string, options: ChartOptions | undefined, onTrades: (trades: Trade[], info: ChartInfo) => void): ChartSubscription;
}

export interface ChartOptions {
  /** How many recent bars or trades the first call carries. */
  history?: number;
  /** The relay will not serve it: `not_entitled` (403, or a WebSocket
   *  `subscribed.denied`), `unknown_symbol`. */
  onError?: (error: { code: string; message: string }) => void;
}
export type BarInterval = "1s" | "1m" | "5m" | "15m" | "1h";
export const INTERVALS: BarInterval[];
/** A trade (docs/PROTOCOL.md, "The chart and the tape"). */
export interface Trade { seq: number; /** ns since the Unix epoch */ ts: number; price: string; size: number; }
/** An OHLCV bar; `t` its start in ns since the Unix epoch. */
export interface Bar { t: number; o: string; h: string; l: string; c: string; v: number; n: number; closed: boolean; }
export interface ChartInfo {
  symbol: string;
  interval?: BarInterval;
  /** The first call of a subscription: the history asked for. */
  history: boolean;
  /** Start over: the list is the whole chart (bars), or a new session began. */
  reset: boolean;
  /** Trades of an outage (or of a close for falling behind) the relay no
   *  longer kept could not be had. */
  gap?: boolean;
}
export interface ChartSubscription {
  close(): void;
  /** How it is fed: the relay's WebSocket channels, its SSE stream, or
   *  REST polls (poll and snapshot clients, or a relay that cannot stream). */
  readonly mode: "ws" | "sse" | "poll";
  /** Drops the chart's connection and resumes, as after a network failure. */
  reconnect(): void;
}

export function connect(baseUrl: string, options?: ConnectOptions): Handle;

export const TRANSPORTS: TransportName[];
export const PRICE_SCALE: number;
/** "189.12" → 1891200 (ten-thousandths), or null. */
export function parseDecimal(s: string): number | null;
/** 1891200 → "189.1200". */
export function ticksToDecimal(ticks: number | bigint | null): string | null;
/** 1891200 → "189.12"; 1891234 → "189.1234". */
export function formatTicks(ticks: number | null): string;
/** "189.1200" → "189.12". */
export function formatPrice(price: string | null): string;
/** -1, 0 or 1; null sorts first. */
export function comparePrices(a: string | null, b: string | null): number;
/** a − b as a decimal string. */
export function priceDifference(a: string | null, b: string | null): string | null;
/** (a − b) / b in percent, as text with `digits` decimals. */
export function percentChange(a: string | null, b: string | null, digits?: number): string | null;
export function toNum(v: unknown): number | null;
export function normaliseQuote(raw: Record<string, unknown>, rawInts?: boolean): Omit<Quote, "session">;
export function decodeMsgpack(bytes: Uint8Array | ArrayBuffer | ArrayBufferView): unknown;
export function backoff(attempt: number): number;
/** The claims of a JSON Web Token, decoded without verification (for display
 *  and timing: `exp`, `sub`, the `tickrelay` object); null when not a JWT. */
export function tokenClaims(token: string | null | undefined): Record<string, any> | null;
/** A JWT's `exp` in ms since the Unix epoch; null when it has none. */
export function expiresAt(token: string | null | undefined): number | null;
/** A price level as handed out: decimal price, shares, orders. */
export interface BookLevel { price: string; size: number; orders: number; }
/** A book as `subscribeBook` hands it out. */
export interface BookView { symbol: string; seq: number | null; bids: BookLevel[]; asks: BookLevel[]; gaps: number; }
/** What `subscribeBook` returns. */
export interface BookSubscription {
  readonly copy: BookCopy;
  /** Frames that failed a check (each resynced). */
  readonly gaps: number;
  /** Frames applied. */
  readonly frames: number;
  close(): void;
}
/** A `book` frame (docs/PROTOCOL.md, "Depth of book"). */
export interface BookFrame {
  symbol: string; seq: number; prev: number; snapshot: boolean;
  bids: [string | number, number, number][]; asks: [string | number, number, number][];
  checksum: number;
}
/** A frame was missed, or the checksum disagrees: resubscribe. */
export class BookGap extends Error {}
/** One symbol's book as the client holds it, kept by `book` frames. */
export class BookCopy {
  constructor(symbol: string, depth: number);
  symbol: string; depth: number; seq: number | null;
  /** Applies a frame (`rawInts`: MessagePack prices); throws BookGap. */
  apply(frame: BookFrame, rawInts?: boolean): this;
  reset(): void;
  view(): { symbol: string; seq: number | null; bids: BookLevel[]; asks: BookLevel[] };
}
/** The documented checksum of sides of `{ticks, size}` levels, best first. */
export function bookChecksum(bids: { ticks: number; size: number }[], asks: { ticks: number; size: number }[]): number;
export class HttpError extends Error {
  status: number;
  code: string;
}
