//! OHLCV bars of one interval for one symbol: a ring of the newest buckets
//! that had a trade, sorted by start time.
//!
//! A trade falls in the bucket `ts - ts % interval` of its exchange
//! timestamp. Open and close are the prices of the bucket's trades with the
//! lowest and the highest feed sequence, high, low, volume and count are
//! sums and extremes: so a bar is the same whatever order its trades were
//! applied in (replayed history comes after live trades), and the ring holds
//! the newest `cap` buckets of everything applied, whatever the order.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::price::Price;

/// A bar as clients get it (docs/PROTOCOL.md, "Bars").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bar {
    /// Start of the bucket, ns since the Unix epoch.
    pub t: u64,
    /// Open: the price of the bucket's first trade (lowest feed sequence).
    pub o: Price,
    /// High.
    pub h: Price,
    /// Low.
    pub l: Price,
    /// Close: the price of the bucket's last trade (highest feed sequence).
    pub c: Price,
    /// Shares traded.
    pub v: u64,
    /// Trades.
    pub n: u32,
    /// Feed time (the newest exchange timestamp applied) has passed the
    /// bucket's end: no trade in time order can change it.
    pub closed: bool,
}

/// A bar as kept: [`Bar`] without `closed` (a matter of feed time, decided
/// when read), with the sequences that decide its open and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kept {
    pub(crate) t: u64,
    pub(crate) o: Price,
    pub(crate) h: Price,
    pub(crate) l: Price,
    pub(crate) c: Price,
    pub(crate) v: u64,
    pub(crate) n: u32,
    o_seq: u64,
    c_seq: u64,
}

impl Kept {
    pub(super) fn new(t: u64, seq: u64, price: Price, size: u32) -> Kept {
        Kept {
            t,
            o: price,
            h: price,
            l: price,
            c: price,
            v: u64::from(size),
            n: 1,
            o_seq: seq,
            c_seq: seq,
        }
    }

    pub(super) fn add(&mut self, seq: u64, price: Price, size: u32) {
        if seq < self.o_seq {
            self.o_seq = seq;
            self.o = price;
        }
        if seq > self.c_seq {
            self.c_seq = seq;
            self.c = price;
        }
        self.h = self.h.max(price);
        self.l = self.l.min(price);
        self.v = self.v.saturating_add(u64::from(size));
        self.n = self.n.saturating_add(1);
    }

    /// Folds `later` (a later bucket's bar, or a later part of this one)
    /// into this coarser bar.
    pub(crate) fn merge(&mut self, later: &Kept) {
        if later.o_seq < self.o_seq {
            self.o_seq = later.o_seq;
            self.o = later.o;
        }
        if later.c_seq > self.c_seq {
            self.c_seq = later.c_seq;
            self.c = later.c;
        }
        self.h = self.h.max(later.h);
        self.l = self.l.min(later.l);
        self.v = self.v.saturating_add(later.v);
        self.n = self.n.saturating_add(later.n);
    }

    /// The client's shape, `closed` once feed time reaches `t + interval`.
    pub(crate) fn bar(&self, interval: u64, feed_time: u64) -> Bar {
        Bar {
            t: self.t,
            o: self.o,
            h: self.h,
            l: self.l,
            c: self.c,
            v: self.v,
            n: self.n,
            closed: feed_time >= self.t.saturating_add(interval),
        }
    }

    /// The same bar started at `t` (a coarser bucket's start).
    pub(crate) fn at(mut self, t: u64) -> Kept {
        self.t = t;
        self
    }
}

/// The newest `cap` bars of one interval.
#[derive(Debug)]
pub(crate) struct BarRing {
    ring: VecDeque<Kept>,
    cap: usize,
    interval: u64,
    /// Start of the newest bar evicted (0: none yet). Every kept bar starts
    /// after it; a coarser bucket that holds it is missing a part.
    floor: u64,
}

impl BarRing {
    pub(crate) fn new(interval: u64, cap: usize) -> BarRing {
        BarRing {
            ring: VecDeque::new(),
            cap,
            interval,
            floor: 0,
        }
    }

