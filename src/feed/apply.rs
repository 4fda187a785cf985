//! The sequencer's sink on the ingest thread: applies messages to the
//! table and tells the listener, asks for retransmissions, forwards to the
//! bridge, and keeps the recovery state (what the table lacks and how it is
//! coming back). Pure of sockets except the retransmission request it sends.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::recovery::{self, Backfill, BackfillConfig, LoopTracker, Suspects};
use super::sequencer::Sink;
use crate::feed::status::DropReason;
use crate::metrics::{FeedMetrics, ReasonLabel};
use crate::nats::Forward;
use crate::table::{Applied, ChangeListener, Table};
use crate::wire::{Locate, Message, Packet, PacketKind, Session, decode_message};

/// The sequencer's sink: decodes messages into the table.
pub(super) struct Applier<L> {
    pub(super) table: Arc<Table>,
    pub(super) metrics: FeedMetrics,
    pub(super) listener: L,
    pub(super) last_ts: u64,
    pub(super) applied: u64,
    pub(super) session_changed: bool,
    pub(super) retransmit: Repair,
    pub(super) recovery: Recovery,
    /// The bridge's publisher.
    pub(super) forward: Option<Forward>,
}

/// Who is asked for missing messages: the producer's retransmission
/// server, the NATS stream, or both.
pub(super) struct Repair {
    pub(super) udp: Option<Arc<UdpSocket>>,
    pub(super) nats: Option<mpsc::Sender<crate::retransmit::Request>>,
}

impl Repair {
    pub(super) fn is_some(&self) -> bool {
        self.udp.is_some() || self.nats.is_some()
    }
}

/// Why the table lacks state, since when, and what it promised before.
#[derive(Debug)]
pub(super) struct Need {
    pub(super) since: Instant,
    /// Clients are promised no further than this while recovery can still
    /// bring back older changes (docs/PROTOCOL.md, "the seq promise").
    pub(super) promise: u64,
    pub(super) reason: &'static str,
    /// Backfill losses when this need began: more means history was missing.
    pub(super) backfill_lost: u64,
}

/// The ingest side of recovery: what is missing and how it is coming back.
pub(super) struct Recovery {
    /// A recovery line is configured: its loop completes every need.
    pub(super) has_loop: bool,
    pub(super) need: Option<Need>,
    pub(super) suspects: Suspects,
    pub(super) tracker: LoopTracker,
    pub(super) backfill: Backfill,
    /// Distinct symbols changed by recovered state during the current need
    /// (the set's bits; its own "fresh" bits go unused here), and the first
    /// few, for the log line.
    pub(super) recovered: Suspects,
    pub(super) recovered_first: Vec<Locate>,
    /// Messages of this session given up by gap repair.
    pub(super) session_lost: u64,
    pub(super) reported_backfill: recovery::BackfillStats,
    /// Live messages for symbols not yet listed, kept while a backfill may
    /// still bring their directory entries.
    pub(super) stash: Vec<(u64, Vec<u8>)>,
    /// Trades of this session that no replay will bring: the chart's
    /// history stays partial (`complete: false`) until the next session.
    pub(super) history_gap: bool,
}

/// Most live messages kept for symbols awaiting their directory entry.
pub(super) const MAX_STASH: usize = 1 << 20;

impl Recovery {
    pub(super) fn new(has_loop: bool) -> Self {
        Recovery {
            has_loop,
            need: None,
            suspects: Suspects::default(),
            tracker: LoopTracker::default(),
            backfill: Backfill::new(BackfillConfig::default()),
            recovered: Suspects::default(),
            recovered_first: Vec::new(),
            session_lost: 0,
            reported_backfill: Default::default(),
            stash: Vec::new(),
            history_gap: false,
        }
    }

    /// Messages for unlisted symbols are kept while the directory entries
    /// may still come (in the backfilled history, or later in the loop).
    pub(super) fn stashing(&self) -> bool {
        self.need.is_some()
            && (self.has_loop || !self.backfill.idle())
            && self.stash.len() < MAX_STASH
    }

    /// The sequence clients may be promised when the feed is at `applied`.
    pub(super) fn promise(&self, applied: u64) -> u64 {
        match &self.need {
            Some(n) if self.has_loop || !self.backfill.idle() => applied.min(n.promise),
            _ => applied,
        }
    }
}

