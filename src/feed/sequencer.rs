//! The sequencer: puts feed packets in order, exactly once. (Over 700 lines
//! because nearly half is its unit tests, one per rule below.)
//!
//! A pure state machine — packets and the time go in, messages in sequence
//! order come out through a [`Sink`]. No sockets and no clock of its own, so
//! every rule below is unit-tested directly:
//!
//! - message *i* of a packet has sequence `seq + i`;
//! - below the next expected sequence is a duplicate, skipped: a packet that
//!   overlaps applies only its newer tail (A/B arbitration: first arrival wins);
//! - above it opens a gap: later packets are held for a bounded time while the
//!   sink may ask for a retransmission; what is not repaired in time is lost
//!   and the sequencer moves on. The bound is per packet, from its arrival:
//!   holes one behind the other are given up together once the packets
//!   behind them have waited out the hold, not one hold time after another
//!   (that would let the relay fall further behind with every lost packet);
//! - a new session resets it, once it is believed: at once when there is no
//!   session yet or the current one has ended, else when two well-formed
//!   packets of the new session follow one another (one datagram cannot
//!   reset the relay); packets of a session already left are stale;
//! - the sequencer takes only packets that passed [`Packet::parse`]; a
//!   packet whose messages do not all decode never starts a session.
//!
//! One file on purpose: ordering, gap holds and session belief are one state
//! machine over the same fields (`next`, the held packets, the candidate
//! sessions); its code is about 440 lines, the rest is its tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::{Packet, PacketKind, Session};

/// Where the sequencer delivers its output.
pub trait Sink {
    /// The message with sequence `seq`, in order, exactly once.
    fn message(&mut self, seq: u64, payload: &[u8]);
    /// A new session begins; its first expected message is `first_seq`.
    fn new_session(&mut self, session: Session, first_seq: u64);
    /// The producer ended the session.
    fn end_of_session(&mut self, _session: Session) {}
    /// Messages `[seq, seq + count)` are missing: a chance to ask the
    /// producer's retransmission server for them.
    fn request_retransmit(&mut self, _session: Session, _seq: u64, _count: u64) {}
    /// Messages `[seq, seq + count)` were given up on: the table may now
    /// lack what they changed.
    fn lost(&mut self, _seq: u64, _count: u64) {}
    /// The datagram that just moved the feed on: a packet at least one of
    /// whose messages was applied (after its messages), or a heartbeat or
    /// end of session at the feed position with no gap open. What a bridge
    /// republishes: in order, gap-repaired, each packet unchanged.
    fn forward(&mut self, _raw: &[u8]) {}
}

/// Counts of what the sequencer skipped, held and lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequencerStats {
    /// Messages below the next expected sequence (mostly the other line's copy).
    pub duplicate_messages: u64,
    /// Gaps opened.
    pub gaps_opened: u64,
    /// Gaps closed by late or retransmitted packets before the hold expired.
    pub gaps_repaired: u64,
    /// Messages given up on.
    pub lost_messages: u64,
    /// Packets of a session already left.
    pub stale_session_packets: u64,
    /// Packets of a new session that was never believed: dropped after a
    /// while without a second packet in sequence, or whose messages did
    /// not all decode.
    pub unconfirmed_session_packets: u64,
    /// New sessions believed after a second packet in sequence.
    pub sessions_confirmed: u64,
}

/// Sequencer settings.
#[derive(Clone, Copy, Debug)]
pub struct SequencerConfig {
    /// How long to hold packets behind a gap before counting it lost.
    pub gap_hold: Duration,
    /// Most packets held at once; past this the gap is given up at once.
    pub max_held_packets: usize,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig {
            gap_hold: Duration::from_millis(100),
            max_held_packets: 16_384,
        }
    }
}

/// Most new sessions waited on at once; the least recently heard goes first.
const MAX_CANDIDATES: usize = 4;
/// Most packets kept per new session while it is not yet believed.
const MAX_CANDIDATE_PACKETS: usize = 32;
/// A new session not confirmed within this is forgotten.
const CANDIDATE_TTL: Duration = Duration::from_secs(5);

/// A session seen but not yet believed, with the packets it sent so far.
#[derive(Debug)]
struct Candidate {
    session: Session,
    /// `(seq, end_seq, raw)` of each packet kept, in arrival order.
    packets: Vec<(u64, u64, Vec<u8>)>,
    last_seen: Instant,
}

