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

/// Label: client transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `ws`, `sse`, `poll`.
    pub transport: &'static str,
}

impl From<crate::fanout::Transport> for TransportLabel {
    fn from(t: crate::fanout::Transport) -> Self {
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
    pub messages_sent: Family<TransportLabel, Counter>,
    /// Quotes delivered.
    pub quotes_sent: Family<TransportLabel, Counter>,
    /// Payload bytes written.
    pub bytes_sent: Family<TransportLabel, Counter>,
    /// Quotes replaced by a newer one before they were sent.
    pub conflated: Counter,
    /// Clients closed for being too slow or silent.
    pub slow_disconnects: Family<DisconnectLabels, Counter>,
    /// Exchange timestamp to socket write, per frame (its oldest quote).
    pub tick_to_write: Family<TransportLabel, Histogram>,
    /// Requests or operations refused by a limit.
    pub limit_refusals: Family<LimitLabel, Counter>,
    /// Long-poll requests waiting for a change.
    pub longpoll_waiters: Gauge,
}

/// Per-connection handles, resolved once per connection.
#[derive(Clone, Debug)]
pub struct TransportCounters {
    /// See [`StreamMetrics::messages_sent`].
    pub messages: Counter,
    /// See [`StreamMetrics::quotes_sent`].
    pub quotes: Counter,
    /// See [`StreamMetrics::bytes_sent`].
    pub bytes: Counter,
    /// See [`StreamMetrics::tick_to_write`].
    pub latency: Histogram,
}

impl StreamMetrics {
    /// Handles for one transport.
    pub fn transport(&self, t: crate::fanout::Transport) -> TransportCounters {
        let l = TransportLabel::from(t);
        TransportCounters {
            messages: self.messages_sent.get_or_create(&l).clone(),
            quotes: self.quotes_sent.get_or_create(&l).clone(),
            bytes: self.bytes_sent.get_or_create(&l).clone(),
            latency: self.tick_to_write.get_or_create(&l).clone(),
        }
    }

    /// Counts a refusal by `limit`.
    pub fn refused(&self, limit: &'static str) {
        self.limit_refusals
            .get_or_create(&LimitLabel { limit })
            .inc();
    }

    /// Counts a slow-client disconnect.
    pub fn slow(&self, t: crate::fanout::Transport, reason: &'static str) {
        self.slow_disconnects
            .get_or_create(&DisconnectLabels {
                transport: t.as_str(),
                reason,
            })
            .inc();
    }
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
    /// Retransmission requests sent for gaps.
    pub retransmit_requests: Counter,
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
    /// Streaming and polling.
    pub stream: StreamMetrics,
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
            retransmit_requests: Counter::default(),
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
            "feed_retransmit_requests",
            "Retransmission requests sent for gaps",
            feed.retransmit_requests.clone(),
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

        let stream = StreamMetrics {
            clients: Family::default(),
            subscriptions: Family::default(),
            wildcard_subscriptions: Gauge::default(),
            messages_sent: Family::default(),
            quotes_sent: Family::default(),
            bytes_sent: Family::default(),
            conflated: Counter::default(),
            slow_disconnects: Family::default(),
            tick_to_write: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            limit_refusals: Family::default(),
            longpoll_waiters: Gauge::default(),
        };
        for t in [
            crate::fanout::Transport::Ws,
            crate::fanout::Transport::Sse,
            crate::fanout::Transport::Poll,
        ] {
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
            stream,
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
