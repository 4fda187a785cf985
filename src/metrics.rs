//! Every metric tickrelay exposes, named in one place.
//!
//! Names follow Prometheus conventions: the `tickrelay_` prefix, base units,
//! `_total` on counters (added by the encoder), `_seconds` on latency
//! histograms. No label ever carries a symbol: cardinality stays fixed.
//! Hot-path code holds pre-resolved handles (a `Counter` is an `Arc`'d
//! atomic), so counting is one relaxed add, with no label lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Label: build version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: &'static str,
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
    /// Well-formed messages dropped, by reason (unknown_locate, stale_session).
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
    /// 1 for the current feed status, 0 for the others.
    pub status: Family<StatusLabel, Gauge>,
    /// 1 for the current session.
    pub session: Family<SessionLabel, Gauge>,
    /// Last applied feed sequence.
    pub sequence: Gauge,
    /// Symbols in the directory.
    pub symbols: Gauge,
    /// Exchange timestamp to ingest, per packet.
    pub lag: Histogram,
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

/// HTTP metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests by route and status.
    pub requests: Family<HttpLabels, Counter>,
    /// Request duration by route (to the response head; streams excluded).
    pub duration: Family<RouteLabel, Histogram>,
}

/// The registry and every metric in it.
#[derive(Debug)]
pub struct Metrics {
    /// What `/metrics` encodes.
    pub registry: Registry,
    /// Feed and table.
    pub feed: FeedMetrics,
    /// HTTP.
    pub http: HttpMetrics,
}

/// Histogram buckets for latencies: 10 µs to ~1.3 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_01, 2.0, 18)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tickrelay");
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
            status: Family::default(),
            session: Family::default(),
            sequence: Gauge::default(),
            symbols: Gauge::default(),
            lag: Histogram::new(latency_buckets()),
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
            "Exchange timestamp to ingest, per packet",
            feed.lag.clone(),
        );

        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
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

        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information", build);

        for status in ["live", "stale", "recovering"] {
            feed.status
                .get_or_create(&StatusLabel { status })
                .set(i64::from(status == "stale"));
        }
        Metrics {
            registry,
            feed,
            http,
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