impl Candidate {
    /// Whether a packet covering `[seq, end)` follows or precedes a kept one
    /// directly (a copy of the same packet does not count).
    fn adjacent(&self, seq: u64, end: u64) -> bool {
        self.packets
            .iter()
            .any(|&(s, e, _)| (s, e) != (seq, end) && (seq == e || end == s))
    }
}

/// A packet waiting behind a gap.
#[derive(Debug)]
struct Held {
    raw: Vec<u8>,
    arrived: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct Sequencer {
    config: SequencerConfig,
    session: Option<Session>,
    /// Sessions left behind, newest last; packets of these are stale.
    retired: Vec<Session>,
    ended: bool,
    next: u64,
    /// Highest sequence known to exist + 1 (from packets and heartbeats).
    horizon: u64,
    held: BTreeMap<u64, Held>,
    /// When the open gap became known: its hold runs from here.
    gap_since: Option<Instant>,
    /// New sessions not yet believed.
    candidates: Vec<Candidate>,
    stats: SequencerStats,
}

impl Sequencer {
    /// A sequencer waiting for its first session.
    pub fn new(config: SequencerConfig) -> Self {
        Sequencer {
            config,
            session: None,
            retired: Vec::new(),
            ended: false,
            next: 0,
            horizon: 0,
            held: BTreeMap::new(),
            gap_since: None,
            candidates: Vec::new(),
            stats: SequencerStats::default(),
        }
    }

    /// New sessions seen but not yet believed.
    pub fn pending_sessions(&self) -> usize {
        self.candidates.len()
    }

    /// What was skipped, held and lost so far.
    pub fn stats(&self) -> SequencerStats {
        self.stats
    }

    /// The current session, once a packet has been seen.
    pub fn session(&self) -> Option<Session> {
        self.session
    }

    /// Whether the producer ended the current session.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next sequence to apply; everything below it was applied or lost.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Whether a gap is open (packets held or messages known to be missing).
    pub fn in_gap(&self) -> bool {
        self.gap_since.is_some()
    }

    /// Takes one parsed packet. `raw` is the datagram it was parsed from; it is
    /// copied only when the packet must be held behind a gap.
    pub fn on_packet(
        &mut self,
        packet: &Packet<'_>,
        raw: &[u8],
        now: Instant,
        sink: &mut impl Sink,
    ) {
        if self.session != Some(packet.session) {
            if self.retired.contains(&packet.session) {
                self.stats.stale_session_packets += 1;
                return;
            }
            if !packet.messages_decode() {
                // Garbage that happens to frame well: never a new session.
                self.stats.unconfirmed_session_packets += 1;
                return;
            }
            if self.session.is_some() && !self.ended {
                self.consider(packet, raw, now, sink);
                self.on_tick(now, sink);
                return;
            }
            self.start_session(packet.session, packet.seq, sink);
        }
        self.sequence(packet, raw, now, sink);
        self.on_tick(now, sink);
    }

    /// A packet of the current session.
    fn sequence(&mut self, packet: &Packet<'_>, raw: &[u8], now: Instant, sink: &mut impl Sink) {
        match packet.kind {
            PacketKind::Heartbeat => {
                self.see_horizon(packet.seq, now, sink);
                if packet.seq == self.next && !self.in_gap() {
                    sink.forward(raw);
                }
            }
            PacketKind::EndOfSession => {
                self.see_horizon(packet.seq, now, sink);
                if !self.ended {
                    self.ended = true;
                    sink.end_of_session(packet.session);
                    if packet.seq == self.next && !self.in_gap() {
                        sink.forward(raw);
                    }
                }
            }
            PacketKind::Data => {
                let end = packet.end_seq();
                if end <= self.next {
                    self.stats.duplicate_messages += u64::from(packet.count);
                } else if packet.seq <= self.next {
                    self.apply_tail(packet, sink);
                    sink.forward(raw);
                    self.horizon = self.horizon.max(end);
                    self.drain(sink);
                } else {
                    self.hold(packet, raw, now, sink);
                }
            }
        }
    }

