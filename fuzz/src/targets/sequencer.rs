//! The `sequencer` target.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::SmallRng;
use tickrelay::feed::sequencer::{Sequencer, SequencerConfig, Sink};
use tickrelay::price::Price;
use tickrelay::wire::{self, Message, Packet, PacketBuilder, Session};

use super::{error_index, sig};
use crate::engine::Target;

/// What the sequencer target's sink saw.
#[derive(Default)]
struct Check {
    session: Option<Session>,
    ended: bool,
    /// The last sequence applied in the current session.
    last: Option<u64>,
    first: u64,
    applied: u64,
    /// Well-formed packets seen per session, by `(seq, end)`.
    seen: HashMap<Session, Vec<(u64, u64)>>,
}

impl Sink for Check {
    fn message(&mut self, seq: u64, _payload: &[u8]) {
        assert!(self.session.is_some(), "a message before any session");
        assert!(seq >= self.first, "a message before the session's first");
        if let Some(last) = self.last {
            assert!(
                seq > last,
                "sequence {seq} applied after {last}: twice or out of order"
            );
        }
        self.last = Some(seq);
        self.applied += 1;
    }

    fn new_session(&mut self, session: Session, first_seq: u64) {
        assert!(session.is_valid(), "a session from a bad id");
        if let Some(old) = self.session {
            assert_ne!(old, session, "the same session started twice");
            if !self.ended {
                // Leaving a live session needs two distinct packets of the new one.
                let mut seen = self.seen.get(&session).cloned().unwrap_or_default();
                seen.sort_unstable();
                seen.dedup();
                assert!(
                    seen.len() >= 2,
                    "left live session {old} for {session} on one packet"
                );
            }
        }
        self.session = Some(session);
        self.ended = false;
        self.last = None;
        self.first = first_seq;
    }

    fn end_of_session(&mut self, session: Session) {
        assert_eq!(Some(session), self.session);
        self.ended = true;
    }
}

/// `sequencer`: the [`Sequencer`] fed an arbitrary script of datagrams —
/// well-formed packets of a few sessions at nearby sequences, heartbeats,
/// ends of session, raw bytes — and clock steps, as the ingest loop feeds it
/// (a datagram reaches it only when [`Packet::parse`] accepts it).
///
/// Invariants: never a panic; within a session every sequence is applied at
/// most once and in increasing order, none below the session's first; a
/// live session is left only for a session with two distinct well-formed
/// packets; a datagram that fails to parse changes nothing.
pub struct SequencerTarget;

impl SequencerTarget {
    const SESSIONS: [&'static str; 3] = ["S1", "S2", "S3"];
}

impl Target for SequencerTarget {
    fn name(&self) -> &'static str {
        "sequencer"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        // A plausible script: mostly one session in order, with faults.
        let n = rng.gen_range(4..80);
        let mut out = Vec::with_capacity(n * 4);
        let mut seq: u8 = 1;
        for _ in 0..n {
            let op = match rng.gen_range(0..10) {
                0..=5 => 0,
                6 => 4,
                7 => 7,
                8 => 6,
                _ => rng.gen_range(0..8),
            };
            out.push(op);
            out.push(if rng.gen_ratio(1, 8) {
                rng.gen_range(0..4)
            } else {
                0
            });
            let s = if rng.gen_ratio(1, 6) {
                seq.wrapping_sub(rng.gen_range(0..4))
            } else {
                seq
            };
            out.push(s);
            let count = rng.gen_range(1..4);
            out.push(count);
            if op == 0 {
                seq = seq.wrapping_add(count);
            }
            if op == 6 {
                let junk = rng.gen_range(0..24);
                out.push(junk);
                out.extend((0..junk).map(|_| rng.r#gen::<u8>()));
            }
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        let mut s = Sequencer::new(SequencerConfig {
            gap_hold: Duration::from_millis(100),
            max_held_packets: 16,
        });
        let mut check = Check::default();
        let t0 = Instant::now();
        let mut now = t0;
        let mut it = input.iter().copied();
        let mut trace = 0u64;
        while let Some(op) = it.next() {
            let who = it.next().unwrap_or(0);
            let seq = u64::from(it.next().unwrap_or(1));
            let count = u16::from(it.next().unwrap_or(1) % 5);
            let session = match who % 5 {
                3 => Session(*b"BAD\x00      "),
                4 => Session::new("S1"),
                i => Session::new(Self::SESSIONS[usize::from(i)]),
            };
            let datagram: Vec<u8> = match op % 8 {
                0..=3 => {
                    let mut b = PacketBuilder::new(session, seq).with_max_messages(count.max(1));
                    let mut out = Vec::new();
                    for k in 0..count.max(1) {
                        let m = Message::Trade {
                            locate: 1,
                            ts: seq + u64::from(k),
                            price: Price(1),
                            size: 1,
                            volume: seq,
                        };
                        b.push(&m, &mut |p| out.push(p.to_vec()));
                    }
                    b.flush(&mut |p| out.push(p.to_vec()));
                    out.swap_remove(0)
                }
                4 => wire::header(session, seq, 0).to_vec(),
                5 => wire::header(session, seq, 0xFFFF).to_vec(),
                6 => {
                    // Raw bytes after a header of the chosen session.
                    let n = usize::from(it.next().unwrap_or(0) % 32);
                    let mut d = wire::header(session, seq, count).to_vec();
                    d.extend(it.by_ref().take(n));
                    d
                }
                _ => {
                    let step = Duration::from_millis(u64::from(who) * 4 + seq % 8);
                    now += step;
                    if count == 4 {
                        s.stalled(step);
                    }
                    s.on_tick(now, &mut check);
                    trace = trace.rotate_left(3) ^ 7;
                    continue;
                }
            };
            let before = (s.session(), check.applied);
            match Packet::parse(&datagram) {
                Ok(p) => {
                    // Only packets whose messages decode are evidence.
                    if p.messages_decode() {
                        check
                            .seen
                            .entry(p.session)
                            .or_default()
                            .push((p.seq, p.end_seq()));
                    }
                    s.on_packet(&p, &datagram, now, &mut check);
                    trace = trace.rotate_left(3) ^ (p.kind as u64 + 1);
                }
                Err(e) => {
                    // What the ingest does with it: count it, nothing else.
                    assert_eq!(before, (s.session(), check.applied));
                    trace = trace.rotate_left(3) ^ (error_index(e) + 8);
                }
            }
            assert_eq!(s.session(), check.session, "sink and sequencer agree");
        }
        let st = s.stats();
        sig(&[
            trace & 0xffff,
            st.gaps_opened.min(4),
            st.lost_messages.min(4),
            st.sessions_confirmed.min(3),
            st.unconfirmed_session_packets.min(3),
            st.stale_session_packets.min(3),
            u64::from(s.in_gap()),
        ])
    }
}