    /// Adds a trade to its bucket's bar, making the bar if it is new.
    pub(crate) fn add(&mut self, seq: u64, ts: u64, price: Price, size: u32) {
        if self.cap == 0 {
            return;
        }
        let t = ts - ts % self.interval;
        match self.ring.back_mut() {
            Some(last) if last.t == t => return last.add(seq, price, size),
            Some(last) if last.t > t => {}
            _ => {
                // The usual case: a trade in a new, later bucket.
                self.make_room();
                self.ring.push_back(Kept::new(t, seq, price, size));
                return;
            }
        }
        // A trade older than the newest bar: replayed history, or an
        // exchange timestamp behind an earlier trade's.
        match self.ring.binary_search_by_key(&t, |b| b.t) {
            Ok(i) => self.ring[i].add(seq, price, size),
            // Older than every bar a full ring keeps: not among the newest.
            Err(0) if self.ring.len() >= self.cap => {}
            Err(i) => {
                let evicted = self.make_room();
                self.ring
                    .insert(i - evicted, Kept::new(t, seq, price, size));
            }
        }
    }

    /// Room for one more bar: the oldest evicted when the ring is full
    /// (returns how many were, 0 or 1), the ring grown when it is not.
    fn make_room(&mut self) -> usize {
        if self.ring.len() < self.cap {
            super::room(&mut self.ring, self.cap);
            return 0;
        }
        match self.ring.pop_front() {
            Some(old) => {
                self.floor = self.floor.max(old.t);
                1
            }
            None => 0,
        }
    }

    /// Start of the newest bar evicted (0: none).
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// The kept bars, oldest first.
    pub(crate) fn bars(&self) -> &VecDeque<Kept> {
        &self.ring
    }

    /// Bytes this ring holds on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Kept>()
    }
}

/// Builds bars of `interval` (a multiple of the 1-minute bars' interval)
/// from 1-minute bars, oldest first, leaving out a bucket that starts at or
/// before `floor` (the ring no longer holds all of it).
pub(crate) fn coarse(minutes: &[Kept], interval: u64, floor: u64) -> Vec<Kept> {
    let mut out: Vec<Kept> = Vec::new();
    for m in minutes {
        let t = m.t - m.t % interval;
        if floor > 0 && t <= floor {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.t == t => last.merge(m),
            _ => out.push(m.at(t)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: i64) -> Price {
        Price(x)
    }

    /// Every order of the same trades gives the same bars.
    #[test]
    fn bars_do_not_depend_on_the_order_trades_arrive_in() {
        let trades: Vec<(u64, u64, i64, u32)> = (1..=40u64)
            .map(|s| (s, 1_000 + s * 7 % 50, 100 + (s as i64 * 13) % 17, s as u32))
            .collect();
        let build = |order: &[(u64, u64, i64, u32)]| {
            let mut r = BarRing::new(10, 3);
            for &(seq, ts, price, size) in order {
                r.add(seq, ts, p(price), size);
            }
            (r.bars().iter().copied().collect::<Vec<_>>(), r.floor())
        };
        let forward = build(&trades);
        let mut backward = trades.clone();
        backward.reverse();
        let mut shuffled = trades.clone();
        shuffled.sort_by_key(|t| (t.0 * 31) % 41);
        assert_eq!(build(&backward), forward);
        assert_eq!(build(&shuffled), forward);
        assert_eq!(forward.0.len(), 3, "the newest three buckets");
        assert_eq!(forward.0[2].t, 1_040);
    }

    #[test]
    fn open_and_close_follow_the_feed_sequence() {
        let mut r = BarRing::new(10, 5);
        r.add(5, 101, p(50), 1);
        r.add(3, 109, p(30), 2);
        r.add(9, 102, p(90), 3);
        let b = r.bars()[0];
        assert_eq!(
            (b.o, b.c, b.h, b.l, b.v, b.n),
            (p(30), p(90), p(90), p(30), 6, 3)
        );
        assert!(!b.bar(10, 109).closed);
        assert!(b.bar(10, 110).closed);
    }

    #[test]
    fn coarse_bars_leave_out_a_bucket_the_ring_holds_only_part_of() {
        let mut r = BarRing::new(60, 4);
        for (seq, minute) in [(1, 0), (2, 1), (3, 4), (4, 5), (5, 6), (6, 7)] {
            r.add(seq, minute * 60 + 1, p(seq as i64), 1);
        }
        // Kept: minutes 4..=7; minute 1 was evicted, so 0..5 is partial.
        assert_eq!(r.floor(), 60);
        let bars: Vec<Kept> = r.bars().iter().copied().collect();
        let five = coarse(&bars, 300, r.floor());
        assert_eq!(five.len(), 1);
        assert_eq!(
            (five[0].t, five[0].o, five[0].c, five[0].n),
            (300, p(4), p(6), 3)
        );
    }
}