    /// A well-formed packet of a session that is not (yet) the current one,
    /// while the current one is live: kept until a second packet of the same
    /// session follows or precedes it directly, then the session starts at
    /// the first of them and every kept packet is sequenced.
    fn consider(&mut self, packet: &Packet<'_>, raw: &[u8], now: Instant, sink: &mut impl Sink) {
        let (seq, end) = (packet.seq, packet.end_seq());
        let idx = match self
            .candidates
            .iter()
            .position(|c| c.session == packet.session)
        {
            Some(i) => i,
            None => {
                if self.candidates.len() >= MAX_CANDIDATES {
                    let oldest = (0..self.candidates.len())
                        .min_by_key(|&i| self.candidates[i].last_seen)
                        .unwrap_or(0);
                    let gone = self.candidates.swap_remove(oldest);
                    self.stats.unconfirmed_session_packets += gone.packets.len() as u64;
                }
                self.candidates.push(Candidate {
                    session: packet.session,
                    packets: Vec::new(),
                    last_seen: now,
                });
                self.candidates.len() - 1
            }
        };
        let cand = &mut self.candidates[idx];
        cand.last_seen = now;
        if !cand.adjacent(seq, end) {
            if cand.packets.len() >= MAX_CANDIDATE_PACKETS {
                cand.packets.remove(0);
                self.stats.unconfirmed_session_packets += 1;
            }
            cand.packets.push((seq, end, raw.to_vec()));
            return;
        }
        let mut cand = self.candidates.swap_remove(idx);
        cand.packets.push((seq, end, raw.to_vec()));
        cand.packets.sort_by_key(|&(s, _, _)| s);
        self.stats.sessions_confirmed += 1;
        self.start_session(cand.session, cand.packets[0].0, sink);
        for (_, _, raw) in &cand.packets {
            // Kept packets were parsed once already; parse cannot fail now.
            if let Ok(p) = Packet::parse(raw) {
                self.sequence(&p, raw, now, sink);
            }
        }
    }

    /// The caller was not running for `paused` (stopped, starved of CPU):
    /// packets could not be heard meanwhile, so every hold and wait is
    /// moved on by that much instead of expiring unheard.
    pub fn stalled(&mut self, paused: Duration) {
        if let Some(since) = &mut self.gap_since {
            *since += paused;
        }
        for held in self.held.values_mut() {
            held.arrived += paused;
        }
        for c in &mut self.candidates {
            c.last_seen += paused;
        }
    }

    /// Gives up a gap whose hold time has passed. Call it every few
    /// milliseconds while the feed is quiet.
    pub fn on_tick(&mut self, now: Instant, sink: &mut impl Sink) {
        let mut forgotten = 0;
        self.candidates.retain(|c| {
            let keep = now.saturating_duration_since(c.last_seen) < CANDIDATE_TTL;
            if !keep {
                forgotten += c.packets.len() as u64;
            }
            keep
        });
        self.stats.unconfirmed_session_packets += forgotten;
        // Each give-up moves past one hole (or closes the gap), so this ends.
        while let Some(since) = self.gap_since {
            if now.saturating_duration_since(since) >= self.config.gap_hold
                || self.held.len() > self.config.max_held_packets
            {
                self.give_up(now, sink);
            } else {
                break;
            }
        }
    }

    fn start_session(&mut self, session: Session, first_seq: u64, sink: &mut impl Sink) {
        if let Some(old) = self.session.take() {
            self.retired.push(old);
            // A few are enough to recognise late stragglers.
            if self.retired.len() > 8 {
                self.retired.remove(0);
            }
        }
        self.session = Some(session);
        self.ended = false;
        self.next = first_seq;
        self.horizon = first_seq;
        self.held.clear();
        self.gap_since = None;
        self.candidates.retain(|c| c.session != session);
        sink.new_session(session, first_seq);
    }

    fn see_horizon(&mut self, seq: u64, now: Instant, sink: &mut impl Sink) {
        if seq > self.horizon {
            self.horizon = seq;
        }
        if self.horizon > self.next && self.gap_since.is_none() {
            self.open_gap(now, sink);
        }
    }

    fn open_gap(&mut self, since: Instant, sink: &mut impl Sink) {
        self.gap_since = Some(since);
        self.stats.gaps_opened += 1;
        let until = self.held.keys().next().copied().unwrap_or(self.horizon);
        if let Some(session) = self.session {
            sink.request_retransmit(session, self.next, until.saturating_sub(self.next));
        }
    }