impl<L: ChangeListener> Sink for Applier<L> {
    fn message(&mut self, seq: u64, payload: &[u8]) {
        match decode_message(payload) {
            Ok(msg) => match self.table.apply(seq, &msg) {
                Applied::Changed(locate) | Applied::BookChanged(locate) => {
                    self.applied += 1;
                    self.last_ts = msg.ts();
                    self.listener.changed(locate, seq);
                    if self.recovery.need.is_some() {
                        self.recovery.note_live(&self.table, &msg, locate);
                    }
                }
                Applied::Unchanged => self.applied += 1,
                Applied::UnknownLocate if self.recovery.stashing() => {
                    // Its directory entry is still coming back (history or
                    // loop): applied once recovery is done.
                    self.recovery.stash.push((seq, payload.to_vec()));
                }
                Applied::UnknownLocate => {
                    self.metrics
                        .dropped
                        .get_or_create(&ReasonLabel {
                            reason: DropReason::UnknownLocate.as_str(),
                        })
                        .inc();
                }
            },
            Err(e) => {
                self.metrics
                    .decode_errors
                    .get_or_create(&ReasonLabel { reason: e.reason() })
                    .inc();
            }
        }
        self.table.set_last_seq(self.recovery.promise(seq));
    }

    fn new_session(&mut self, session: Session, first_seq: u64) {
        tracing::info!(session = %session, first_seq, "feed session started");
        self.table.reset(session);
        self.listener.session_reset(session);
        self.session_changed = true;
        let r = &mut self.recovery;
        r.need = None;
        r.suspects.clear_all();
        r.backfill.clear();
        // The new session's loop numbers from 1 again.
        r.tracker = LoopTracker::default();
        r.recovered.clear_all();
        r.recovered_first.clear();
        r.stash.clear();
        r.session_lost = 0;
        r.history_gap = false;
        self.table.chart().set_complete(true);
        // Sessions start at sequence 1: a first packet past it means the
        // relay joined mid-session and lacks what came before.
        if first_seq > 1 {
            self.begin_need("joined mid-session", 0);
            if !self.recovery.has_loop && self.retransmit.is_some() {
                self.recovery.backfill.add(1, first_seq);
            }
        }
        self.table
            .set_last_seq(self.recovery.promise(first_seq.saturating_sub(1)));
    }

    fn lost(&mut self, seq: u64, count: u64) {
        self.recovery.session_lost += count;
        self.begin_need("messages lost beyond gap repair", seq.saturating_sub(1));
        if !self.recovery.has_loop && self.retransmit.is_some() {
            self.recovery.backfill.add(seq, seq + count);
        }
    }

    fn end_of_session(&mut self, session: Session) {
        tracing::info!(session = %session, "feed session ended by the producer");
    }

    fn request_retransmit(&mut self, session: Session, seq: u64, count: u64) {
        // A lost request: the gap hold then counts the messages lost, as it
        // would without a server.
        send_request(&self.retransmit, &self.metrics, session, seq, count);
    }

    fn forward(&mut self, raw: &[u8]) {
        if let Some(f) = &self.forward {
            f.packet(raw);
        }
    }
}

impl Recovery {
    /// A live change arrived while state is lacking: a newly listed symbol
    /// is suspect; a suspect one is whole again once both halves are fresh.
    pub(super) fn note_live(&mut self, table: &Table, msg: &Message<'_>, locate: Locate) {
        match msg {
            Message::Directory { .. } => {
                if table.halves(locate) == (false, false) {
                    self.suspects.mark(locate);
                }
            }
            Message::Quote { .. } => {
                self.suspects.refreshed(locate, false);
            }
            Message::Trade { .. } => {
                self.suspects.refreshed(locate, true);
            }
            Message::State { .. } | Message::Level { .. } | Message::Book { .. } => {}
        }
    }
}

