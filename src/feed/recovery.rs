//! Rebuilding state the relay lacks: at a late join, on a new session, after
//! a loss that gap repair could not fill.
//!
//! Three pure pieces, driven by the ingest loop (no sockets, no clock of
//! their own, so each is unit-tested directly):
//!
//! - [`LoopTracker`] follows the recovery line's snapshot loop and says when
//!   one whole cycle has been seen, without a gap, since recovery began;
//! - [`Backfill`] asks the producer's retransmission server for a range of
//!   history in bounded, paced requests, re-asks after a timeout, and hands
//!   back the messages in sequence order (what never comes is counted lost);
//! - [`Suspects`] remembers which symbols may lack changes the relay missed,
//!   and clears a symbol once its whole state is known again.
//!
//! The table merges every half newest-wins (see `table`), so recovered state,
//! retransmitted history and the live feed may interleave in any order.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::table::LOCATES;
use crate::wire::{Locate, Packet};

/// Follows the recovery loop: one full cycle seen since [`LoopTracker::restart`].
///
/// The loop numbers its packets with its own sequence. The first message seen
/// after a restart is the anchor; the cycle is whole when the anchor's
/// message (same type, same locate) comes round again with no loop message
/// missed in between. A gap on the loop starts the count again.
#[derive(Debug, Default)]
pub struct LoopTracker {
    next: Option<u64>,
    anchor: Option<(u8, Locate)>,
    seen: u64,
}

impl LoopTracker {
    /// Forgets the cycle in progress: the next message is the new anchor.
    pub fn restart(&mut self) {
        self.anchor = None;
        self.seen = 0;
    }

    /// Takes the loop packet's header; returns the index of the first message
    /// in it that is new (earlier ones are repeats of what was seen).
    pub fn packet(&mut self, seq: u64, count: u16) -> usize {
        let end = seq + u64::from(count);
        match self.next {
            Some(n) if seq > n => {
                // Loop messages were missed: whatever they carried is not seen.
                self.anchor = None;
                self.seen = 0;
                self.next = Some(end);
                0
            }
            Some(n) if end <= n => usize::from(count),
            Some(n) => {
                self.next = Some(end);
                (n - seq) as usize
            }
            None => {
                self.next = Some(end);
                0
            }
        }
    }

    /// Takes one new loop message (its type code and locate); true when it
    /// closes a whole cycle.
    pub fn message(&mut self, kind: u8, locate: Locate) -> bool {
        match self.anchor {
            None => {
                self.anchor = Some((kind, locate));
                self.seen = 1;
                false
            }
            Some(a) if a == (kind, locate) => {
                // The cycle is closed; the next one is anchored here.
                self.seen = 1;
                true
            }
            Some(_) => {
                self.seen += 1;
                false
            }
        }
    }

    /// Loop messages seen in the cycle under way.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// Backfill settings.
#[derive(Clone, Copy, Debug)]
pub struct BackfillConfig {
    /// Most messages one request asks for.
    pub chunk: u64,
    /// Most requests outstanding at once.
    pub in_flight: usize,
    /// An unanswered request is asked again after this long.
    pub timeout: Duration,
    /// Tries per request before its messages are given up.
    pub tries: u32,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            chunk: 2_000,
            in_flight: 4,
            timeout: Duration::from_millis(250),
            tries: 4,
        }
    }
}

#[derive(Debug)]
struct Asked {
    seq: u64,
    count: u64,
    sent: Instant,
    tries: u32,
}

/// What a [`Backfill`] did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackfillStats {
    /// Requests sent (repeats included).
    pub requests: u64,
    /// Messages handed back.
    pub messages: u64,
    /// Messages given up on: the server never sent them.
    pub lost: u64,
}

/// Fills ranges of history from the retransmission server, in order.
#[derive(Debug)]
pub struct Backfill {
    config: BackfillConfig,
    /// Ranges `[from, to)` still to fill, oldest first; the front is under way.
    ranges: VecDeque<(u64, u64)>,
    /// First sequence of the front range not yet handed back or given up.
    next: u64,
    /// Requests cover `[next, asked_to)`.
    asked_to: u64,
    asked: VecDeque<Asked>,
    /// Packets that arrived ahead of `next`, by first sequence.
    held: BTreeMap<u64, Vec<u8>>,
    stats: BackfillStats,
}

impl Backfill {
    /// An idle backfill.
    pub fn new(config: BackfillConfig) -> Self {
        Backfill {
            config,
            ranges: VecDeque::new(),
            next: 0,
            asked_to: 0,
            asked: VecDeque::new(),
            held: BTreeMap::new(),
            stats: BackfillStats::default(),
        }
    }