    fn hold(&mut self, packet: &Packet<'_>, raw: &[u8], now: Instant, sink: &mut impl Sink) {
        let end = packet.end_seq();
        // A hole between what was known and this packet is news: ask for it
        // now, even while an earlier gap is still open.
        let known = self.horizon.max(self.next);
        if self.gap_since.is_some()
            && packet.seq > known
            && let Some(session) = self.session
        {
            sink.request_retransmit(session, known, packet.seq - known);
        }
        self.horizon = self.horizon.max(end);
        match self.held.get_mut(&packet.seq) {
            Some(existing) if existing.raw.len() >= raw.len() => {
                self.stats.duplicate_messages += u64::from(packet.count);
            }
            // A longer packet at the same sequence carries more: keep it, but
            // its wait began with the first copy.
            Some(existing) => existing.raw = raw.to_vec(),
            None => {
                self.held.insert(
                    packet.seq,
                    Held {
                        raw: raw.to_vec(),
                        arrived: now,
                    },
                );
            }
        }
        if self.gap_since.is_none() {
            self.open_gap(now, sink);
        }
    }

    fn apply_tail(&mut self, packet: &Packet<'_>, sink: &mut impl Sink) {
        for (i, payload) in packet.messages().enumerate() {
            let seq = packet.seq + i as u64;
            if seq < self.next {
                self.stats.duplicate_messages += 1;
                continue;
            }
            sink.message(seq, payload);
            self.next = seq + 1;
        }
    }

