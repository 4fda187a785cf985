//! The tape of one symbol: its newest trades, sorted by feed sequence.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::price::Price;

/// A trade as clients get it (docs/PROTOCOL.md, "Trades").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Trade {
    /// Feed sequence of the trade message.
    pub seq: u64,
    /// Exchange timestamp, ns since the Unix epoch.
    pub ts: u64,
    /// Price.
    pub price: Price,
    /// Shares.
    pub size: u32,
}

/// What [`Tape::insert`] did with a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taped {
    /// Kept (the usual case: newer than every kept trade).
    Kept,
    /// Older than every trade a full tape keeps: not kept, and not known
    /// to be a repeat (the feed applies each sequence once).
    Older,
    /// Its sequence is on the tape already: a repeat, to be ignored.
    Repeat,
}

/// The newest `cap` trades, oldest first.
#[derive(Debug)]
pub(crate) struct Tape {
    ring: VecDeque<Trade>,
    cap: usize,
    /// The highest sequence no longer kept (0: none dropped): a reader
    /// whose position is below it has missed trades.
    dropped: u64,
    /// The newest exchange timestamp of a trade not kept (with `dropped`
    /// 0, none): the tape holds every trade from after it.
    dropped_ts: u64,
}

impl Tape {
    pub(crate) fn new(cap: usize) -> Tape {
        Tape {
            ring: VecDeque::new(),
            cap,
            dropped: 0,
            dropped_ts: 0,
        }
    }

    /// Puts `trade` in its place by sequence.
    pub(crate) fn insert(&mut self, trade: Trade) -> Taped {
        if self.cap == 0 {
            self.lost(trade);
            return Taped::Older;
        }
        let at = match self.ring.back() {
            None => 0,
            Some(last) if trade.seq > last.seq => self.ring.len(),
            Some(_) => match self.ring.binary_search_by_key(&trade.seq, |t| t.seq) {
                Ok(_) => return Taped::Repeat,
                Err(0) if self.ring.len() >= self.cap => {
                    self.lost(trade);
                    return Taped::Older;
                }
                Err(i) => i,
            },
        };
        // A full tape drops its oldest trade first; `at` is at least 1
        // then (an older trade than every kept one was refused above).
        if self.ring.len() >= self.cap {
            if let Some(old) = self.ring.pop_front() {
                self.lost(old);
            }
            self.ring.insert(at - 1, trade);
        } else {
            super::room(&mut self.ring, self.cap);
            self.ring.insert(at, trade);
        }
        Taped::Kept
    }

    /// `trade` is not (or no longer) kept.
    fn lost(&mut self, trade: Trade) {
        self.dropped = self.dropped.max(trade.seq);
        self.dropped_ts = self.dropped_ts.max(trade.ts);
    }

    /// Whether every trade taken with an exchange timestamp at or after
    /// `ts` is kept.
    pub(crate) fn holds_from(&self, ts: u64) -> bool {
        self.dropped == 0 || self.dropped_ts < ts
    }

    /// The kept trades, oldest first.
    pub(crate) fn trades(&self) -> &VecDeque<Trade> {
        &self.ring
    }

    /// The highest sequence of a trade not kept (0: none).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes this tape holds on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Trade>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: u64) -> Trade {
        Trade {
            seq,
            ts: seq * 10,
            price: Price(seq as i64),
            size: 1,
        }
    }

    #[test]
    fn keeps_the_newest_in_sequence_order_whatever_the_arrival_order() {
        let mut tape = Tape::new(4);
        for s in [10, 12, 11, 14] {
            assert_eq!(tape.insert(t(s)), Taped::Kept, "{s}");
        }
        assert_eq!(tape.insert(t(3)), Taped::Older, "older than a full tape");
        assert_eq!(tape.insert(t(13)), Taped::Kept, "in the middle");
        let seqs: Vec<u64> = tape.trades().iter().map(|x| x.seq).collect();
        assert_eq!(seqs, [11, 12, 13, 14]);
        assert_eq!(tape.insert(t(12)), Taped::Repeat);
        assert_eq!(tape.insert(t(14)), Taped::Repeat);
        assert_eq!(tape.insert(t(2)), Taped::Older);
        assert_eq!(tape.trades().len(), 4);
        assert_eq!(
            tape.dropped(),
            10,
            "10 was dropped to make room; 3 and 2 never kept"
        );
        tape.insert(t(15));
        assert_eq!(tape.dropped(), 11);
    }
}