    /// Forgets everything under way (a new session).
    pub fn clear(&mut self) {
        self.ranges.clear();
        self.asked.clear();
        self.held.clear();
        self.next = 0;
        self.asked_to = 0;
    }

    /// Whether nothing is left to fill.
    pub fn idle(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Counts so far.
    pub fn stats(&self) -> BackfillStats {
        self.stats
    }

    /// Adds `[from, to)` to fill after what is already queued.
    pub fn add(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        if self.ranges.is_empty() {
            self.next = from;
            self.asked_to = from;
        }
        match self.ranges.back_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => self.ranges.push_back((from, to)),
        }
    }

    /// Whether a retransmitted packet carries anything this backfill wants.
    pub fn wants(&self, packet: &Packet<'_>) -> bool {
        let (seq, end) = (packet.seq, packet.end_seq());
        self.ranges
            .iter()
            .any(|&(from, to)| seq < to && end > from.max(self.next))
    }

    /// Sends what is due: new requests up to the in-flight bound, repeats of
    /// requests unanswered for the timeout. Gives up a request's messages
    /// after its last try. `ask(seq, count)` sends one request.
    pub fn poll(
        &mut self,
        now: Instant,
        ask: &mut impl FnMut(u64, u64),
        out: &mut impl FnMut(u64, &[u8]),
    ) {
        // Requests wholly behind `next` were answered (or given up).
        while self
            .asked
            .front()
            .is_some_and(|a| a.seq + a.count <= self.next)
        {
            self.asked.pop_front();
        }
        let mut i = 0;
        while i < self.asked.len() {
            let a = &mut self.asked[i];
            if now.saturating_duration_since(a.sent) < self.config.timeout {
                i += 1;
                continue;
            }
            if a.tries < self.config.tries {
                a.tries += 1;
                a.sent = now;
                // Ask only for what is still missing of it.
                let from = a.seq.max(self.next);
                ask(from, a.seq + a.count - from);
                self.stats.requests += 1;
                i += 1;
            } else if a.seq <= self.next {
                // The front request is spent: what it covered never came.
                let end = a.seq + a.count;
                let until = self.held.keys().next().map_or(end, |&h| h.min(end));
                if until > self.next {
                    self.stats.lost += until - self.next;
                    self.next = until;
                }
                self.asked.remove(i);
                self.drain(out);
                i = 0;
            } else {
                // A later request is spent; it is given up when it reaches
                // the front, so the order of loss stays the order of history.
                i += 1;
            }
        }
        while let Some(&(_, to)) = self.ranges.front() {
            if self.asked.len() >= self.config.in_flight || self.asked_to >= to {
                break;
            }
            let from = self.asked_to.max(self.next);
            let count = self.config.chunk.min(to - from);
            ask(from, count);
            self.stats.requests += 1;
            self.asked.push_back(Asked {
                seq: from,
                count,
                sent: now,
                tries: 1,
            });
            self.asked_to = from + count;
        }
    }

    /// Takes a retransmitted packet (`raw` is its datagram); hands back, in
    /// sequence order, every message that has become contiguous.
    pub fn packet(&mut self, packet: &Packet<'_>, raw: &[u8], out: &mut impl FnMut(u64, &[u8])) {
        let Some(&(_, to)) = self.ranges.front() else {
            return;
        };
        if packet.end_seq() <= self.next {
            return;
        }
        if packet.seq > self.next {
            if packet.seq < to {
                self.held.entry(packet.seq).or_insert_with(|| raw.to_vec());
            }
            return;
        }
        self.take(packet, out);
        self.drain(out);
    }

    fn take(&mut self, packet: &Packet<'_>, out: &mut impl FnMut(u64, &[u8])) {
        let Some(&(_, to)) = self.ranges.front() else {
            return;
        };
        for (i, payload) in packet.messages().enumerate() {
            let seq = packet.seq + i as u64;
            if seq < self.next {
                continue;
            }
            if seq >= to {
                break;
            }
            out(seq, payload);
            self.stats.messages += 1;
            self.next = seq + 1;
        }
    }

