//! The chart and the tape: per symbol, its newest trades and its OHLCV bars
//! of 1 second and 1 minute, kept by the table's single writer (the ingest
//! path) as it applies trade messages; 5-minute, 15-minute and 1-hour bars
//! are built from the 1-minute bars when asked for.
//!
//! Bars are pure functions of the trades and their exchange timestamps
//! (`bucket = ts - ts % interval`), never of the relay's clock, so every
//! relay on the same feed that has applied the same trades serves the same
//! bars. A bar is closed once feed time (the newest exchange timestamp of
//! any feed message applied, quotes included) reaches its end, for a symbol
//! that trades no more too: that is decided when the bar is read.
//!
//! Order and repeats: a trade is taken whatever the table's trade half holds
//! (replayed history arrives after newer live trades), put on the tape in
//! its place by feed sequence and into its bars, whose open and close go by
//! feed sequence. A trade whose sequence is already on the tape is a repeat
//! and changes nothing. A trade older than everything a full tape holds is
//! not kept on the tape but still counts in its bars: the feed applies each
//! sequence once (the sequencer drops repeats; replayed history brings only
//! sequences the relay never applied), which is what keeps bars exact
//! beyond the tape's reach.
//!
//! Memory: nothing for a symbol until its first trade; then rings that grow
//! with use up to their caps (docs/ARCHITECTURE.md, "The chart and the
//! tape", has the bytes). Readers take a symbol's lock for one copy of what
//! they asked for (at most the kept length) and build the answer after it,
//! so the writer waits at most for one such copy, and a reader never sees a
//! trade half applied.

mod asof;
mod bars;
mod tape;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

pub use asof::LIVE;
pub use bars::Bar;
use bars::{BarRing, Kept};
pub use tape::Trade;
use tape::{Tape, Taped};

use crate::price::Price;
use crate::wire::Locate;

/// Trades kept per symbol by default (`trade_history`).
pub const DEFAULT_TRADE_HISTORY: usize = 1_000;
/// 1-second bars kept per symbol by default (`bars_1s`): 15 minutes.
pub const DEFAULT_BARS_1S: usize = 900;
/// 1-minute bars kept per symbol by default (`bars_1m`): a day.
pub const DEFAULT_BARS_1M: usize = 1_440;

const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;

/// How much history is kept per symbol. A 0 keeps none of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Trades on the tape (`trade_history`).
    pub trades: usize,
    /// 1-second bars (`bars_1s`).
    pub bars_1s: usize,
    /// 1-minute bars (`bars_1m`).
    pub bars_1m: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            trades: DEFAULT_TRADE_HISTORY,
            bars_1s: DEFAULT_BARS_1S,
            bars_1m: DEFAULT_BARS_1M,
        }
    }
}

impl HistoryLimits {
    /// Nothing kept at all.
    pub const OFF: HistoryLimits = HistoryLimits {
        trades: 0,
        bars_1s: 0,
        bars_1m: 0,
    };

    /// Heap bytes one symbol holds once every ring is full.
    pub fn bytes_per_symbol(&self) -> usize {
        std::mem::size_of::<Symbol>()
            + self.trades * std::mem::size_of::<Trade>()
            + (self.bars_1s + self.bars_1m) * std::mem::size_of::<Kept>()
    }
}

/// A bar interval clients may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    /// 1 second, kept.
    S1,
    /// 1 minute, kept.
    M1,
    /// 5 minutes, from the 1-minute bars.
    M5,
    /// 15 minutes, from the 1-minute bars.
    M15,
    /// 1 hour, from the 1-minute bars.
    H1,
}

impl Interval {
    /// Every interval, finest first.
    pub const ALL: [Interval; 5] = [
        Interval::S1,
        Interval::M1,
        Interval::M5,
        Interval::M15,
        Interval::H1,
    ];