    /// Applies held packets that have become contiguous.
    fn drain(&mut self, sink: &mut impl Sink) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let held = entry.remove();
            // Held packets were parsed once already; parse cannot fail now.
            if let Ok(packet) = Packet::parse(&held.raw) {
                if packet.end_seq() <= self.next {
                    self.stats.duplicate_messages += u64::from(packet.count);
                } else {
                    self.apply_tail(&packet, sink);
                    sink.forward(&held.raw);
                }
            }
        }
        if self.gap_since.is_some() && self.held.is_empty() && self.next >= self.horizon {
            self.gap_since = None;
            self.stats.gaps_repaired += 1;
        }
    }

    /// Counts the missing range as lost and moves on to the next held packet.
    fn give_up(&mut self, now: Instant, sink: &mut impl Sink) {
        let target = self.held.keys().next().copied().unwrap_or(self.horizon);
        if target > self.next {
            self.stats.lost_messages += target - self.next;
            sink.lost(self.next, target - self.next);
            self.next = target;
        }
        self.gap_since = None;
        self.drain(sink);
        if !self.held.is_empty() || self.horizon > self.next {
            // Another hole further on. It has been known since the first of
            // the packets behind it arrived; its hold runs from then.
            let since = self.held.values().map(|h| h.arrived).min().unwrap_or(now);
            self.open_gap(since, sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec {
        seqs: Vec<u64>,
        sessions: Vec<(String, u64)>,
        retransmits: Vec<(u64, u64)>,
        ended: usize,
        forwarded: Vec<Vec<u8>>,
    }

    impl Sink for Rec {
        fn message(&mut self, seq: u64, _payload: &[u8]) {
            self.seqs.push(seq);
        }
        fn new_session(&mut self, session: Session, first_seq: u64) {
            self.sessions.push((session.to_string(), first_seq));
        }
        fn end_of_session(&mut self, _session: Session) {
            self.ended += 1;
        }
        fn request_retransmit(&mut self, _s: Session, seq: u64, count: u64) {
            self.retransmits.push((seq, count));
        }
        fn forward(&mut self, raw: &[u8]) {
            self.forwarded.push(raw.to_vec());
        }
    }

    #[test]
    fn forwards_each_packet_that_moved_the_feed_in_order() {
        let p = packets("S", 12, 3); // 1, 4, 7, 10
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        feed(&mut s, &mut rec, &p[0], now);
        feed(&mut s, &mut rec, &p[0], now); // line B: a duplicate, not forwarded
        feed(&mut s, &mut rec, &p[2], now); // held behind a gap
        let ahead = crate::wire::header(Session::new("S"), 13, 0);
        feed(&mut s, &mut rec, &ahead, now); // a heartbeat past a gap: not forwarded
        feed(&mut s, &mut rec, &p[1], now); // repairs: 4.. then the held 7..
        feed(&mut s, &mut rec, &p[3], now);
        let hb = crate::wire::header(Session::new("S"), 13, 0);
        feed(&mut s, &mut rec, &hb, now); // at the position, no gap: forwarded
        assert_eq!(
            rec.forwarded,
            vec![
                p[0].clone(),
                p[1].clone(),
                p[2].clone(),
                p[3].clone(),
                hb.to_vec()
            ]
        );
    }

    /// Packets of `per` messages each, sequences from 1.
    fn packets(session: &str, n_msgs: u64, per: u16) -> Vec<Vec<u8>> {
        crate::wire::testing::trade_packets(session, n_msgs, per)
    }

    fn feed(s: &mut Sequencer, rec: &mut Rec, raw: &[u8], now: Instant) {
        let p = Packet::parse(raw).unwrap();
        s.on_packet(&p, raw, now, rec);
    }

    #[test]
    fn in_order_packets_apply_in_order() {
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        for p in packets("S", 10, 3) {
            feed(&mut s, &mut rec, &p, now);
        }
        assert_eq!(rec.seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(rec.sessions, vec![("S".to_string(), 1)]);
        assert_eq!(s.stats(), SequencerStats::default());
    }

    #[test]
    fn a_and_b_lines_apply_once() {
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        for p in packets("S", 12, 4) {
            feed(&mut s, &mut rec, &p, now); // line A
            feed(&mut s, &mut rec, &p, now); // line B, same packet
        }
        assert_eq!(rec.seqs, (1..=12).collect::<Vec<_>>());
        assert_eq!(s.stats().duplicate_messages, 12);
    }

    #[test]
    fn overlapping_packet_applies_only_its_tail() {
        let small = packets("S", 6, 3); // [1..3], [4..6]
        let big = packets("S", 6, 6); // [1..6]
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        feed(&mut s, &mut rec, &small[0], now);
        feed(&mut s, &mut rec, &big[0], now);
        assert_eq!(rec.seqs, (1..=6).collect::<Vec<_>>());
        assert_eq!(s.stats().duplicate_messages, 3);
    }

    #[test]
    fn reordered_packet_is_held_and_repaired() {
        let p = packets("S", 9, 3);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        feed(&mut s, &mut rec, &p[0], now);
        feed(&mut s, &mut rec, &p[2], now);
        assert_eq!(rec.seqs, vec![1, 2, 3]);
        assert!(s.in_gap());
        assert_eq!(rec.retransmits, vec![(4, 3)]);
        feed(&mut s, &mut rec, &p[1], now + Duration::from_millis(10));
        assert_eq!(rec.seqs, (1..=9).collect::<Vec<_>>());
        assert!(!s.in_gap());
        let st = s.stats();
        assert_eq!(
            (st.gaps_opened, st.gaps_repaired, st.lost_messages),
            (1, 1, 0)
        );
    }

    #[test]
    fn each_new_hole_is_asked_for_at_once() {
        let p = packets("S", 15, 3); // [1..3] [4..6] [7..9] [10..12] [13..15]
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        feed(&mut s, &mut rec, &p[0], now);
        feed(&mut s, &mut rec, &p[2], now); // 4..6 missing
        feed(&mut s, &mut rec, &p[4], now); // 10..12 missing too
        assert_eq!(rec.retransmits, vec![(4, 3), (10, 3)]);
        feed(&mut s, &mut rec, &p[1], now);
        feed(&mut s, &mut rec, &p[3], now);
        assert_eq!(rec.seqs, (1..=15).collect::<Vec<_>>());
        assert_eq!(s.stats().lost_messages, 0);
    }

    #[test]
    fn unrepaired_gap_is_lost_after_the_hold() {
        let p = packets("S", 9, 3);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let t0 = Instant::now();
        feed(&mut s, &mut rec, &p[0], t0);
        feed(&mut s, &mut rec, &p[2], t0);
        s.on_tick(t0 + Duration::from_millis(50), &mut rec);
        assert_eq!(
            rec.seqs,
            vec![1, 2, 3],
            "still holding within the hold time"
        );
        s.on_tick(t0 + Duration::from_millis(100), &mut rec);
        assert_eq!(rec.seqs, vec![1, 2, 3, 7, 8, 9]);
        let st = s.stats();
        assert_eq!(
            (st.gaps_opened, st.gaps_repaired, st.lost_messages),
            (1, 0, 3)
        );
        // The late packet is now a duplicate.
        feed(&mut s, &mut rec, &p[1], t0 + Duration::from_millis(200));
        assert_eq!(rec.seqs.len(), 6);
        assert_eq!(s.stats().duplicate_messages, 3);
    }

    #[test]
    fn heartbeat_reveals_a_gap_at_the_tail() {
        let p = packets("S", 6, 3);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let t0 = Instant::now();
        feed(&mut s, &mut rec, &p[0], t0);
        // The producer says seq 7 is next: 4..6 never arrived.
        let hb = crate::wire::header(Session::new("S"), 7, 0);
        feed(&mut s, &mut rec, &hb, t0);
        assert!(s.in_gap());
        s.on_tick(t0 + Duration::from_secs(1), &mut rec);
        assert_eq!(s.stats().lost_messages, 3);
        assert_eq!(s.next_seq(), 7);
        assert!(!s.in_gap());
    }

    #[test]
    fn holes_behind_each_other_are_given_up_together() {
        let p = packets("S", 7, 1);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let t0 = Instant::now();
        // Seqs 2, 4 and 6 never arrive.
        for i in [0, 2, 4, 6] {
            feed(&mut s, &mut rec, &p[i], t0);
        }
        assert_eq!(rec.seqs, vec![1]);
        s.on_tick(t0 + Duration::from_millis(100), &mut rec);
        assert_eq!(rec.seqs, vec![1, 3, 5, 7], "one hold time, not three");
        assert!(!s.in_gap());
        let st = s.stats();
        assert_eq!((st.gaps_opened, st.lost_messages), (3, 3));
    }

    #[test]
    fn a_later_hole_waits_its_own_hold_from_its_packets_arrival() {
        let p = packets("S", 5, 1);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let t0 = Instant::now();
        feed(&mut s, &mut rec, &p[0], t0);
        feed(&mut s, &mut rec, &p[2], t0); // seq 2 missing
        feed(&mut s, &mut rec, &p[4], t0 + Duration::from_millis(80)); // seq 4 missing
        s.on_tick(t0 + Duration::from_millis(100), &mut rec);
        assert_eq!(rec.seqs, vec![1, 3], "seq 5 has waited 20 ms only");
        assert!(s.in_gap());
        s.on_tick(t0 + Duration::from_millis(179), &mut rec);
        assert_eq!(rec.seqs, vec![1, 3]);
        s.on_tick(t0 + Duration::from_millis(180), &mut rec);
        assert_eq!(rec.seqs, vec![1, 3, 5]);
        assert_eq!(s.stats().lost_messages, 2);
    }

    #[test]
    fn too_many_held_packets_give_up_early() {
        let p = packets("S", 40, 1);
        let mut s = Sequencer::new(SequencerConfig {
            gap_hold: Duration::from_secs(60),
            max_held_packets: 4,
        });
        let mut rec = Rec::default();
        let t0 = Instant::now();
        feed(&mut s, &mut rec, &p[0], t0);
        for pkt in &p[2..8] {
            feed(&mut s, &mut rec, pkt, t0);
        }
        assert_eq!(s.stats().lost_messages, 1);
        assert_eq!(rec.seqs, vec![1, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn new_session_resets_and_old_one_is_stale() {
        let a = packets("OLD", 3, 3);
        let b = packets("NEW", 3, 3);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        feed(&mut s, &mut rec, &a[0], now);
        let eos = crate::wire::header(Session::new("OLD"), 4, 0xFFFF);
        feed(&mut s, &mut rec, &eos, now);
        assert_eq!(rec.ended, 1);
        feed(&mut s, &mut rec, &b[0], now);
        feed(&mut s, &mut rec, &a[0], now);
        assert_eq!(rec.seqs, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(rec.sessions.len(), 2);
        assert_eq!(s.stats().stale_session_packets, 1);
    }

    #[test]
    fn one_packet_of_a_new_session_does_not_reset_the_relay() {
        let live = packets("LIVE", 9, 3);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let t0 = Instant::now();
        feed(&mut s, &mut rec, &live[0], t0);
        // A stray heartbeat of another session, sequence 1.
        let stray = crate::wire::header(Session::new("STRAY"), 1, 0);
        feed(&mut s, &mut rec, &stray, t0);
        feed(&mut s, &mut rec, &live[1], t0);
        feed(&mut s, &mut rec, &live[2], t0);
        assert_eq!(rec.sessions, vec![("LIVE".to_string(), 1)]);
        assert_eq!(rec.seqs, (1..=9).collect::<Vec<_>>());
        assert_eq!(s.pending_sessions(), 1);
        s.on_tick(t0 + CANDIDATE_TTL, &mut rec);
        assert_eq!(s.pending_sessions(), 0);
        assert_eq!(s.stats().unconfirmed_session_packets, 1);
    }

    #[test]
    fn a_new_session_is_believed_on_its_second_packet_in_sequence() {
        let old = packets("OLD", 3, 3);
        let new = packets("NEW", 9, 3);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        feed(&mut s, &mut rec, &old[0], now);
        feed(&mut s, &mut rec, &new[0], now);
        // The same packet again (the other line) is no confirmation.
        feed(&mut s, &mut rec, &new[0], now);
        assert_eq!(rec.sessions.len(), 1);
        feed(&mut s, &mut rec, &new[1], now);
        assert_eq!(
            rec.sessions,
            vec![("OLD".to_string(), 1), ("NEW".to_string(), 1)]
        );
        feed(&mut s, &mut rec, &new[2], now);
        assert_eq!(rec.seqs, vec![1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s.stats().sessions_confirmed, 1);
        assert_eq!(s.stats().lost_messages, 0);
    }

    #[test]
    fn a_reordered_pair_confirms_too_and_applies_from_the_first() {
        let old = packets("OLD", 3, 3);
        let new = packets("NEW", 9, 3);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        feed(&mut s, &mut rec, &old[0], now);
        feed(&mut s, &mut rec, &new[1], now);
        feed(&mut s, &mut rec, &new[0], now);
        feed(&mut s, &mut rec, &new[2], now);
        assert_eq!(rec.sessions[1], ("NEW".to_string(), 1));
        assert_eq!(rec.seqs[3..], (1..=9).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn garbage_messages_never_start_a_session() {
        let mut junk = crate::wire::header(Session::new("JUNK"), 1, 1).to_vec();
        junk.extend_from_slice(&[0, 1, 0xc1]);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        let now = Instant::now();
        feed(&mut s, &mut rec, &junk, now);
        assert_eq!(s.session(), None);
        let live = packets("LIVE", 3, 3);
        feed(&mut s, &mut rec, &live[0], now);
        let mut junk2 = crate::wire::header(Session::new("JUNK"), 2, 1).to_vec();
        junk2.extend_from_slice(&[0, 1, 0xc1]);
        feed(&mut s, &mut rec, &junk, now);
        feed(&mut s, &mut rec, &junk2, now);
        assert_eq!(rec.sessions, vec![("LIVE".to_string(), 1)]);
        assert_eq!(s.stats().unconfirmed_session_packets, 3);
    }

    #[test]
    fn joining_mid_session_starts_at_the_first_packet_seen() {
        let p = packets("S", 9, 3);
        let mut s = Sequencer::new(SequencerConfig::default());
        let mut rec = Rec::default();
        feed(&mut s, &mut rec, &p[1], Instant::now());
        assert_eq!(rec.sessions, vec![("S".to_string(), 4)]);
        assert_eq!(rec.seqs, vec![4, 5, 6]);
    }

    proptest::proptest! {
        /// Any arrival order over two lines, with duplicates: every message
        /// that arrives before its hold expires is applied once, in order.
        #[test]
        fn any_order_applies_in_order_exactly_once(
            order in proptest::collection::vec(0usize..30, 0..120),
        ) {
            let p = packets("S", 90, 3); // 30 packets
            let mut s = Sequencer::new(SequencerConfig { gap_hold: Duration::from_secs(3600), max_held_packets: 1000 });
            let mut rec = Rec::default();
            let now = Instant::now();
            feed(&mut s, &mut rec, &p[0], now);
            for i in order {
                feed(&mut s, &mut rec, &p[i], now);
            }
            for pkt in &p {
                feed(&mut s, &mut rec, pkt, now);
            }
            proptest::prop_assert_eq!(rec.seqs, (1..=90).collect::<Vec<_>>());
            proptest::prop_assert_eq!(s.stats().lost_messages, 0);
        }
    }
}
