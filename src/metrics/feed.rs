//! The feed's metrics: what each line received, what failed to decode or
//! was dropped, gaps and their repair, recovery, status and lag.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::*;
use crate::feed::status::{DropReason, FeedStatus};
use crate::wire::DecodeError;

/// Label: feed line, `a` or `b`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LineLabel {
    /// `a` or `b`.
    pub line: &'static str,
}

/// Label: feed status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `live`, `stale` or `recovering`.
    pub status: &'static str,
}

/// Label: feed session id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabel {
    /// Session id, unpadded.
    pub session: String,
}

/// Ingest counters for one line, resolved once.
#[derive(Clone, Debug, Default)]
pub struct LineCounters {
    /// Datagrams received.
    pub packets: Counter,
    /// Messages received (duplicates included).
    pub messages: Counter,
    /// Datagram bytes received.
    pub bytes: Counter,
}

/// Feed and table metrics.
#[derive(Clone, Debug)]
pub struct FeedMetrics {
    /// Per-line receive counters, by line family.
    pub packets: Family<LineLabel, Counter>,
    /// See [`LineCounters::messages`].
    pub messages: Family<LineLabel, Counter>,
    /// See [`LineCounters::bytes`].
    pub bytes: Family<LineLabel, Counter>,
    /// Datagrams or messages that failed to decode, by reason.
    pub decode_errors: Family<ReasonLabel, Counter>,
    /// Well-formed messages dropped, by reason (unknown_locate, stale_session,
    /// unconfirmed_session).
    pub dropped: Family<ReasonLabel, Counter>,
    /// Messages skipped as already applied (mostly the other line's copy).
    pub duplicates: Counter,
    /// Messages applied to the table.
    pub applied: Counter,
    /// Gaps in the sequence opened.
    pub gaps_opened: Counter,
    /// Gaps filled before the hold expired.
    pub gaps_repaired: Counter,
    /// Messages never received.
    pub lost: Counter,
    /// Retransmission requests sent (gap repair and backfill).
    pub retransmit_requests: Counter,
    /// Backfill requests for history (repeats included).
    pub backfill_requests: Counter,
    /// History messages the retransmission server never supplied.
    pub backfill_lost: Counter,
    /// Symbol changes applied from recovered state (loop or history).
    pub recovered: Counter,
    /// Recoveries completed (the table whole again).
    pub recoveries: Counter,
    /// Symbols that may lack changes the relay missed.
    pub incomplete: Gauge,
    /// 1 for the current feed status, 0 for the others.
    pub status: Family<StatusLabel, Gauge>,
    /// 1 for the current session.
    pub session: Family<SessionLabel, Gauge>,
    /// Last applied feed sequence.
    pub sequence: Gauge,
    /// Symbols in the directory.
    pub symbols: Gauge,
    /// Exchange timestamp to ingest, per batch (its newest message).
    pub lag: AtomicHistogram,
    /// Book messages (`'L'`, `'B'`) that changed a book.
    pub book_messages: Counter,
    /// Book levels not kept: beyond `max_book_levels` on their side.
    pub book_levels_dropped: Counter,
}

impl FeedMetrics {
    /// The counters of line `a` or `b`.
    pub fn line(&self, line: &'static str) -> LineCounters {
        let l = LineLabel { line };
        LineCounters {
            packets: self.packets.get_or_create(&l).clone(),
            messages: self.messages.get_or_create(&l).clone(),
            bytes: self.bytes.get_or_create(&l).clone(),
        }
    }
}