    /// `1s`, `1m`, `5m`, `15m` or `1h`.
    pub fn parse(s: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// Its name in requests and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::H1 => "1h",
        }
    }

    /// Its length in nanoseconds.
    pub fn nanos(self) -> u64 {
        match self {
            Interval::S1 => SECOND,
            Interval::M1 => MINUTE,
            Interval::M5 => 5 * MINUTE,
            Interval::M15 => 15 * MINUTE,
            Interval::H1 => 60 * MINUTE,
        }
    }

    /// How many bars of this interval a symbol's history can hold: the
    /// kept length of 1 s and 1 min, and what the 1-minute bars make up
    /// for the coarser ones.
    pub fn kept(self, limits: &HistoryLimits) -> usize {
        match self {
            Interval::S1 => limits.bars_1s,
            Interval::M1 => limits.bars_1m,
            coarse => limits.bars_1m / (coarse.nanos() / MINUTE) as usize,
        }
    }
}

/// One symbol's history.
#[derive(Debug)]
struct Symbol {
    tape: Tape,
    s1: BarRing,
    m1: BarRing,
    /// Trades taken this session (repeats not counted): moves whenever the
    /// history does.
    version: u64,
}

/// What a reader got: the items asked for, oldest first, and the version
/// of the symbol's history they were read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// Oldest first.
    pub items: Vec<T>,
    /// Trades taken for the symbol this session: the same history has the
    /// same version, and any change moves it.
    pub version: u64,
}

/// What a stream reads of a tape after its position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapeRead {
    /// The trades after the position, oldest first.
    pub trades: Vec<Trade>,
    /// More are kept after these (more than the reader asked for).
    pub more: bool,
    /// Some trade after the position is no longer kept: the reader missed it.
    pub gap: bool,
}

/// Every symbol's trades and bars, by locate.
pub struct Chart {
    limits: HistoryLimits,
    symbols: Box<[Mutex<Option<Box<Symbol>>>]>,
    /// Highest locate with a history + 1: bounds a reset.
    bound: AtomicUsize,
    /// The newest exchange timestamp of any feed message applied.
    feed_time: AtomicU64,
    /// Whether this relay has every trade of the session (see
    /// [`Chart::complete`]).
    complete: AtomicBool,
}

impl Chart {
    /// An empty chart for `locates` locate codes.
    pub fn new(limits: HistoryLimits, locates: usize) -> Chart {
        Chart {
            limits,
            symbols: (0..locates).map(|_| Mutex::new(None)).collect(),
            bound: AtomicUsize::new(0),
            feed_time: AtomicU64::new(0),
            complete: AtomicBool::new(true),
        }
    }

    /// What is kept per symbol.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Takes a trade of `locate` at feed sequence `seq`. Writer only.
    pub(crate) fn trade(&self, locate: Locate, seq: u64, ts: u64, price: Price, size: u32) {
        if self.limits == HistoryLimits::OFF {
            return;
        }
        let idx = usize::from(locate);
        let Some(slot) = self.symbols.get(idx) else {
            return;
        };
        let mut guard = slot.lock();
        let sym = guard.get_or_insert_with(|| {
            self.bound.fetch_max(idx + 1, Ordering::Relaxed);
            Box::new(Symbol {
                tape: Tape::new(self.limits.trades),
                s1: BarRing::new(SECOND, self.limits.bars_1s),
                m1: BarRing::new(MINUTE, self.limits.bars_1m),
                version: 0,
            })
        });
        let taped = sym.tape.insert(Trade {
            seq,
            ts,
            price,
            size,
        });
        if taped == Taped::Repeat {
            return;
        }
        sym.s1.add(seq, ts, price, size);
        sym.m1.add(seq, ts, price, size);
        sym.version += 1;
    }

    /// Feed time moves to `ts` if that is newer. Writer only.
    pub(crate) fn advance(&self, ts: u64) {
        if ts > self.feed_time.load(Ordering::Relaxed) {
            self.feed_time.store(ts, Ordering::Release);
        }
    }

    /// Forgets `locate`'s history (another ticker took its locate). Writer only.
    pub(crate) fn clear(&self, locate: Locate) {
        if let Some(slot) = self.symbols.get(usize::from(locate)) {
            slot.lock().take();
        }
    }

    /// Forgets everything (a new session). Writer only.
    pub(crate) fn reset(&self) {
        let bound = self.bound.swap(0, Ordering::Relaxed);
        for slot in &self.symbols[..bound.min(self.symbols.len())] {
            slot.lock().take();
        }
        self.feed_time.store(0, Ordering::Release);
    }

