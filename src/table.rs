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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::price::Price;
use crate::wire::{Locate, Message, Session, StateQuote, StateTrade};

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
    /// Bumped when a recovery begins and when it completes (0 until then):
    /// recovered state can change a symbol without moving its `seq`.
    recovery: AtomicU64,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// An empty table with a slot for every locate code.
    pub fn new() -> Self {
        Table {
            slots: (0..LOCATES).map(|_| Slot::default()).collect(),
            info: (0..LOCATES).map(|_| ArcSwapOption::empty()).collect(),
            names: DashMap::new(),
            symbols: AtomicUsize::new(0),
            locate_bound: AtomicUsize::new(0),
            session: RwLock::new(Session::default()),
            last_seq: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            recovery: AtomicU64::new(0),
        }
    }

    /// Applies one decoded message carrying feed sequence `seq`. Writer only.
    pub fn apply(&self, seq: u64, msg: &Message<'_>) -> Applied {
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
        }
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
        if let Some(cur) = &current {
            if &*cur.symbol == symbol && &*cur.name == name && cur.prev_close == prev_close {
                // The directory is repeated periodically; a repeat is no change.
                return Applied::Unchanged;
            }
        }
        let same_symbol = current.as_ref().is_some_and(|c| &*c.symbol == symbol);
        if let Some(cur) = &current {
            if !same_symbol {
                self.names.remove(&cur.symbol);
                self.symbols.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // A symbol moving to another locate leaves its old slot.
        if !same_symbol {
            if let Some((_, old)) = self.names.remove(symbol) {
                self.info[usize::from(old)].store(None);
                self.slots[usize::from(old)].write(|f| {
                    for x in f.iter() {
                        x.store(0, Ordering::Relaxed);
                    }
                });
                self.symbols.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let info = Arc::new(SymbolInfo {
            symbol: Arc::from(symbol),
            name: Arc::from(name),
            locate,
            prev_close,
        });
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
        self.names.clear();
        self.symbols.store(0, Ordering::Relaxed);
        *self.session.write() = session;
        self.last_seq.store(0, Ordering::Release);
        self.recovery.store(0, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(locate: Locate, symbol: &str) -> Message<'_> {
        Message::Directory {
            locate,
            ts: 1,
            symbol,
            name: "Name",
            prev_close: Price(100_0000),
        }
    }

    #[test]
    fn quote_and_trade_build_the_state() {
        let t = Table::new();
        assert_eq!(t.apply(1, &dir(5, "AAPL")), Applied::Changed(5));
        assert_eq!(t.locate("AAPL"), Some(5));
        let q = t.quote(5).unwrap();
        assert_eq!((q.bid, q.last, q.seq), (None, None, 1));
        t.apply(
            2,
            &Message::Quote {
                locate: 5,
                ts: 9,
                bid: Price(1),
                ask: Price(2),
                bid_size: 3,
                ask_size: 4,
            },
        );
        t.apply(
            3,
            &Message::Trade {
                locate: 5,
                ts: 10,
                price: Price(2),
                size: 7,
                volume: 70,
            },
        );
        let q = t.quote(5).unwrap();
        assert_eq!(q.bid, Some(Price(1)));
        assert_eq!(q.ask, Some(Price(2)));
        assert_eq!((q.bid_size, q.ask_size), (3, 4));
        assert_eq!((q.last, q.last_size, q.volume), (Some(Price(2)), 7, 70));
        assert_eq!((q.seq, q.ts), (3, 10));
        assert_eq!(q.prev_close, Price(100_0000));
    }

    #[test]
    fn unknown_locate_is_dropped() {
        let t = Table::new();
        let q = Message::Quote {
            locate: 9,
            ts: 1,
            bid: Price(1),
            ask: Price(2),
            bid_size: 1,
            ask_size: 1,
        };
        assert_eq!(t.apply(1, &q), Applied::UnknownLocate);
        assert!(t.quote(9).is_none());
    }

    #[test]
    fn repeated_directory_is_no_change() {
        let t = Table::new();
        t.apply(1, &dir(1, "MSFT"));
        assert_eq!(t.apply(50, &dir(1, "MSFT")), Applied::Unchanged);
        assert_eq!(t.quote(1).unwrap().seq, 1);
        assert_eq!(t.symbol_count(), 1);
    }

    #[test]
    fn relisting_a_locate_moves_the_name() {
        let t = Table::new();
        t.apply(1, &dir(1, "OLD"));
        t.apply(2, &dir(1, "NEW"));
        assert_eq!(t.locate("OLD"), None);
        assert_eq!(t.locate("NEW"), Some(1));
        t.apply(3, &dir(2, "NEW"));
        assert!(t.info(1).is_none());
        let q = Message::Quote {
            locate: 1,
            ts: 1,
            bid: Price(1),
            ask: Price(2),
            bid_size: 1,
            ask_size: 1,
        };
        assert_eq!(
            t.apply(4, &q),
            Applied::UnknownLocate,
            "the old locate is unlisted"
        );
        assert_eq!(t.locate("NEW"), Some(2));
        assert_eq!(t.symbol_count(), 1);
    }

    #[test]
    fn reset_forgets_everything() {
        let t = Table::new();
        t.apply(1, &dir(1, "A"));
        t.set_last_seq(1);
        t.reset(Session::new("NEXT"));
        assert_eq!(t.symbol_count(), 0);
        assert!(t.locates().is_empty());
        assert_eq!(t.last_seq(), 0);
        assert_eq!(t.session().as_str(), "NEXT");
    }

    #[test]
    fn readers_never_see_a_torn_quote() {
        let t = Arc::new(Table::new());
        t.apply(1, &dir(1, "A"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let reader = {
            let (t, stop, reads) = (t.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let q = t.quote(1).unwrap();
                    if let (Some(b), Some(a)) = (q.bid, q.ask) {
                        // The writer always writes ask = bid + 1 and sizes = bid.
                        assert_eq!(a.raw(), b.raw() + 1);
                        assert_eq!(u64::from(q.bid_size), b.raw() as u64 % 1000);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Write until the reader has overlapped many writes (it may start
        // late), within a bound.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut i = 0i64;
        while (i < 200_000 || reads.load(Ordering::Relaxed) < 10_000)
            && std::time::Instant::now() < deadline
        {
            t.apply(
                i as u64 + 2,
                &Message::Quote {
                    locate: 1,
                    ts: i as u64,
                    bid: Price(i),
                    ask: Price(i + 1),
                    bid_size: (i % 1000) as u32,
                    ask_size: 0,
                },
            );
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        assert!(
            reads.load(Ordering::Relaxed) >= 10_000,
            "the reader overlapped the writer"
        );
    }

    fn quote_msg(locate: Locate, ts: u64, bid: i64) -> Message<'static> {
        Message::Quote {
            locate,
            ts,
            bid: Price(bid),
            ask: Price(bid + 1),
            bid_size: 1,
            ask_size: 2,
        }
    }

    #[test]
    fn an_older_half_never_replaces_a_newer_one() {
        let t = Table::new();
        t.apply(1, &dir(3, "IBM"));
        t.apply(10, &quote_msg(3, 100, 50));
        // Retransmitted history arrives late: older than what is held.
        assert_eq!(t.apply(7, &quote_msg(3, 70, 40)), Applied::Unchanged);
        assert_eq!(t.quote(3).unwrap().bid, Some(Price(50)));
        // A state whose quote half is older but whose trade half is new.
        let before = t.stamp(3);
        let state = Message::State {
            locate: 3,
            ts: 90,
            quote: Some(StateQuote {
                seq: 9,
                bid: Price(45),
                ask: Price(46),
                bid_size: 1,
                ask_size: 1,
            }),
            trade: Some(StateTrade {
                seq: 8,
                last: Price(44),
                last_size: 5,
                volume: 500,
            }),
        };
        assert_eq!(t.apply(0, &state), Applied::Changed(3));
        let q = t.quote(3).unwrap();
        assert_eq!(
            (q.bid, q.last, q.volume),
            (Some(Price(50)), Some(Price(44)), 500)
        );
        assert_eq!(
            (q.seq, q.ts),
            (10, 100),
            "seq and ts follow the newest half"
        );
        assert_ne!(t.stamp(3), before, "the stamp moves with every change");
        assert_eq!(
            t.apply(0, &state),
            Applied::Unchanged,
            "a repeated state is no change"
        );
        assert_eq!(t.halves(3), (true, true));
    }

    #[test]
    fn a_state_for_an_unlisted_locate_is_dropped() {
        let t = Table::new();
        let state = Message::State {
            locate: 8,
            ts: 1,
            quote: None,
            trade: None,
        };
        assert_eq!(t.apply(0, &state), Applied::UnknownLocate);
    }

    mod merge {
        use super::*;
        use proptest::prelude::*;

        /// A live event: (locate, is_trade, price).
        type Live = (u16, bool, i64);

        fn live_message(seq: u64, (locate, trade, px): Live) -> Message<'static> {
            if trade {
                Message::Trade {
                    locate,
                    ts: seq * 10,
                    price: Price(px),
                    size: (px % 7) as u32 + 1,
                    volume: seq * 100,
                }
            } else {
                Message::Quote {
                    locate,
                    ts: seq * 10,
                    bid: Price(px),
                    ask: Price(px + 3),
                    bid_size: (px % 5) as u32,
                    ask_size: (px % 11) as u32,
                }
            }
        }

        const SYMBOLS: [&str; 4] = ["A", "B", "C", "D"];

        fn listed() -> Table {
            listed_at(1)
        }

        /// Lists the symbols at sequences `first..`: a relay that joined late
        /// sees a later repeat of the directory than one that was there.
        fn listed_at(first: u64) -> Table {
            let t = Table::new();
            for (i, s) in SYMBOLS.iter().enumerate() {
                t.apply(i as u64 + first, &dir(i as Locate, s));
            }
            t
        }

        /// The state a producer's recovery loop would send for `locate`
        /// after the first `k` live events.
        fn state_after(live: &[Live], k: usize, locate: u16) -> Message<'static> {
            let t = listed();
            for (i, ev) in live[..k].iter().enumerate() {
                t.apply(i as u64 + 5, &live_message(i as u64 + 5, *ev));
            }
            let f = t.slots[usize::from(locate)].read();
            let (has_q, has_t) = t.halves(locate);
            Message::State {
                locate,
                ts: f[F_TS],
                quote: has_q.then(|| StateQuote {
                    seq: f[F_QUOTE_SEQ],
                    bid: Price(f[F_BID] as i64),
                    ask: Price(f[F_ASK] as i64),
                    bid_size: f[F_BID_SIZE] as u32,
                    ask_size: f[F_ASK_SIZE] as u32,
                }),
                trade: has_t.then(|| StateTrade {
                    seq: f[F_TRADE_SEQ],
                    last: Price(f[F_LAST] as i64),
                    last_size: f[F_LAST_SIZE] as u32,
                    volume: f[F_VOLUME],
                }),
            }
        }

        fn case() -> impl Strategy<Value = (Vec<Live>, Vec<(usize, u16)>, Vec<usize>)> {
            (
                proptest::collection::vec((0u16..4, any::<bool>(), 1i64..1_000_000), 1..40),
                proptest::collection::vec((any::<usize>(), 0u16..4), 0..12),
            )
                .prop_flat_map(|(live, states)| {
                    let n = live.len() + states.len();
                    let order: Vec<usize> = (0..n).collect();
                    (Just(live), Just(states), Just(order).prop_shuffle())
                })
        }

        proptest! {
            /// Any interleaving of live messages (in any order, as
            /// retransmitted history arrives) and loop states taken at any
            /// point gives the table that in-order application gives.
            #[test]
            fn any_interleaving_gives_the_same_table((live, states, order) in case(), late in any::<bool>()) {
                let expected = listed();
                for (i, ev) in live.iter().enumerate() {
                    expected.apply(i as u64 + 5, &live_message(i as u64 + 5, *ev));
                }
                let states: Vec<Message<'static>> = states
                    .iter()
                    .map(|&(k, locate)| state_after(&live, k % (live.len() + 1), locate))
                    .collect();
                let got = if late { listed_at(1_000) } else { listed() };
                for &i in &order {
                    if i < live.len() {
                        got.apply(i as u64 + 5, &live_message(i as u64 + 5, live[i]));
                    } else {
                        got.apply(0, &states[i - live.len()]);
                    }
                }
                for l in 0..4u16 {
                    let (mut g, mut e) = (got.quote(l).unwrap(), expected.quote(l).unwrap());
                    if got.halves(l) == (false, false) {
                        // Never ticked: only the listing dates it.
                        g.seq = 0;
                        g.ts = 0;
                        e.seq = 0;
                        e.ts = 0;
                    }
                    prop_assert_eq!(g, e);
                }
            }
        }
    }
}
