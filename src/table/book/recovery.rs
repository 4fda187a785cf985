//! A book while the relay recovers: its *base* (the book as it was when
//! recovery began, or as the newest `'B'` gave it) and every `'L'` newer
//! than the base: the *log* (live ones, each the newest yet, appended) and
//! the *history* (ones that came after a newer one: retransmitted history,
//! kept sorted). The published book is always the base with both applied
//! on top in sequence order, so:
//!
//! - a live `'L'` is logged and applied to the published book at once;
//! - a `'B'` newer than the base replaces it; the `'L'`s it already
//!   reflects are forgotten and the rest applied again on top;
//! - an older `'L'` goes into the history at its place, and the book is
//!   rebuilt once per batch (`Books::settle`).
//!
//! Any order of the same `'L'`s and `'B'`s gives the same book.

use super::{PriceLevel, Side, Slot, SlotSide, set_level};

/// Most `'L'`s one book keeps during a recovery (log and history); past it
/// the book merges as a whole one does (only a newer `'B'` replaces it).
const MAX_LOG: usize = 1 << 16;

/// One logged `'L'`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) ts: u64,
    pub(super) side: Side,
    pub(super) level: PriceLevel,
}

/// Where an `'L'` went.
pub(super) enum Taken {
    /// Newer than everything: logged; apply it to the published book.
    Newest,
    /// Older than the newest logged: the book must be rebuilt.
    Older,
    /// Already reflected (in the base, or logged): nothing to do.
    Known,
}

/// A recovering book's base and log.
pub(super) struct Recovering {
    base: [Vec<PriceLevel>; 2],
    base_seq: u64,
    base_ts: u64,
    log: Vec<Entry>,
    history: Vec<Entry>,
}

impl Recovering {
    /// The published book as it is now, as the base. Writer only (its
    /// relaxed reads of the slot are exact).
    pub(super) fn of(slot: &Slot, max: usize) -> Recovering {
        let side = |side: Side| {
            let s = SlotSide {
                slot,
                side: side.index(),
            };
            let n = super::SideStore::len(&s).min(max);
            (0..n)
                .map(|i| super::SideStore::get(&s, i))
                .collect::<Vec<_>>()
        };
        Recovering {
            base: [side(Side::Bid), side(Side::Ask)],
            base_seq: slot.seq(),
            base_ts: slot.ts.load(std::sync::atomic::Ordering::Relaxed),
            log: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Takes one `'L'`.
    pub(super) fn take(&mut self, e: Entry) -> Taken {
        if e.seq <= self.base_seq {
            return Taken::Known;
        }
        let newest = [self.log.last(), self.history.last()]
            .into_iter()
            .flatten()
            .map(|l| l.seq)
            .fold(self.base_seq, u64::max);
        if e.seq > newest {
            self.log.push(e);
            return Taken::Newest;
        }
        if self.log.binary_search_by_key(&e.seq, |l| l.seq).is_ok() {
            return Taken::Known;
        }
        match self.history.binary_search_by_key(&e.seq, |l| l.seq) {
            Ok(_) => Taken::Known,
            Err(i) => {
                self.history.insert(i, e);
                Taken::Older
            }
        }
    }

    /// A `'B'` as of `book_seq`: the new base if it is newer. True if taken.
    pub(super) fn replace_base(
        &mut self,
        bids: Vec<PriceLevel>,
        asks: Vec<PriceLevel>,
        book_seq: u64,
        ts: u64,
    ) -> bool {
        if book_seq <= self.base_seq {
            return false;
        }
        self.base = [bids, asks];
        self.base_seq = book_seq;
        self.base_ts = ts;
        self.log.retain(|e| e.seq > book_seq);
        self.history.retain(|e| e.seq > book_seq);
        true
    }

    /// Whether the log grew past its bound.
    pub(super) fn overflowed(&self) -> bool {
        self.log.len() + self.history.len() > MAX_LOG
    }

    /// Publishes the base with the log and the history applied on top, in
    /// sequence order. Writer only.
    pub(super) fn rebuild(&self, slot: &Slot, max: usize) {
        slot.write(|s| {
            s.fill(&self.base[0], &self.base[1], self.base_seq, self.base_ts);
            let (mut log, mut history) =
                (self.log.iter().peekable(), self.history.iter().peekable());
            let mut last: Option<&Entry> = None;
            loop {
                let e = match (log.peek(), history.peek()) {
                    (Some(a), Some(b)) if a.seq < b.seq => log.next(),
                    (Some(_), Some(_)) | (None, Some(_)) => history.next(),
                    (Some(_), None) => log.next(),
                    (None, None) => break,
                };
                let Some(e) = e else { break };
                set_level(&mut s.side(e.side), e.side, e.level, max);
                last = Some(e);
            }
            if let Some(last) = last {
                s.seq.store(last.seq, std::sync::atomic::Ordering::Relaxed);
                s.ts.store(
                    last.ts.max(self.base_ts),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        });
    }
}