    /// Says whether this relay's history holds every trade of the session
    /// so far: false after a late join or a loss, until replayed history
    /// has filled every gap; for the rest of the session once a gap can no
    /// longer be filled. Writer only.
    pub fn set_complete(&self, complete: bool) {
        self.complete.store(complete, Ordering::Release);
    }

    /// Whether this relay's history holds every trade of the session (the
    /// kept length aside): `complete` in the answers.
    pub fn complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// The newest exchange timestamp of any feed message applied.
    pub fn feed_time(&self) -> u64 {
        self.feed_time.load(Ordering::Acquire)
    }

    /// Up to `limit` of the newest trades of `locate` with a sequence below
    /// `before_seq`, oldest first, of those made before `until` ([`LIVE`]:
    /// all; see `asof`).
    pub fn trades(&self, locate: Locate, before_seq: u64, limit: usize, until: u64) -> Page<Trade> {
        self.read(locate, |sym| {
            let tape = sym.tape.trades();
            let end = tape
                .partition_point(|t| t.seq < before_seq)
                .min(asof::visible(tape, until));
            tape.range(end.saturating_sub(limit)..end)
                .copied()
                .collect()
        })
    }

    /// Up to `limit` of the newest `interval` bars of `locate` starting
    /// before `before` (ns), oldest first, each closed or not by feed time;
    /// as of `until` ([`LIVE`]: now; see `asof`).
    pub fn bars(
        &self,
        locate: Locate,
        interval: Interval,
        before: u64,
        limit: usize,
        until: u64,
    ) -> Page<Bar> {
        // Feed time first: a bar read after it holds every trade up to it.
        let now = self.feed_time().min(until);
        let len = interval.nanos();
        let bound = before.min(asof::ended_before(until, interval));
        let (mut floor, mut partial) = (0, None);
        let page = self.read(locate, |sym| {
            partial = asof::partial(sym, interval, until).filter(|p| p.t < before);
            match interval {
                Interval::S1 => newest(sym.s1.bars(), bound, limit),
                Interval::M1 => newest(sym.m1.bars(), bound, limit),
                _ => {
                    floor = sym.m1.floor();
                    minutes_for(sym.m1.bars(), len, bound, limit)
                }
            }
        });
        let mut kept = match interval {
            Interval::S1 | Interval::M1 => page.items,
            _ => bars::coarse(&page.items, len, floor),
        };
        kept.extend(partial);
        kept.drain(..kept.len().saturating_sub(limit));
        Page {
            items: kept.iter().map(|b| b.bar(len, now)).collect(),
            version: page.version,
        }
    }

    /// For a stream's first frame: the newest `n` trades of `locate` made
    /// before `until` (oldest first) and the sequence of the newest of
    /// them (0: none yet).
    pub fn tape_tail(&self, locate: Locate, n: usize, until: u64) -> (Vec<Trade>, u64) {
        self.with(locate, |sym| {
            let Some(sym) = sym else {
                return (Vec::new(), 0);
            };
            let tape = sym.tape.trades();
            let end = asof::visible(tape, until);
            let last = tape.range(..end).next_back().map_or(0, |t| t.seq);
            let items = tape.range(end.saturating_sub(n)..end).copied().collect();
            (items, last)
        })
    }

    /// For a stream at position `after` (the last trade sequence it sent):
    /// the kept trades of `locate` after it made before `until`, oldest
    /// first, at most `max`.
    pub fn trades_after(&self, locate: Locate, after: u64, max: usize, until: u64) -> TapeRead {
        self.with(locate, |sym| {
            let Some(sym) = sym else {
                return TapeRead::default();
            };
            let tape = sym.tape.trades();
            let from = tape.partition_point(|t| t.seq <= after);
            // Only what lies after the position is looked at: a stream's
            // earlier trades were visible at an earlier cutoff already.
            let pending = asof::visible_after(tape, from, until);
            TapeRead {
                trades: tape.range(from..from + pending.min(max)).copied().collect(),
                more: pending > max,
                gap: sym.tape.dropped() > after,
            }
        })
    }