impl<L: ChangeListener> Applier<L> {
    /// The table lacks state from here on: every listed symbol is suspect
    /// until recovery brings it back.
    pub(super) fn begin_need(&mut self, reason: &'static str, promise: u64) {
        let r = &mut self.recovery;
        for locate in self.table.locates() {
            r.suspects.mark(locate);
        }
        // A loop cycle counts only if it began after the latest loss.
        r.tracker.restart();
        // Trades are missing from the history until a replay brings them.
        self.table.chart().set_complete(false);
        if r.need.is_some() {
            return;
        }
        tracing::warn!(
            reason,
            symbols = r.suspects.count(),
            recovery_line = r.has_loop,
            retransmit = self.retransmit.is_some(),
            "feed state incomplete: recovering"
        );
        r.recovered.clear_all();
        r.recovered_first.clear();
        self.table.bump_recovery();
        // Books keep what they held and log what comes, until a `'B'` or
        // the history fills them in (table::book).
        self.table.books().begin_recovery();
        r.need = Some(Need {
            since: Instant::now(),
            promise,
            reason,
            backfill_lost: r.backfill.stats().lost,
        });
        self.session_changed = true;
    }

    /// Recovery is done: every symbol's state is whole again, and with
    /// `replayed` every message missed was replayed, so the history of
    /// trades is whole again too (unless an earlier gap never was filled).
    pub(super) fn complete_need(&mut self, how: &'static str, replayed: bool) {
        self.replay_stash();
        let r = &mut self.recovery;
        let Some(need) = r.need.take() else { return };
        r.history_gap |= !replayed;
        self.table.chart().set_complete(!r.history_gap);
        let listener = &mut self.listener;
        self.table
            .books()
            .end_recovery(|locate, seq| listener.changed(locate, seq));
        r.suspects.clear_all();
        let names: Vec<String> = r
            .recovered_first
            .iter()
            .filter_map(|&l| self.table.info(l).map(|i| i.symbol.to_string()))
            .collect();
        tracing::info!(
            reason = need.reason,
            how,
            took_ms = need.since.elapsed().as_millis() as u64,
            recovered_symbols = r.recovered.count(),
            first_recovered = %names.join(","),
            "feed state complete"
        );
        self.metrics.recoveries.inc();
        self.table.bump_recovery();
        self.session_changed = true;
    }

    /// Applies what was kept for symbols that were not listed yet.
    pub(super) fn replay_stash(&mut self) {
        for (seq, payload) in std::mem::take(&mut self.recovery.stash) {
            self.history_message(seq, &payload);
        }
    }

    /// Applies one message of retransmitted history (out of the live order):
    /// every half merges newest-wins, so it never undoes a newer change.
    pub(super) fn history_message(&mut self, seq: u64, payload: &[u8]) {
        let Ok(msg) = decode_message(payload) else {
            return;
        };
        if let Applied::Changed(locate) | Applied::BookChanged(locate) = self.table.apply(seq, &msg)
        {
            self.listener.changed(locate, seq);
            self.recovered(locate);
        }
    }

    /// Rebuilds the books that took history out of order, and tells the
    /// listener (once per batch: a rebuild replays the book's log).
    pub(super) fn settle_books(&mut self) {
        let listener = &mut self.listener;
        self.table
            .books()
            .settle(|locate, seq| listener.changed(locate, seq));
    }

    pub(super) fn recovered(&mut self, locate: Locate) {
        let r = &mut self.recovery;
        self.metrics.recovered.inc();
        if !r.recovered.contains(locate) {
            r.recovered.mark(locate);
            if r.recovered_first.len() < 10 {
                r.recovered_first.push(locate);
            }
        }
    }