impl FeedMetrics {
    /// Builds the feed's metrics and registers them, known label sets at zero.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let feed = FeedMetrics {
            packets: Family::default(),
            messages: Family::default(),
            bytes: Family::default(),
            decode_errors: Family::default(),
            dropped: Family::default(),
            duplicates: Counter::default(),
            applied: Counter::default(),
            gaps_opened: Counter::default(),
            gaps_repaired: Counter::default(),
            lost: Counter::default(),
            retransmit_requests: Counter::default(),
            backfill_requests: Counter::default(),
            backfill_lost: Counter::default(),
            recovered: Counter::default(),
            recoveries: Counter::default(),
            incomplete: Gauge::default(),
            status: Family::default(),
            session: Family::default(),
            sequence: Gauge::default(),
            symbols: Gauge::default(),
            lag: AtomicHistogram::new(latency_buckets()),
            book_messages: Counter::default(),
            book_levels_dropped: Counter::default(),
        };
        registry.register(
            "feed_packets_received",
            "Datagrams received, by line",
            feed.packets.clone(),
        );
        registry.register(
            "feed_messages_received",
            "Messages received, by line, duplicates included",
            feed.messages.clone(),
        );
        registry.register(
            "feed_bytes_received",
            "Datagram bytes received, by line",
            feed.bytes.clone(),
        );
        registry.register(
            "feed_decode_errors",
            "Datagrams or messages that failed to decode, by reason",
            feed.decode_errors.clone(),
        );
        registry.register(
            "feed_dropped_messages",
            "Well-formed messages dropped, by reason",
            feed.dropped.clone(),
        );
        registry.register(
            "feed_duplicate_messages",
            "Messages skipped as already applied (A/B arbitration)",
            feed.duplicates.clone(),
        );
        registry.register(
            "feed_applied_messages",
            "Messages applied to the symbol table",
            feed.applied.clone(),
        );
        registry.register(
            "feed_gaps_opened",
            "Gaps opened in the feed sequence",
            feed.gaps_opened.clone(),
        );
        registry.register(
            "feed_gaps_repaired",
            "Gaps filled before the hold time expired",
            feed.gaps_repaired.clone(),
        );
        registry.register(
            "feed_lost_messages",
            "Messages given up as lost",
            feed.lost.clone(),
        );
        registry.register(
            "feed_retransmit_requests",
            "Retransmission requests sent (gap repair and backfill)",
            feed.retransmit_requests.clone(),
        );
        registry.register(
            "feed_backfill_requests",
            "Requests for history a late joiner or a loss left missing, repeats included",
            feed.backfill_requests.clone(),
        );
        registry.register(
            "feed_backfill_lost_messages",
            "History messages the retransmission server never supplied",
            feed.backfill_lost.clone(),
        );
        registry.register(
            "feed_recovered_changes",
            "Symbol changes applied from recovered state (recovery loop or history)",
            feed.recovered.clone(),
        );
        registry.register(
            "feed_recoveries",
            "Recoveries completed: the table held every symbol's whole state again",
            feed.recoveries.clone(),
        );
        registry.register(
            "feed_incomplete_symbols",
            "Symbols that may lack changes the relay missed",
            feed.incomplete.clone(),
        );
        registry.register(
            "feed_status",
            "1 for the current feed status (live, stale, recovering)",
            feed.status.clone(),
        );
        registry.register(
            "feed_session_info",
            "1 for the current feed session",
            feed.session.clone(),
        );
        registry.register(
            "feed_sequence",
            "Last applied feed sequence number",
            feed.sequence.clone(),
        );
        registry.register("symbols", "Symbols in the directory", feed.symbols.clone());
        registry.register(
            "book_messages",
            "Book messages ('L' levels, recovery 'B' states) that changed a symbol's book",
            feed.book_messages.clone(),
        );
        registry.register(
            "book_levels_dropped",
            "Book levels not kept because their side already held max_book_levels",
            feed.book_levels_dropped.clone(),
        );
        registry.register(
            "feed_lag_seconds",
            "Exchange timestamp to ingest, per batch of datagrams (its newest message)",
            feed.lag.clone(),
        );

        for line in ["a", "b"] {
            let _ = feed.line(line);
        }
        for e in DecodeError::ALL {
            let _ = feed
                .decode_errors
                .get_or_create(&ReasonLabel { reason: e.reason() });
        }
        for reason in DropReason::ALL {
            let _ = feed.dropped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for status in FeedStatus::ALL {
            feed.status
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(i64::from(status == FeedStatus::Stale));
        }
        feed
    }
}
