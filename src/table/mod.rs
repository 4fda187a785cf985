//! The symbol table: the latest state of every symbol, indexed by locate code.
//!
//! One writer (the ingest path) and any number of readers (the HTTP and
//! streaming paths). Each slot is a seqlock over plain atomics: the writer
//! never waits, never allocates on a quote or trade, and readers retry the
//! rare read that overlapped a write. Names live apart from prices, in a
//! per-slot `ArcSwap` and a name → locate map that only clients look up: the
//! ingest path never hashes a string except on a directory message.
//!
//! Each symbol's state has two halves, the quote (bid, ask, sizes) and the
//! trade (last, size, volume), and each remembers the feed sequence of the
//! message it reflects. A half is replaced only by a newer one, so live
//! messages, retransmitted history and the recovery loop's state messages
//! can be applied in any order and give the same table (docs/FEED.md,
//! "Recovery").
//!
//! Beside the state, [`Chart`] keeps each symbol's newest trades and its
//! bars (`chart`), fed by the same writer as it applies trade messages.
//!
//! Beside each quote, the symbol's depth of book (`book`): the levels of
//! `'L'` messages and the recovery loop's `'B'`, merged by the same rule.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::price::Price;
use crate::wire::{Locate, Message, Session, StateQuote, StateTrade};

pub mod book;
pub mod chart;
pub mod delayed;
mod listener;
pub use book::{BookFrame, BookRead, Books};
pub use chart::{Chart, HistoryLimits, TapeRead};
pub use delayed::DelayedView;
pub use listener::ChangeListener;

/// Number of locate codes (the whole `u16` range).
pub const LOCATES: usize = 1 << 16;

const F_SEQ: usize = 0;
const F_TS: usize = 1;
const F_BID: usize = 2;
const F_ASK: usize = 3;
const F_BID_SIZE: usize = 4;
const F_ASK_SIZE: usize = 5;
const F_LAST: usize = 6;
const F_LAST_SIZE: usize = 7;
const F_VOLUME: usize = 8;
const F_PREV_CLOSE: usize = 9;
const F_FLAGS: usize = 10;
/// Feed sequence of the quote the bid/ask half reflects (0: none).
const F_QUOTE_SEQ: usize = 11;
/// Feed sequence of the trade the last/volume half reflects (0: none).
const F_TRADE_SEQ: usize = 12;
const FIELDS: usize = 13;

const HAS_QUOTE: u64 = 1;
const HAS_TRADE: u64 = 2;
/// Set by a directory entry: the writer checks it instead of the name slot.
const LISTED: u64 = 4;

/// Sets a flag bit. Single writer: a load and a store, no locked RMW.
fn set_flag(flags: &AtomicU64, bit: u64) {
    flags.store(flags.load(Ordering::Relaxed) | bit, Ordering::Relaxed);
}

/// A change at feed sequence `seq` (exchange time `ts`): the symbol's `seq`
/// and `ts` follow its newest change. Inside a slot write.
fn bump_seq(f: &[AtomicU64; FIELDS], seq: u64, ts: u64) {
    if seq >= f[F_SEQ].load(Ordering::Relaxed) {
        f[F_SEQ].store(seq, Ordering::Relaxed);
        f[F_TS].store(ts, Ordering::Relaxed);
    }
}

/// A quote or trade half at `seq`: as [`bump_seq`], except that the first
/// half replaces a listing's sequence even when older. Which repeat of the
/// directory a relay saw first depends on when it joined; the halves do not.
/// Call before setting the half's flag.
fn bump_half(f: &[AtomicU64; FIELDS], seq: u64, ts: u64) {
    if f[F_FLAGS].load(Ordering::Relaxed) & (HAS_QUOTE | HAS_TRADE) == 0 {
        f[F_SEQ].store(seq, Ordering::Relaxed);
        f[F_TS].store(ts, Ordering::Relaxed);
    } else {
        bump_seq(f, seq, ts);
    }
}

/// One symbol's prices behind a seqlock. Version is odd while a write is in
/// progress.
#[derive(Default)]
struct Slot {
    version: AtomicU64,
    fields: [AtomicU64; FIELDS],
}

impl Slot {
    fn read(&self) -> [u64; FIELDS] {
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut out = [0u64; FIELDS];
            for (o, f) in out.iter_mut().zip(&self.fields) {
                *o = f.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) == v1 {
                return out;
            }
        }
    }

    /// Single writer only: the ingest path.
    fn write(&self, update: impl FnOnce(&[AtomicU64; FIELDS])) {
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        update(&self.fields);
        self.version.store(v.wrapping_add(2), Ordering::Release);
    }
}

