//! Depth of book per symbol, beside the quote: two arrays of price levels
//! (bids best-highest first, asks best-lowest first) of at most
//! `max_book_levels` each, behind a seqlock of atomics like the quote's
//! slot. One writer (the ingest path): an `'L'` is a binary search and a
//! shift; readers copy the top levels they want and retry the rare read
//! that overlapped a write, so they never see a torn book.
//!
//! The book's `seq` is the feed sequence of the last `'L'` it reflects. An
//! `'L'` no newer than that is already in the book and is skipped, and a
//! recovery-loop `'B'` replaces the book only when its `book_seq` is newer
//! — so the loop and the live feed merge in any order (docs/FEED.md,
//! "Depth of book").
//!
//! While the relay recovers (a late join, a loss), a book is the state it
//! had when recovery began (its *base*) plus the `'L'`s applied since (its
//! *log*, in `recovery`): a `'B'` newer than the base replaces it and the
//! logged `'L'`s newer than the `'B'` are applied again on top, and
//! retransmitted history takes its place among them. Without
//! this, the live `'L'`s that overtake a `'B'` on its way would make every
//! `'B'` look old, and a late joiner's books would never be whole.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use parking_lot::Mutex;

use crate::price::Price;
use crate::wire::{Levels, Locate, PriceLevel, Side};

mod frame;
mod recovery;

pub use frame::{BookFrame, CHECKSUM_LEVELS, checksum};
use recovery::{Entry, Recovering};

/// Levels kept per side unless `max_book_levels` says otherwise.
pub const DEFAULT_MAX_LEVELS: usize = 50;

/// One side's levels, as the writer changes them: the published atomics or
/// a plain vector (a recovering book's base).
trait SideStore {
    fn len(&self) -> usize;
    fn get(&self, i: usize) -> PriceLevel;
    fn put(&mut self, i: usize, level: PriceLevel);
    fn set_len(&mut self, len: usize);
}

impl SideStore for Vec<PriceLevel> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn get(&self, i: usize) -> PriceLevel {
        self[i]
    }
    fn put(&mut self, i: usize, level: PriceLevel) {
        self[i] = level;
    }
    fn set_len(&mut self, len: usize) {
        self.resize(len, PriceLevel::default());
    }
}

/// Where `price` is on `side` (`Ok`: at that index), or where it would go.
fn find(s: &impl SideStore, side: Side, price: Price) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0, s.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        let p = s.get(mid).price;
        if p == price {
            return Ok(mid);
        }
        if side.better(p, price) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Err(lo)
}

/// What setting one level did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Set {
    changed: bool,
    /// Levels that fell beyond `max` (the new one, or the worst kept).
    dropped: u64,
}

/// Sets one level, absolute: its size and orders replace the level's, size
/// 0 deletes it. At most `max` levels are kept.
fn set_level(s: &mut impl SideStore, side: Side, l: PriceLevel, max: usize) -> Set {
    let len = s.len();
    match find(s, side, l.price) {
        Ok(i) if l.size == 0 => {
            for j in i..len - 1 {
                let next = s.get(j + 1);
                s.put(j, next);
            }
            s.set_len(len - 1);
            Set {
                changed: true,
                dropped: 0,
            }
        }
        Ok(i) => {
            let changed = s.get(i) != l;
            s.put(i, l);
            Set {
                changed,
                dropped: 0,
            }
        }
        Err(_) if l.size == 0 => Set::default(),
        Err(i) if i >= max => Set {
            changed: false,
            dropped: 1,
        },
        Err(i) => {
            let new_len = (len + 1).min(max);
            s.set_len(new_len);
            for j in (i + 1..new_len).rev() {
                let prev = s.get(j - 1);
                s.put(j, prev);
            }
            s.put(i, l);
            Set {
                changed: true,
                dropped: u64::from(len == max),
            }
        }
    }
}

/// One symbol's published book. `version` is odd while a write is under way.
struct Slot {
    version: AtomicU64,
    seq: AtomicU64,
    ts: AtomicU64,
    len: [AtomicU64; 2],
    /// Per side, two words a level: the price, then `size << 32 | orders`.
    words: [Box<[AtomicU64]>; 2],
}

/// One side of a [`Slot`], as the writer sees it inside a write.
struct SlotSide<'a> {
    slot: &'a Slot,
    side: usize,
}

impl SideStore for SlotSide<'_> {
    fn len(&self) -> usize {
        self.slot.len[self.side].load(Ordering::Relaxed) as usize
    }
    fn get(&self, i: usize) -> PriceLevel {
        self.slot.level(self.side, i)
    }
    fn put(&mut self, i: usize, l: PriceLevel) {
        let w = &self.slot.words[self.side];
        w[2 * i].store(l.price.raw() as u64, Ordering::Relaxed);
        w[2 * i + 1].store(
            u64::from(l.size) << 32 | u64::from(l.orders),
            Ordering::Relaxed,
        );
    }
    fn set_len(&mut self, len: usize) {
        self.slot.len[self.side].store(len as u64, Ordering::Relaxed);
    }
}

