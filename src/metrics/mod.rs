//! Every metric tickrelay exposes, named in one place.
//! (Over 700 lines because every metric's name, help and labels live here,
//! in one place, on purpose; the primitives and the process collector are
//! in `primitives` and `process`, the tests in `tests`.)
//!
//! Names follow Prometheus conventions: the `tickrelay_` prefix, base units,
//! `_total` on counters (added by the encoder), `_seconds` on latency
//! histograms. No label ever carries a symbol: cardinality stays fixed.
//! The standard `process_*` metrics (CPU, memory, file descriptors, start
//! time) sit beside them unprefixed, as every Prometheus client names them,
//! so stock dashboards and alerts work; they are read from `/proc/self` at
//! scrape time and cost nothing in between.
//!
//! Hot-path code holds pre-resolved handles, so counting never looks up a
//! label: a `Counter` is an `Arc`'d atomic (one relaxed add). What every
//! client writer touches per frame is sharded per thread instead
//! ([`ShardedCounter`], and [`AtomicHistogram`] for latencies, lock-free),
//! so writers on different cores never share a cache line or a lock.
//! `benches/metrics.rs` measures them against prometheus-client's own.
//!
//! Label sets that are known in advance (decode-error reasons, limits,
//! slow-client reasons) are created at zero at start, so `rate()` and
//! alerts see a series before the first event, and dashboards show 0
//! instead of "no data".
//!
//! Over 700 lines on purpose: every metric's name, help text and labels sit
//! in this one file (the lock-free primitives and the process collector are
//! apart, in `primitives` and `process`).

mod primitives;
mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::kinds::{DropReason, FeedStatus};
use crate::kinds::{Limit, SLOW_REASONS, SlowReason, Transport};
use crate::wire::DecodeError;
pub use primitives::{AtomicHistogram, ShardedCounter};
pub use process::{ProcessCollector, ProcessStats};

/// Label: feed line, `a` or `b`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LineLabel {
    /// `a` or `b`.
    pub line: &'static str,
}

/// Label: why something was counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// snake_case reason.
    pub reason: &'static str,
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

/// Labels of an HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Matched route pattern (never the raw path, to bound cardinality).
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Label: HTTP route pattern.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Matched route pattern.
    pub route: String,
}

/// Label: client transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `ws`, `sse`, `poll`.
    pub transport: &'static str,
}

impl From<Transport> for TransportLabel {
    fn from(t: Transport) -> Self {
        TransportLabel {
            transport: t.as_str(),
        }
    }
}

/// Labels of a slow-client disconnect.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DisconnectLabels {
    /// Transport.
    pub transport: &'static str,
    /// `queue_overflow`, `write_timeout`, `no_pong`.
    pub reason: &'static str,
}

/// Label: which limit refused something.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// Setting name of the limit.
    pub limit: &'static str,
}

/// Streaming and polling metrics.
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    /// Connected clients.
    pub clients: Family<TransportLabel, Gauge>,
    /// Symbol subscriptions.
    pub subscriptions: Family<TransportLabel, Gauge>,
    /// Subscriptions to every symbol (`*`).
    pub wildcard_subscriptions: Gauge,
    /// Frames, events or responses carrying quotes.
    pub messages_sent: Family<TransportLabel, ShardedCounter>,
    /// Quotes delivered.
    pub quotes_sent: Family<TransportLabel, ShardedCounter>,
    /// Payload bytes written.
    pub bytes_sent: Family<TransportLabel, ShardedCounter>,
    /// Quotes replaced by a newer one before they were sent.
    pub conflated: Counter,
    /// Clients closed for being too slow or silent.
    pub slow_disconnects: Family<DisconnectLabels, Counter>,
    /// Exchange timestamp to socket write, per frame (its oldest quote).
    pub tick_to_write: Family<TransportLabel, AtomicHistogram>,
    /// Requests or operations refused by a limit.
    pub limit_refusals: Family<LimitLabel, Counter>,
    /// Long-poll requests waiting for a change.
    pub longpoll_waiters: Gauge,
}

/// Per-connection handles, resolved once per connection. Every client of a
/// transport shares them, from whatever thread writes its frames: hence
/// sharded counters and a lock-free histogram.
#[derive(Clone, Debug)]
pub struct TransportCounters {
    /// See [`StreamMetrics::messages_sent`].
    pub messages: ShardedCounter,
    /// See [`StreamMetrics::quotes_sent`].
    pub quotes: ShardedCounter,
    /// See [`StreamMetrics::bytes_sent`].
    pub bytes: ShardedCounter,
    /// See [`StreamMetrics::tick_to_write`].
    pub latency: AtomicHistogram,
}