    /// Applies held packets that became contiguous; moves to the next range
    /// when the front one is done.
    fn drain(&mut self, out: &mut impl FnMut(u64, &[u8])) {
        loop {
            let Some(&(_, to)) = self.ranges.front() else {
                self.held.clear();
                return;
            };
            if self.next >= to {
                self.ranges.pop_front();
                self.held.retain(|&k, _| k >= to);
                match self.ranges.front() {
                    Some(&(from, _)) => {
                        self.next = self.next.max(from);
                        self.asked_to = self.asked_to.max(self.next);
                        self.asked.retain(|a| a.seq + a.count > from);
                    }
                    None => {
                        self.asked.clear();
                        self.held.clear();
                        return;
                    }
                }
                continue;
            }
            let Some(entry) = self.held.first_entry() else {
                return;
            };
            if *entry.key() > self.next {
                return;
            }
            let raw = entry.remove();
            // Held packets were parsed once already.
            if let Ok(p) = Packet::parse(&raw) {
                self.take(&p, out);
            }
        }
    }
}

/// Symbols whose state may lack changes the relay missed.
///
/// A symbol leaves the set when its whole state is known again: a recovery
/// state message for it, or a fresh quote and a fresh trade from the feed.
#[derive(Debug)]
pub struct Suspects {
    suspect: Box<[u64]>,
    fresh_quote: Box<[u64]>,
    fresh_trade: Box<[u64]>,
    count: usize,
}

impl Default for Suspects {
    fn default() -> Self {
        Suspects {
            suspect: vec![0; LOCATES / 64].into_boxed_slice(),
            fresh_quote: vec![0; LOCATES / 64].into_boxed_slice(),
            fresh_trade: vec![0; LOCATES / 64].into_boxed_slice(),
            count: 0,
        }
    }
}

fn bit(locate: Locate) -> (usize, u64) {
    (usize::from(locate) / 64, 1 << (locate % 64))
}

impl Suspects {
    /// How many symbols are suspect.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether `locate` is suspect.
    pub fn contains(&self, locate: Locate) -> bool {
        let (w, b) = bit(locate);
        self.suspect[w] & b != 0
    }

    /// Marks `locate` suspect (its halves must be seen afresh).
    pub fn mark(&mut self, locate: Locate) {
        let (w, b) = bit(locate);
        if self.suspect[w] & b == 0 {
            self.suspect[w] |= b;
            self.count += 1;
        }
        self.fresh_quote[w] &= !b;
        self.fresh_trade[w] &= !b;
    }

    /// `locate`'s whole state is known again.
    pub fn clear(&mut self, locate: Locate) {
        let (w, b) = bit(locate);
        if self.suspect[w] & b != 0 {
            self.suspect[w] &= !b;
            self.count -= 1;
        }
    }

    /// Every symbol is known again.
    pub fn clear_all(&mut self) {
        if self.count > 0 {
            self.suspect.iter_mut().for_each(|w| *w = 0);
            self.count = 0;
        }
    }