impl Slot {
    fn new(max: usize) -> Slot {
        let side = || (0..2 * max).map(|_| AtomicU64::new(0)).collect();
        Slot {
            version: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            ts: AtomicU64::new(0),
            len: [AtomicU64::new(0), AtomicU64::new(0)],
            words: [side(), side()],
        }
    }

    fn level(&self, side: usize, i: usize) -> PriceLevel {
        let w = &self.words[side];
        let packed = w[2 * i + 1].load(Ordering::Relaxed);
        PriceLevel {
            price: Price(w[2 * i].load(Ordering::Relaxed) as i64),
            size: (packed >> 32) as u32,
            orders: packed as u32,
        }
    }

    fn side(&self, side: Side) -> SlotSide<'_> {
        SlotSide {
            slot: self,
            side: side.index(),
        }
    }

    fn seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Single writer only: the ingest path.
    fn write<R>(&self, update: impl FnOnce(&Slot) -> R) -> R {
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let r = update(self);
        self.version.store(v.wrapping_add(2), Ordering::Release);
        r
    }

    /// Inside a write: the whole book becomes `bids` and `asks` at `seq`.
    fn fill(&self, bids: &[PriceLevel], asks: &[PriceLevel], seq: u64, ts: u64) {
        for (side, levels) in [(Side::Bid, bids), (Side::Ask, asks)] {
            let mut s = self.side(side);
            for (i, &l) in levels.iter().enumerate() {
                s.put(i, l);
            }
            s.set_len(levels.len());
        }
        self.seq.store(seq, Ordering::Relaxed);
        self.ts.store(ts, Ordering::Relaxed);
    }

    fn read_into(&self, depth: usize, max: usize, out: &mut BookRead) {
        let depth = depth.min(max);
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            out.bids.clear();
            out.asks.clear();
            for (side, levels) in [(0, &mut out.bids), (1, &mut out.asks)] {
                // A length read mid-write may be anything: bounded, then
                // thrown away with the rest of the read below.
                let n = (self.len[side].load(Ordering::Relaxed) as usize).min(depth);
                levels.extend((0..n).map(|i| self.level(side, i)));
            }
            out.seq = self.seq.load(Ordering::Relaxed);
            out.ts = self.ts.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) == v1 {
                out.stamp = v1;
                return;
            }
        }
    }
}

/// A book as read: its top levels, the `seq` of the last `'L'` it reflects
/// and a stamp that moves with every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookRead {
    /// Feed sequence of the last `'L'` reflected (0: none).
    pub seq: u64,
    /// Exchange timestamp of the last change.
    pub ts: u64,
    /// Moves on every write to this book (a cache or ETag is current while
    /// it stands still; recovery can change a book without moving `seq`).
    pub stamp: u64,
    /// Bids, best (highest) first.
    pub bids: Vec<PriceLevel>,
    /// Asks, best (lowest) first.
    pub asks: Vec<PriceLevel>,
}

/// The writer's own state: books under recovery and what is left to settle.
#[derive(Default)]
struct Writer {
    recovering: HashMap<Locate, Recovering>,
    /// Recovering books whose log took an entry out of order: rebuilt at
    /// the next [`Books::settle`].
    dirty: Vec<Locate>,
    /// Locates with a slot, for resets.
    allocated: Vec<Locate>,
}

/// Every symbol's book, by locate.
pub struct Books {
    max: usize,
    slots: Box<[OnceLock<Box<Slot>>]>,
    /// A recovery is under way (the writer's flag; relaxed is exact).
    recovering: AtomicBool,
    writer: Mutex<Writer>,
    dropped: AtomicU64,
    changes: AtomicU64,
}