impl StreamMetrics {
    /// Handles for one transport.
    pub fn transport(&self, t: Transport) -> TransportCounters {
        let l = TransportLabel::from(t);
        TransportCounters {
            messages: self.messages_sent.get_or_create(&l).clone(),
            quotes: self.quotes_sent.get_or_create(&l).clone(),
            bytes: self.bytes_sent.get_or_create(&l).clone(),
            latency: self.tick_to_write.get_or_create(&l).clone(),
        }
    }

    /// Counts a refusal by `limit`.
    pub fn refused(&self, limit: Limit) {
        self.limit_refusals
            .get_or_create(&LimitLabel {
                limit: limit.as_str(),
            })
            .inc();
    }

    /// Counts a slow-client disconnect.
    pub fn slow(&self, t: Transport, reason: SlowReason) {
        self.slow_disconnects
            .get_or_create(&DisconnectLabels {
                transport: t.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }
}

/// Labels of `tickrelay_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: &'static str,
    /// `release` or `debug` (debug assertions on).
    pub profile: &'static str,
    /// Target architecture, e.g. `x86_64`.
    pub arch: &'static str,
    /// Target OS, e.g. `linux`.
    pub os: &'static str,
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

/// NATS JetStream metrics: the bridge's publisher and the relay's stream
/// line (the line's packets are counted as feed line `nats`).
#[derive(Clone, Debug)]
pub struct NatsMetrics {
    /// 1 while connected to the NATS server.
    pub connected: Gauge,
    /// Connections made (the first and every reconnect).
    pub connects: Counter,
    /// Datagrams the stream acknowledged (duplicates included).
    pub published_packets: Counter,
    /// Bytes of those datagrams.
    pub published_bytes: Counter,
    /// Acknowledged as duplicates (another bridge, or a retry, stored them first).
    pub publish_duplicates: Counter,
    /// Publish failures, by reason: queue_full (dropped), publish, ack (retried).
    pub publish_errors: Family<ReasonLabel, Counter>,
    /// Datagrams waiting to be published.
    pub publish_queue: Gauge,
    /// Forwarded by the sequencer to acknowledged by the stream.
    pub publish_latency: AtomicHistogram,
    /// Consumer (re)starts from a stream sequence: a join, a resume.
    pub replays: Counter,
    /// Stored packets sent to answer retransmission requests.
    pub replayed_packets: Counter,
    /// Consumer errors that restarted it.
    pub consumer_errors: Counter,
}

impl NatsMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = NatsMetrics {
            connected: Gauge::default(),
            connects: Counter::default(),
            published_packets: Counter::default(),
            published_bytes: Counter::default(),
            publish_duplicates: Counter::default(),
            publish_errors: Family::default(),
            publish_queue: Gauge::default(),
            publish_latency: AtomicHistogram::new(latency_buckets()),
            replays: Counter::default(),
            replayed_packets: Counter::default(),
            consumer_errors: Counter::default(),
        };
        for reason in ["queue_full", "publish", "ack"] {
            let _ = m.publish_errors.get_or_create(&ReasonLabel { reason });
        }
        registry.register(
            "nats_connected",
            "1 while connected to the NATS server",
            m.connected.clone(),
        );
        registry.register(
            "nats_connects",
            "Connections to the NATS server made (the first and every reconnect)",
            m.connects.clone(),
        );
        registry.register(
            "bridge_published_packets",
            "Feed datagrams the JetStream stream acknowledged, duplicates included",
            m.published_packets.clone(),
        );
        registry.register(
            "bridge_published_bytes",
            "Bytes of the feed datagrams the stream acknowledged",
            m.published_bytes.clone(),
        );
        registry.register(
            "bridge_duplicate_packets",
            "Datagrams the stream acknowledged as duplicates (same Nats-Msg-Id)",
            m.publish_duplicates.clone(),
        );
        registry.register(
            "bridge_publish_errors",
            "Publish failures by reason: queue_full (dropped), publish and ack (retried)",
            m.publish_errors.clone(),
        );
        registry.register(
            "bridge_queue_packets",
            "Datagrams waiting to be published",
            m.publish_queue.clone(),
        );
        registry.register(
            "bridge_publish_latency_seconds",
            "Sequenced to acknowledged by the stream, per datagram",
            m.publish_latency.clone(),
        );
        registry.register(
            "nats_replays",
            "Stream consumer starts from a stream sequence (join, resume)",
            m.replays.clone(),
        );
        registry.register(
            "nats_replayed_packets",
            "Stored packets sent to answer retransmission requests",
            m.replayed_packets.clone(),
        );
        registry.register(
            "nats_consumer_errors",
            "Stream consumer errors that restarted it",
            m.consumer_errors.clone(),
        );
        m
    }
}

/// HTTP metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests by route and status.
    pub requests: Family<HttpLabels, Counter>,
    /// Request duration by route (to the response head; streams excluded).
    pub duration: Family<RouteLabel, AtomicHistogram>,
}