/// A directory entry: what a locate code stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolInfo {
    /// Ticker.
    pub symbol: Arc<str>,
    /// Company name.
    pub name: Arc<str>,
    /// Locate code on the current session's feed.
    pub locate: Locate,
    /// Previous close.
    pub prev_close: Price,
}

/// The quote every transport sends: one shape, shared by all (docs/PROTOCOL.md, "The quote").
/// Prices are decimal strings in JSON and fixed-point integers in MessagePack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Ticker.
    pub symbol: Arc<str>,
    /// Feed sequence of the message that last changed this symbol.
    pub seq: u64,
    /// Best bid, `null` before the first quote.
    pub bid: Option<Price>,
    /// Best ask, `null` before the first quote.
    pub ask: Option<Price>,
    /// Shares at the bid.
    pub bid_size: u32,
    /// Shares at the ask.
    pub ask_size: u32,
    /// Last trade price, `null` before the first trade.
    pub last: Option<Price>,
    /// Last trade size.
    pub last_size: u32,
    /// Cumulative session volume.
    pub volume: u64,
    /// Previous close.
    pub prev_close: Price,
    /// Exchange timestamp of the last change, ns since the Unix epoch.
    pub ts: u64,
}

/// What applying one message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The symbol at this locate changed.
    Changed(Locate),
    /// The book of the symbol at this locate changed (its quote did not).
    BookChanged(Locate),
    /// Nothing changed (a repeated directory entry).
    Unchanged,
    /// A quote or trade for a locate with no directory entry: dropped.
    UnknownLocate,
}

/// The latest state of every symbol, plus the feed position it reflects.
pub struct Table {
    slots: Box<[Slot]>,
    info: Box<[ArcSwapOption<SymbolInfo>]>,
    names: DashMap<Arc<str>, Locate>,
    symbols: AtomicUsize,
    /// Highest locate ever listed this session + 1: bounds full scans.
    locate_bound: AtomicUsize,
    session: RwLock<Session>,
    last_seq: AtomicU64,
    /// Bumped on every reset, so caches keyed by `seq` can tell sessions apart.
    epoch: AtomicU64,
    /// Moves on every listing of a ticker at a locate that did not hold it.
    listings: AtomicU64,
    /// Bumped when a recovery begins and when it completes (0 until then):
    /// recovered state can change a symbol without moving its `seq`.
    recovery: AtomicU64,
    /// Trades and bars per symbol.
    chart: Chart,
    /// Depth of book per locate.
    books: Books,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// An empty table with a slot for every locate code, keeping the
    /// default history of trades and bars and [`book::DEFAULT_MAX_LEVELS`]
    /// levels per side of each book.
    pub fn new() -> Self {
        Self::with_limits(HistoryLimits::default(), book::DEFAULT_MAX_LEVELS)
    }

    /// An empty table keeping `history` of trades and bars per symbol.
    pub fn with_history(history: HistoryLimits) -> Self {
        Self::with_limits(history, book::DEFAULT_MAX_LEVELS)
    }

    /// An empty table keeping at most `max_book_levels` per side of each book.
    pub fn with_book_levels(max_book_levels: usize) -> Self {
        Self::with_limits(HistoryLimits::default(), max_book_levels)
    }

    /// An empty table keeping `history` of trades and bars and at most
    /// `max_book_levels` per side of each book.
    pub fn with_limits(history: HistoryLimits, max_book_levels: usize) -> Self {
        Table {
            books: Books::new(max_book_levels),
            slots: (0..LOCATES).map(|_| Slot::default()).collect(),
            info: (0..LOCATES).map(|_| ArcSwapOption::empty()).collect(),
            names: DashMap::new(),
            symbols: AtomicUsize::new(0),
            listings: AtomicU64::new(0),
            locate_bound: AtomicUsize::new(0),
            session: RwLock::new(Session::default()),
            last_seq: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            recovery: AtomicU64::new(0),
            chart: Chart::new(history, LOCATES),
        }
    }

    /// Applies one decoded message carrying feed sequence `seq`. Writer only.
    /// A feed message (`seq` above 0; the recovery loop's carry none) moves
    /// feed time, whether or not it changed anything.
    pub fn apply(&self, seq: u64, msg: &Message<'_>) -> Applied {
        let applied = self.apply_message(seq, msg);
        if seq > 0 && applied != Applied::UnknownLocate {
            self.chart.advance(msg.ts());
        }
        applied
    }