impl Books {
    /// Books of at most `max` levels per side (at least 1).
    pub fn new(max: usize) -> Books {
        Books {
            max: max.max(1),
            slots: (0..super::LOCATES).map(|_| OnceLock::new()).collect(),
            recovering: AtomicBool::new(false),
            writer: Mutex::new(Writer::default()),
            dropped: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    /// Levels kept per side.
    pub fn max_levels(&self) -> usize {
        self.max
    }

    /// Levels dropped so far because a side held `max_book_levels`.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// `'L'` and `'B'` messages that changed a book so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn slot(&self, locate: Locate) -> &Slot {
        self.slots[usize::from(locate)].get_or_init(|| {
            self.writer.lock().allocated.push(locate);
            Box::new(Slot::new(self.max))
        })
    }

    fn count(&self, set: Set) -> bool {
        if set.dropped > 0 {
            self.dropped.fetch_add(set.dropped, Ordering::Relaxed);
        }
        if set.changed {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        set.changed
    }

    /// Applies an `'L'` at feed sequence `seq`; true if the book changed.
    /// Writer only.
    pub fn apply_level(
        &self,
        seq: u64,
        locate: Locate,
        ts: u64,
        side: Side,
        l: PriceLevel,
    ) -> bool {
        let slot = self.slot(locate);
        if !self.recovering.load(Ordering::Relaxed) {
            if seq <= slot.seq() {
                return false;
            }
            return self.count(write_level(slot, seq, ts, side, l, self.max));
        }
        let mut w = self.writer.lock();
        let rec = w
            .recovering
            .entry(locate)
            .or_insert_with(|| Recovering::of(slot, self.max));
        let entry = Entry {
            seq,
            ts,
            side,
            level: l,
        };
        match rec.take(entry) {
            recovery::Taken::Newest => {
                let set = write_level(slot, seq, ts, side, l, self.max);
                if rec.overflowed() {
                    // Too much to keep: from here the book merges as a
                    // whole one does (a newer `'B'` still replaces it).
                    *rec = Recovering::of(slot, self.max);
                }
                self.count(set)
            }
            recovery::Taken::Older => {
                w.dirty.push(locate);
                false
            }
            recovery::Taken::Known => false,
        }
    }

    /// Merges a `'B'`: the whole book as of `book_seq`, if that is newer
    /// than what the book holds. True if the book changed. Writer only.
    pub fn apply_book(
        &self,
        locate: Locate,
        ts: u64,
        book_seq: u64,
        bids: Levels<'_>,
        asks: Levels<'_>,
    ) -> bool {
        let slot = self.slot(locate);
        let (bids, d1) = truncated(bids, self.max);
        let (asks, d2) = truncated(asks, self.max);
        if !self.recovering.load(Ordering::Relaxed) {
            if book_seq <= slot.seq() {
                return false;
            }
            self.dropped.fetch_add(d1 + d2, Ordering::Relaxed);
            slot.write(|s| s.fill(&bids, &asks, book_seq, ts));
            self.changes.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let mut w = self.writer.lock();
        let rec = w
            .recovering
            .entry(locate)
            .or_insert_with(|| Recovering::of(slot, self.max));
        if !rec.replace_base(bids, asks, book_seq, ts) {
            return false;
        }
        self.dropped.fetch_add(d1 + d2, Ordering::Relaxed);
        rec.rebuild(slot, self.max);
        self.changes.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A recovery begins: from now on each book keeps its base and log
    /// until [`Books::end_recovery`]. Writer only.
    pub fn begin_recovery(&self) {
        self.recovering.store(true, Ordering::Relaxed);
    }

    /// Recovery is over: what is left to settle is, and the bases and logs
    /// are dropped. Writer only.
    pub fn end_recovery(&self, changed: impl FnMut(Locate, u64)) {
        self.settle(changed);
        self.recovering.store(false, Ordering::Relaxed);
        self.writer.lock().recovering = HashMap::new();
    }

    /// Rebuilds the recovering books that took history out of order, telling
    /// `changed` of each that changed. Writer only.
    pub fn settle(&self, mut changed: impl FnMut(Locate, u64)) {
        let mut w = self.writer.lock();
        if w.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut w.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &locate in &dirty {
            if let (Some(slot), Some(rec)) = (
                self.slots[usize::from(locate)].get(),
                w.recovering.get(&locate),
            ) {
                rec.rebuild(slot, self.max);
                changed(locate, slot.seq());
            }
        }
        dirty.clear();
        w.dirty = dirty;
    }

    /// Empties the book of `locate` (a new listing there). Writer only.
    pub fn clear(&self, locate: Locate) {
        if let Some(slot) = self.slots[usize::from(locate)].get() {
            slot.write(|s| s.fill(&[], &[], 0, 0));
            self.writer.lock().recovering.remove(&locate);
        }
    }

    /// Empties every book (a new session) and ends any recovery. Writer only.
    pub fn reset(&self) {
        let mut w = self.writer.lock();
        for &locate in &w.allocated {
            if let Some(slot) = self.slots[usize::from(locate)].get() {
                slot.write(|s| s.fill(&[], &[], 0, 0));
            }
        }
        w.recovering = HashMap::new();
        w.dirty.clear();
        self.recovering.store(false, Ordering::Relaxed);
    }

    /// The top `depth` levels per side of `locate`'s book.
    pub fn read(&self, locate: Locate, depth: usize) -> BookRead {
        let mut out = BookRead::default();
        self.read_into(locate, depth, &mut out);
        out
    }

    /// [`Books::read`] into `out`, reusing its vectors.
    pub fn read_into(&self, locate: Locate, depth: usize, out: &mut BookRead) {
        match self.slots[usize::from(locate)].get() {
            Some(slot) => slot.read_into(depth, self.max, out),
            None => *out = BookRead::default(),
        }
    }
}

/// One `'L'` into the published book, with its sequence and time.
fn write_level(slot: &Slot, seq: u64, ts: u64, side: Side, l: PriceLevel, max: usize) -> Set {
    slot.write(|s| {
        s.seq.store(seq, Ordering::Relaxed);
        s.ts.store(ts, Ordering::Relaxed);
        set_level(&mut s.side(side), side, l, max)
    })
}

/// A side of a `'B'` cut to `max` levels, and how many were cut.
fn truncated(levels: Levels<'_>, max: usize) -> (Vec<PriceLevel>, u64) {
    let all = levels.len();
    let kept: Vec<PriceLevel> = levels.iter().take(max).collect();
    let cut = all - kept.len();
    (kept, cut as u64)
}

#[cfg(test)]
mod tests;