    /// For a stream: the `interval` bars of `locate` starting at or after
    /// `from` (ns), oldest first, at most the newest `limit`, each closed or
    /// not by feed time; as of `until` ([`LIVE`]: now).
    pub fn bars_from(
        &self,
        locate: Locate,
        interval: Interval,
        from: u64,
        limit: usize,
        until: u64,
    ) -> Vec<Bar> {
        let now = self.feed_time().min(until);
        let len = interval.nanos();
        let bound = asof::ended_before(until, interval);
        let after = |ring: &VecDeque<Kept>| {
            let start = ring.partition_point(|b| b.t < from);
            let end = ring.partition_point(|b| b.t < bound);
            ring.range(start.max(end.saturating_sub(limit)).min(end)..end)
                .copied()
                .collect::<Vec<Kept>>()
        };
        let mut kept = self.with(locate, |sym| {
            let Some(sym) = sym else { return Vec::new() };
            let mut kept = match interval {
                Interval::S1 => after(sym.s1.bars()),
                Interval::M1 => after(sym.m1.bars()),
                _ => {
                    let ring = sym.m1.bars();
                    let start = ring.partition_point(|b| b.t < from);
                    let end = ring.partition_point(|b| b.t < bound);
                    let minutes: Vec<Kept> = ring.range(start.min(end)..end).copied().collect();
                    bars::coarse(&minutes, len, sym.m1.floor())
                }
            };
            kept.extend(asof::partial(sym, interval, until).filter(|p| p.t >= from));
            kept
        });
        kept.drain(..kept.len().saturating_sub(limit));
        kept.iter().map(|b| b.bar(len, now)).collect()
    }

    /// Runs `f` on `locate`'s history (`None`: none yet) under its lock.
    fn with<R>(&self, locate: Locate, f: impl FnOnce(Option<&Symbol>) -> R) -> R {
        match self.symbols.get(usize::from(locate)) {
            Some(slot) => f(slot.lock().as_deref()),
            None => f(None),
        }
    }

    /// Copies what `f` picks from `locate`'s history under its lock.
    fn read<T>(&self, locate: Locate, f: impl FnOnce(&Symbol) -> Vec<T>) -> Page<T> {
        let Some(slot) = self.symbols.get(usize::from(locate)) else {
            return Page {
                items: Vec::new(),
                version: 0,
            };
        };
        match slot.lock().as_deref() {
            Some(sym) => Page {
                items: f(sym),
                version: sym.version,
            },
            None => Page {
                items: Vec::new(),
                version: 0,
            },
        }
    }

    /// Heap bytes held by every symbol's history now.
    pub fn heap_bytes(&self) -> usize {
        let bound = self.bound.load(Ordering::Relaxed).min(self.symbols.len());
        self.symbols[..bound]
            .iter()
            .filter_map(|slot| {
                slot.lock().as_deref().map(|s| {
                    std::mem::size_of::<Symbol>()
                        + s.tape.heap_bytes()
                        + s.s1.heap_bytes()
                        + s.m1.heap_bytes()
                })
            })
            .sum()
    }
}

/// Up to `limit` of the newest bars starting before `before`.
fn newest(ring: &VecDeque<Kept>, before: u64, limit: usize) -> Vec<Kept> {
    let end = ring.partition_point(|b| b.t < before);
    ring.range(end.saturating_sub(limit)..end)
        .copied()
        .collect()
}

/// The 1-minute bars that make up the newest `limit` buckets of `interval`
/// starting before `before`.
fn minutes_for(ring: &VecDeque<Kept>, interval: u64, before: u64, limit: usize) -> Vec<Kept> {
    let bucket = |b: &Kept| b.t - b.t % interval;
    let end = ring.partition_point(|b| bucket(b) < before);
    let mut start = end;
    let mut buckets = 0;
    while start > 0 {
        let b = bucket(&ring[start - 1]);
        if start == end || b != bucket(&ring[start]) {
            if buckets == limit {
                break;
            }
            buckets += 1;
        }
        start -= 1;
    }
    ring.range(start..end).copied().collect()
}

/// Grows a ring that is full to its capacity, by doubling up to `cap`: a
/// symbol that trades little holds little.
fn room<T>(ring: &mut VecDeque<T>, cap: usize) {
    if ring.len() == ring.capacity() && ring.len() < cap {
        let grow = ring.len().max(8).min(cap - ring.len());
        ring.reserve_exact(grow);
    }
}

#[cfg(test)]
mod tests;