    fn apply_message(&self, seq: u64, msg: &Message<'_>) -> Applied {
        match *msg {
            Message::Directory {
                locate,
                ts,
                symbol,
                name,
                prev_close,
            } => self.apply_directory(seq, locate, ts, symbol, name, prev_close),
            Message::Quote {
                locate,
                ts,
                bid,
                ask,
                bid_size,
                ask_size,
            } => {
                let slot = &self.slots[usize::from(locate)];
                // Only the writer changes LISTED, so a relaxed load is exact.
                if slot.fields[F_FLAGS].load(Ordering::Relaxed) & LISTED == 0 {
                    return Applied::UnknownLocate;
                }
                if seq <= slot.fields[F_QUOTE_SEQ].load(Ordering::Relaxed) {
                    return Applied::Unchanged;
                }
                slot.write(|f| {
                    f[F_QUOTE_SEQ].store(seq, Ordering::Relaxed);
                    bump_half(f, seq, ts);
                    f[F_BID].store(bid.raw() as u64, Ordering::Relaxed);
                    f[F_ASK].store(ask.raw() as u64, Ordering::Relaxed);
                    f[F_BID_SIZE].store(u64::from(bid_size), Ordering::Relaxed);
                    f[F_ASK_SIZE].store(u64::from(ask_size), Ordering::Relaxed);
                    set_flag(&f[F_FLAGS], HAS_QUOTE);
                });
                Applied::Changed(locate)
            }
            Message::Trade {
                locate,
                ts,
                price,
                size,
                volume,
            } => {
                let slot = &self.slots[usize::from(locate)];
                // Only the writer changes LISTED, so a relaxed load is exact.
                if slot.fields[F_FLAGS].load(Ordering::Relaxed) & LISTED == 0 {
                    return Applied::UnknownLocate;
                }
                // The tape and bars take replayed history older than the
                // trade half too, in its place (see `chart`).
                self.chart.trade(locate, seq, ts, price, size);
                if seq <= slot.fields[F_TRADE_SEQ].load(Ordering::Relaxed) {
                    return Applied::Unchanged;
                }
                slot.write(|f| {
                    f[F_TRADE_SEQ].store(seq, Ordering::Relaxed);
                    bump_half(f, seq, ts);
                    f[F_LAST].store(price.raw() as u64, Ordering::Relaxed);
                    f[F_LAST_SIZE].store(u64::from(size), Ordering::Relaxed);
                    f[F_VOLUME].store(volume, Ordering::Relaxed);
                    set_flag(&f[F_FLAGS], HAS_TRADE);
                });
                Applied::Changed(locate)
            }
            Message::State {
                locate,
                ts,
                quote,
                trade,
            } => self.apply_state(locate, ts, quote, trade),
            Message::Level {
                locate,
                ts,
                side,
                price,
                size,
                orders,
            } => {
                if !self.listed(locate) {
                    return Applied::UnknownLocate;
                }
                let level = crate::wire::PriceLevel {
                    price,
                    size,
                    orders,
                };
                book_outcome(locate, self.books.apply_level(seq, locate, ts, side, level))
            }
            Message::Book {
                locate,
                ts,
                book_seq,
                bids,
                asks,
            } => {
                if !self.listed(locate) {
                    return Applied::UnknownLocate;
                }
                book_outcome(
                    locate,
                    self.books.apply_book(locate, ts, book_seq, bids, asks),
                )
            }
        }
    }

    /// Whether a directory entry listed `locate`. Writer only (exact then).
    fn listed(&self, locate: Locate) -> bool {
        self.slots[usize::from(locate)].fields[F_FLAGS].load(Ordering::Relaxed) & LISTED != 0
    }