/// The registry and every metric in it.
#[derive(Debug)]
pub struct Metrics {
    /// What `/metrics` encodes. The root holds the unprefixed `process_*`
    /// collector; every tickrelay metric is in its `tickrelay` sub-registry,
    /// so register new ones in [`Metrics::new`], not here.
    pub registry: Registry,
    /// Feed and table.
    pub feed: FeedMetrics,
    /// HTTP.
    pub http: HttpMetrics,
    /// Streaming and polling.
    pub stream: StreamMetrics,
    /// NATS JetStream bridge and line.
    pub nats: NatsMetrics,
}

/// Histogram buckets for latencies: 10 µs to ~1.3 s, doubling (18 bounds,
/// then `+Inf`).
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_01, 2.0, 18)
}

/// Reasons a datagram or message fails to decode, as `reason` labels
/// (from [`DecodeError::reason`]); created at zero at start.
const DECODE_ERRORS: [DecodeError; 9] = [
    DecodeError::ShortHeader,
    DecodeError::Oversized,
    DecodeError::BadSession,
    DecodeError::LengthOverrun,
    DecodeError::CountOverrun,
    DecodeError::TrailingBytes,
    DecodeError::BadMsgpack,
    DecodeError::BadField,
    DecodeError::UnknownType,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("tickrelay");
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
            "feed_lag_seconds",
            "Exchange timestamp to ingest, per batch of datagrams (its newest message)",
            feed.lag.clone(),
        );

        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| AtomicHistogram::new(latency_buckets())),
        };
        registry.register(
            "http_requests",
            "HTTP requests, by route and status",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request duration to the response head, by route",
            http.duration.clone(),
        );

        let stream = StreamMetrics {
            clients: Family::default(),
            subscriptions: Family::default(),
            wildcard_subscriptions: Gauge::default(),
            messages_sent: Family::default(),
            quotes_sent: Family::default(),
            bytes_sent: Family::default(),
            conflated: Counter::default(),
            slow_disconnects: Family::default(),
            tick_to_write: Family::new_with_constructor(|| AtomicHistogram::new(latency_buckets())),
            limit_refusals: Family::default(),
            longpoll_waiters: Gauge::default(),
        };
        for t in Transport::ALL {
            let l = TransportLabel::from(t);
            let _ = stream.clients.get_or_create(&l);
            let _ = stream.subscriptions.get_or_create(&l);
            let _ = stream.transport(t);
        }
        registry.register(
            "clients",
            "Connected clients, by transport",
            stream.clients.clone(),
        );
        registry.register(
            "subscriptions",
            "Symbol subscriptions, by transport",
            stream.subscriptions.clone(),
        );
        registry.register(
            "wildcard_subscriptions",
            "Subscriptions to every symbol",
            stream.wildcard_subscriptions.clone(),
        );
        registry.register(
            "messages_sent",
            "Frames, events or responses carrying quotes, by transport",
            stream.messages_sent.clone(),
        );
        registry.register(
            "quotes_sent",
            "Quotes delivered, by transport",
            stream.quotes_sent.clone(),
        );
        registry.register(
            "bytes_sent",
            "Payload bytes written, by transport",
            stream.bytes_sent.clone(),
        );
        registry.register(
            "quotes_conflated",
            "Quotes replaced by a newer one before they were sent",
            stream.conflated.clone(),
        );
        registry.register(
            "slow_client_disconnects",
            "Clients closed as too slow or silent, by transport and reason",
            stream.slow_disconnects.clone(),
        );
        registry.register(
            "tick_to_write_seconds",
            "Exchange timestamp to socket write, per frame, by transport",
            stream.tick_to_write.clone(),
        );
        registry.register(
            "limit_refusals",
            "Requests or operations refused by a limit, by limit",
            stream.limit_refusals.clone(),
        );
        registry.register(
            "longpoll_waiters",
            "Long-poll requests waiting for a change",
            stream.longpoll_waiters.clone(),
        );

        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                profile: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
                arch: std::env::consts::ARCH,
                os: std::env::consts::OS,
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels say which build is running",
            build,
        );

        for line in ["a", "b"] {
            let _ = feed.line(line);
        }
        for e in DECODE_ERRORS {
            let _ = feed
                .decode_errors
                .get_or_create(&ReasonLabel { reason: e.reason() });
        }
        for reason in DropReason::ALL {
            let _ = feed.dropped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for limit in Limit::ALL {
            let _ = stream.limit_refusals.get_or_create(&LimitLabel {
                limit: limit.as_str(),
            });
        }
        for (transport, reason) in SLOW_REASONS {
            let _ = stream.slow_disconnects.get_or_create(&DisconnectLabels {
                transport: transport.as_str(),
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
        let nats = NatsMetrics::register(registry);
        Metrics {
            registry: root,
            feed,
            http,
            stream,
            nats,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests;