    /// One recovery-line datagram.
    pub(super) fn recovery_packet(&mut self, packet: &Packet<'_>, current: Option<Session>) {
        if packet.kind != PacketKind::Data {
            return;
        }
        if current != Some(packet.session) {
            // The loop of a session the live lines have not started (or left).
            self.metrics
                .dropped
                .get_or_create(&ReasonLabel {
                    reason: "recovery_session",
                })
                .inc();
            return;
        }
        let first = self.recovery.tracker.packet(packet.seq, packet.count);
        if self.recovery.need.is_none() {
            return;
        }
        for payload in packet.messages().skip(first) {
            let msg = match decode_message(payload) {
                Ok(m) => m,
                Err(e) => {
                    self.metrics
                        .decode_errors
                        .get_or_create(&ReasonLabel { reason: e.reason() })
                        .inc();
                    continue;
                }
            };
            let kind = match msg {
                Message::Directory { .. } => b'D',
                Message::State { .. } => b'S',
                Message::Book { .. } => b'B',
                // The loop carries directory, state and book state only.
                _ => continue,
            };
            let locate = msg.locate();
            match self.table.apply(0, &msg) {
                Applied::Changed(l) | Applied::BookChanged(l) => {
                    self.listener.changed(l, 0);
                    if kind != b'D' {
                        self.recovered(l);
                    } else if self.table.halves(l) == (false, false) {
                        self.recovery.suspects.mark(l);
                    }
                }
                // A state that came round before its directory entry: kept
                // until the entry has been seen.
                Applied::UnknownLocate if kind != b'D' && self.recovery.stashing() => {
                    self.recovery.stash.push((0, payload.to_vec()));
                }
                Applied::Unchanged | Applied::UnknownLocate => {}
            }
            if kind == b'S' {
                // Its state is as of after the relay began recovering.
                self.recovery.suspects.clear(locate);
            }
            if self.recovery.tracker.message(kind, locate) {
                self.complete_need("one full recovery loop", false);
                return;
            }
        }
    }

    /// Backfill requests due, and recovery that completes without a loop.
    pub(super) fn recovery_tick(&mut self, now: Instant, session: Option<Session>) {
        if let Some(session) = session {
            let Applier {
                recovery,
                retransmit,
                metrics,
                ..
            } = self;
            let mut history: Vec<(u64, Vec<u8>)> = Vec::new();
            recovery.backfill.poll(
                now,
                &mut |seq, count| send_request(retransmit, metrics, session, seq, count),
                &mut |seq, payload| history.push((seq, payload.to_vec())),
            );
            for (seq, payload) in history {
                self.history_message(seq, &payload);
            }
        }
        let st = self.recovery.backfill.stats();
        let rep = self.recovery.reported_backfill;
        self.metrics
            .backfill_requests
            .inc_by(st.requests - rep.requests);
        self.metrics.backfill_lost.inc_by(st.lost - rep.lost);
        if st.lost > rep.lost {
            tracing::warn!(
                lost = st.lost - rep.lost,
                "history the retransmission server could not supply"
            );
        }
        self.recovery.reported_backfill = st;
        if self.recovery.backfill.idle() && !self.recovery.has_loop {
            self.replay_stash();
        }
        let Some(need) = &self.recovery.need else {
            return;
        };
        if self.recovery.has_loop || !self.recovery.backfill.idle() {
            return;
        }
        if self.retransmit.is_some() && st.lost == need.backfill_lost {
            self.complete_need("retransmitted history", true);
        } else if self.recovery.suspects.count() == 0 && self.table.symbol_count() > 0 {
            self.complete_need("every symbol refreshed by the live feed", false);
        }
    }

    /// Retransmitted packets: history for the backfill, gaps for the sequencer.
    pub(super) fn retransmitted(&mut self, packet: &Packet<'_>, raw: &[u8]) {
        if !self.recovery.backfill.wants(packet) {
            return;
        }
        let mut history: Vec<(u64, Vec<u8>)> = Vec::new();
        self.recovery
            .backfill
            .packet(packet, raw, &mut |seq, payload| {
                history.push((seq, payload.to_vec()))
            });
        for (seq, payload) in history {
            self.history_message(seq, &payload);
        }
    }
}

/// Sends one retransmission request; a full send buffer or queue loses it
/// (the asker's timeout covers that).
pub(super) fn send_request(
    repair: &Repair,
    metrics: &FeedMetrics,
    session: Session,
    seq: u64,
    count: u64,
) {
    let count = count.clamp(1, u64::from(crate::retransmit::MAX_REQUEST)) as u16;
    let req = crate::retransmit::Request {
        session,
        seq,
        count,
    };
    if let Some(sock) = &repair.udp {
        match sock.try_send(&req.encode()) {
            Ok(_) => {
                metrics.retransmit_requests.inc();
            }
            Err(e) => tracing::debug!(error = %e, "retransmission request not sent"),
        }
    }
    if let Some(nats) = &repair.nats {
        match nats.try_send(req) {
            Ok(()) => {
                metrics.retransmit_requests.inc();
            }
            Err(e) => tracing::debug!(error = %e, "retransmission request to the stream not sent"),
        }
    }
}