    /// Merges a recovery-loop state message: each half replaces the table's
    /// only if it reflects a newer feed message. Writer only.
    fn apply_state(
        &self,
        locate: Locate,
        ts: u64,
        quote: Option<StateQuote>,
        trade: Option<StateTrade>,
    ) -> Applied {
        let slot = &self.slots[usize::from(locate)];
        let f = &slot.fields;
        if f[F_FLAGS].load(Ordering::Relaxed) & LISTED == 0 {
            return Applied::UnknownLocate;
        }
        let quote = quote.filter(|q| q.seq > f[F_QUOTE_SEQ].load(Ordering::Relaxed));
        let trade = trade.filter(|t| t.seq > f[F_TRADE_SEQ].load(Ordering::Relaxed));
        if quote.is_none() && trade.is_none() {
            return Applied::Unchanged;
        }
        slot.write(|f| {
            if let Some(q) = quote {
                f[F_QUOTE_SEQ].store(q.seq, Ordering::Relaxed);
                bump_half(f, q.seq, ts);
                f[F_BID].store(q.bid.raw() as u64, Ordering::Relaxed);
                f[F_ASK].store(q.ask.raw() as u64, Ordering::Relaxed);
                f[F_BID_SIZE].store(u64::from(q.bid_size), Ordering::Relaxed);
                f[F_ASK_SIZE].store(u64::from(q.ask_size), Ordering::Relaxed);
                set_flag(&f[F_FLAGS], HAS_QUOTE);
            }
            if let Some(t) = trade {
                f[F_TRADE_SEQ].store(t.seq, Ordering::Relaxed);
                bump_half(f, t.seq, ts);
                f[F_LAST].store(t.last.raw() as u64, Ordering::Relaxed);
                f[F_LAST_SIZE].store(u64::from(t.last_size), Ordering::Relaxed);
                f[F_VOLUME].store(t.volume, Ordering::Relaxed);
                set_flag(&f[F_FLAGS], HAS_TRADE);
            }
        });
        Applied::Changed(locate)
    }

    fn apply_directory(
        &self,
        seq: u64,
        locate: Locate,
        ts: u64,
        symbol: &str,
        name: &str,
        prev_close: Price,
    ) -> Applied {
        let idx = usize::from(locate);
        let current = self.info[idx].load_full();
        if let Some(cur) = &current
            && &*cur.symbol == symbol
            && &*cur.name == name
            && cur.prev_close == prev_close
        {
            // The directory is repeated periodically; a repeat is no change.
            return Applied::Unchanged;
        }
        let same_symbol = current.as_ref().is_some_and(|c| &*c.symbol == symbol);
        if let Some(cur) = &current
            && !same_symbol
        {
            self.chart.clear(locate);
            self.names.remove(&cur.symbol);
            self.symbols.fetch_sub(1, Ordering::Relaxed);
        }
        // A symbol moving to another locate leaves its old slot.
        if !same_symbol && let Some((_, old)) = self.names.remove(symbol) {
            self.chart.clear(old);
            self.info[usize::from(old)].store(None);
            self.books.clear(old);
            self.slots[usize::from(old)].write(|f| {
                for x in f.iter() {
                    x.store(0, Ordering::Relaxed);
                }
            });
            self.symbols.fetch_sub(1, Ordering::Relaxed);
        }
        let info = Arc::new(SymbolInfo {
            symbol: Arc::from(symbol),
            name: Arc::from(name),
            locate,
            prev_close,
        });
        if !same_symbol {
            self.books.clear(locate);
        }
        let slot = &self.slots[idx];
        slot.write(|f| {
            if !same_symbol {
                for x in f.iter() {
                    x.store(0, Ordering::Relaxed);
                }
            }
            // Recovery-loop entries carry no feed sequence (0): they list
            // the symbol without dating it.
            bump_seq(f, seq, ts);
            f[F_PREV_CLOSE].store(prev_close.raw() as u64, Ordering::Relaxed);
            set_flag(&f[F_FLAGS], LISTED);
        });
        if !same_symbol {
            self.names.insert(info.symbol.clone(), locate);
            self.symbols.fetch_add(1, Ordering::Relaxed);
        }
        self.info[idx].store(Some(info));
        self.locate_bound.fetch_max(idx + 1, Ordering::Relaxed);
        if !same_symbol {
            self.listings.fetch_add(1, Ordering::Release);
        }
        Applied::Changed(locate)
    }