    /// A fresh quote (`trade` false) or trade for `locate` was applied;
    /// clears it once both halves are fresh. True if it was cleared.
    pub fn refreshed(&mut self, locate: Locate, trade: bool) -> bool {
        let (w, b) = bit(locate);
        if self.suspect[w] & b == 0 {
            return false;
        }
        if trade {
            self.fresh_trade[w] |= b;
        } else {
            self.fresh_quote[w] |= b;
        }
        if self.fresh_quote[w] & self.fresh_trade[w] & b != 0 {
            self.clear(locate);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, PacketBuilder, Session};

    #[test]
    fn a_cycle_is_whole_when_the_anchor_comes_round_again() {
        let mut t = LoopTracker::default();
        // Cycle of 3 messages: D0 S0 S1, loop seqs from 1.
        let cycle = [(b'D', 0), (b'S', 0), (b'S', 1)];
        assert_eq!(t.packet(2, 2), 0);
        assert!(!t.message(cycle[1].0, cycle[1].1));
        assert!(!t.message(cycle[2].0, cycle[2].1));
        assert_eq!(t.packet(4, 1), 0);
        assert!(!t.message(cycle[0].0, cycle[0].1));
        assert_eq!(t.packet(5, 1), 0);
        assert!(t.message(cycle[1].0, cycle[1].1), "S0 again: whole");
    }

    #[test]
    fn a_gap_on_the_loop_starts_the_cycle_again() {
        let mut t = LoopTracker::default();
        t.packet(1, 1);
        t.message(b'D', 0);
        t.packet(2, 1);
        t.message(b'S', 0);
        // Seq 3 (S1) is lost.
        assert_eq!(t.packet(4, 1), 0);
        assert!(!t.message(b'D', 0), "re-anchored here, not closed");
        t.packet(5, 1);
        assert!(!t.message(b'S', 0));
        t.packet(6, 1);
        assert!(!t.message(b'S', 1));
        t.packet(7, 1);
        assert!(t.message(b'D', 0));
        // A repeat of a packet already seen is skipped.
        assert_eq!(t.packet(7, 1), 1);
        assert_eq!(t.packet(6, 3), 2);
    }

    fn history(n: u64) -> Vec<Vec<u8>> {
        let mut b = PacketBuilder::new(Session::new("BF"), 1).with_max_messages(5);
        let mut out = Vec::new();
        for i in 0..n {
            let m = Message::Trade {
                locate: 1,
                ts: i,
                price: crate::price::Price(i as i64),
                size: 1,
                volume: i,
            };
            b.push(&m, &mut |p| out.push(p.to_vec()));
        }
        b.flush(&mut |p| out.push(p.to_vec()));
        out
    }

    /// Answers requests from `hist` like the producer's server: every
    /// packet that overlaps the range, unless `drop(seq)` says it is lost.
    fn serve(hist: &[Vec<u8>], seq: u64, count: u64, drop: impl Fn(u64) -> bool) -> Vec<Vec<u8>> {
        hist.iter()
            .filter(|p| {
                let p = Packet::parse(p).unwrap();
                p.seq < seq + count && p.end_seq() > seq && !drop(p.seq)
            })
            .cloned()
            .collect()
    }

    #[test]
    fn backfill_asks_in_bounded_chunks_and_hands_back_in_order() {
        let hist = history(100);
        let mut bf = Backfill::new(BackfillConfig {
            chunk: 10,
            in_flight: 3,
            ..Default::default()
        });
        bf.add(1, 61);
        let now = Instant::now();
        let mut got = Vec::new();
        let mut steps = 0;
        while !bf.idle() && steps < 100 {
            steps += 1;
            let mut asks = Vec::new();
            bf.poll(now, &mut |s, c| asks.push((s, c)), &mut |s, _| got.push(s));
            assert!(asks.len() <= 3, "at most 3 in flight: {asks:?}");
            assert!(asks.iter().all(|&(_, c)| c <= 10));
            // Answer the newest request first: out of order on purpose.
            for &(s, c) in asks.iter().rev() {
                for p in serve(&hist, s, c, |_| false) {
                    let pk = Packet::parse(&p).unwrap();
                    if bf.wants(&pk) {
                        bf.packet(&pk, &p, &mut |s, _| got.push(s));
                    }
                }
            }
        }
        assert_eq!(got, (1..61).collect::<Vec<_>>());
        assert_eq!(bf.stats().lost, 0);
    }

    #[test]
    fn backfill_asks_again_then_gives_up_what_never_comes() {
        let hist = history(40);
        let cfg = BackfillConfig {
            chunk: 100,
            in_flight: 1,
            timeout: Duration::from_millis(10),
            tries: 3,
        };
        let mut bf = Backfill::new(cfg);
        bf.add(1, 41);
        let t0 = Instant::now();
        let mut got = Vec::new();
        let mut asks = Vec::new();
        // The packet at 11 (messages 11..=15) is never served; the first
        // request is not answered at all.
        bf.poll(t0, &mut |s, c| asks.push((s, c)), &mut |s, _| got.push(s));
        assert_eq!(asks, vec![(1, 40)]);
        for step in 1..=5u32 {
            let now = t0 + cfg.timeout * step;
            let mut again = Vec::new();
            bf.poll(now, &mut |s, c| again.push((s, c)), &mut |s, _| got.push(s));
            for &(s, c) in &again {
                for p in serve(&hist, s, c, |seq| seq == 11) {
                    let pk = Packet::parse(&p).unwrap();
                    bf.packet(&pk, &p, &mut |s, _| got.push(s));
                }
            }
            asks.extend(again);
        }
        assert!(bf.idle(), "given up after the last try");
        assert_eq!(asks.len(), 3, "three tries: {asks:?}");
        assert_eq!(asks[1], (1, 40));
        assert_eq!(
            asks[2],
            (11, 30),
            "the repeat asks only for what is missing"
        );
        let expected: Vec<u64> = (1..11).chain(16..41).collect();
        assert_eq!(got, expected);
        assert_eq!(bf.stats().lost, 5);
    }

    #[test]
    fn suspects_clear_on_both_fresh_halves() {
        let mut s = Suspects::default();
        s.mark(3);
        s.mark(3);
        s.mark(64);
        assert_eq!(s.count(), 2);
        assert!(!s.refreshed(3, false));
        assert!(!s.refreshed(3, false));
        assert!(s.refreshed(3, true));
        assert!(!s.contains(3));
        assert!(!s.refreshed(3, true), "not suspect any more");
        s.clear(64);
        assert_eq!(s.count(), 0);
        s.mark(5);
        s.clear_all();
        assert_eq!(s.count(), 0);
    }
}