    /// Forgets every symbol and starts `session`. Writer only.
    pub fn reset(&self, session: Session) {
        let bound = self.locate_bound.swap(0, Ordering::Relaxed);
        for idx in 0..bound {
            if self.info[idx].swap(None).is_some() {
                self.slots[idx].write(|f| {
                    for x in f.iter() {
                        x.store(0, Ordering::Relaxed);
                    }
                });
            }
        }
        self.books.reset();
        self.names.clear();
        self.chart.reset();
        self.symbols.store(0, Ordering::Relaxed);
        *self.session.write() = session;
        self.last_seq.store(0, Ordering::Release);
        self.recovery.store(0, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.listings.fetch_add(1, Ordering::Release);
    }

    /// A count that moves whenever a locate starts holding another ticker
    /// (a listing, a ticker moved, a reset): while it stands still, what
    /// was filed by locate is still filed under the right ticker.
    pub fn listings(&self) -> u64 {
        self.listings.load(Ordering::Acquire)
    }

    /// Records that every message up to `seq` has been applied. Writer only.
    pub fn set_last_seq(&self, seq: u64) {
        self.last_seq.store(seq, Ordering::Release);
    }

    /// The feed sequence of the last applied message.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// A recovery began or completed. Writer only.
    pub fn bump_recovery(&self) {
        self.recovery.fetch_add(1, Ordering::AcqRel);
    }

    /// How many times a recovery began or completed this session.
    pub fn recovery_generation(&self) -> u64 {
        self.recovery.load(Ordering::Acquire)
    }

    /// Every symbol's trades and bars.
    pub fn chart(&self) -> &Chart {
        &self.chart
    }

    /// How many times the table was reset (one per feed session).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The current feed session.
    pub fn session(&self) -> Session {
        *self.session.read()
    }

    /// Number of symbols in the directory.
    pub fn symbol_count(&self) -> usize {
        self.symbols.load(Ordering::Relaxed)
    }

    /// Looks up a ticker.
    pub fn locate(&self, symbol: &str) -> Option<Locate> {
        self.names.get(symbol).map(|r| *r.value())
    }

    /// The directory entry of a locate code.
    pub fn info(&self, locate: Locate) -> Option<Arc<SymbolInfo>> {
        self.info[usize::from(locate)].load_full()
    }

    /// The feed sequence that last changed `locate` (0 if never).
    pub fn seq_of(&self, locate: Locate) -> u64 {
        self.slots[usize::from(locate)].read()[F_SEQ]
    }

    /// A stamp that moves on every write to `locate`'s state: a cache of its
    /// encoding is current while the stamp is unchanged. (The symbol's `seq`
    /// is not enough: a recovered half may be older than the other half.)
    pub fn stamp(&self, locate: Locate) -> u64 {
        self.slots[usize::from(locate)]
            .version
            .load(Ordering::Acquire)
    }

    /// Which halves of `locate`'s state are known: (quote, trade).
    pub fn halves(&self, locate: Locate) -> (bool, bool) {
        let flags = self.slots[usize::from(locate)].fields[F_FLAGS].load(Ordering::Relaxed);
        (flags & HAS_QUOTE != 0, flags & HAS_TRADE != 0)
    }

    /// The current quote of a locate code, if it is listed.
    pub fn quote(&self, locate: Locate) -> Option<Quote> {
        let info = self.info(locate)?;
        let f = self.slots[usize::from(locate)].read();
        let flags = f[F_FLAGS];
        let price = |i: usize| Price(f[i] as i64);
        Some(Quote {
            symbol: info.symbol.clone(),
            seq: f[F_SEQ],
            bid: (flags & HAS_QUOTE != 0).then(|| price(F_BID)),
            ask: (flags & HAS_QUOTE != 0).then(|| price(F_ASK)),
            bid_size: f[F_BID_SIZE] as u32,
            ask_size: f[F_ASK_SIZE] as u32,
            last: (flags & HAS_TRADE != 0).then(|| price(F_LAST)),
            last_size: f[F_LAST_SIZE] as u32,
            volume: f[F_VOLUME],
            prev_close: price(F_PREV_CLOSE),
            ts: f[F_TS],
        })
    }

    /// The top `depth` levels per side of `locate`'s book, if it is listed.
    pub fn book(&self, locate: Locate, depth: usize) -> Option<BookRead> {
        self.info(locate)?;
        Some(self.books.read(locate, depth))
    }

    /// Every symbol's book: reads, and the writer's recovery and counts.
    pub fn books(&self) -> &Books {
        &self.books
    }

    /// Every listed locate code, in locate order.
    pub fn locates(&self) -> Vec<Locate> {
        let bound = self.locate_bound.load(Ordering::Relaxed).min(LOCATES);
        (0..bound)
            .filter(|&i| self.info[i].load().is_some())
            .map(|i| i as Locate)
            .collect()
    }

    /// The directory, in locate order.
    pub fn directory(&self) -> Vec<Arc<SymbolInfo>> {
        self.locates()
            .into_iter()
            .filter_map(|l| self.info(l))
            .collect()
    }
}

/// What a book message did to the symbol at `locate`.
fn book_outcome(locate: Locate, changed: bool) -> Applied {
    if changed {
        Applied::BookChanged(locate)
    } else {
        Applied::Unchanged
    }
}

#[cfg(test)]
mod tests;
