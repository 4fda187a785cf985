//! Every metric tickrelay exposes, named in one place.
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

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::wire::DecodeError;

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
    pub fn refused(&self, limit: Limit) {
        self.limit_refusals
            .get_or_create(&LimitLabel {
                limit: limit.as_str(),
            })
            .inc();
    }

    /// Counts a slow-client disconnect.
    pub fn slow(&self, t: crate::fanout::Transport, reason: SlowReason) {
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

/// `reason` labels of `tickrelay_feed_dropped_messages_total`.
pub const DROP_REASONS: [&str; 3] = ["unknown_locate", "stale_session", "unconfirmed_session"];

/// A limit that refuses requests or operations; its label in
/// `tickrelay_limit_refusals_total` is the setting's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `max_connections`.
    MaxConnections,
    /// `max_connections_per_ip`.
    MaxConnectionsPerIp,
    /// `max_symbols`.
    MaxSymbols,
    /// `max_frame_bytes`.
    MaxFrameBytes,
    /// `ops_per_second`.
    OpsPerSecond,
    /// `allow_wildcard`.
    AllowWildcard,
    /// `token`.
    Token,
    /// `allowed_origins`.
    AllowedOrigins,
}

impl Limit {
    /// Every limit, for pre-creating the series.
    pub const ALL: [Limit; 8] = [
        Limit::MaxConnections,
        Limit::MaxConnectionsPerIp,
        Limit::MaxSymbols,
        Limit::MaxFrameBytes,
        Limit::OpsPerSecond,
        Limit::AllowWildcard,
        Limit::Token,
        Limit::AllowedOrigins,
    ];

    /// The setting's name: the metric label and what refusals cite.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxConnectionsPerIp => "max_connections_per_ip",
            Limit::MaxSymbols => "max_symbols",
            Limit::MaxFrameBytes => "max_frame_bytes",
            Limit::OpsPerSecond => "ops_per_second",
            Limit::AllowWildcard => "allow_wildcard",
            Limit::Token => "token",
            Limit::AllowedOrigins => "allowed_origins",
        }
    }
}

/// Why a client was closed as too slow or silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowReason {
    /// Its `every` queue overflowed.
    QueueOverflow,
    /// A write did not finish within the write timeout.
    WriteTimeout,
    /// Nothing heard within the idle timeout.
    NoPong,
}

impl SlowReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowReason::QueueOverflow => "queue_overflow",
            SlowReason::WriteTimeout => "write_timeout",
            SlowReason::NoPong => "no_pong",
        }
    }
}

/// The `(transport, reason)` pairs of `tickrelay_slow_client_disconnects_total`
/// that can happen.
pub const SLOW_REASONS: [(crate::fanout::Transport, SlowReason); 5] = [
    (crate::fanout::Transport::Ws, SlowReason::QueueOverflow),
    (crate::fanout::Transport::Ws, SlowReason::WriteTimeout),
    (crate::fanout::Transport::Ws, SlowReason::NoPong),
    (crate::fanout::Transport::Sse, SlowReason::QueueOverflow),
    (crate::fanout::Transport::Sse, SlowReason::WriteTimeout),
];

/// Most bucket bounds an [`AtomicHistogram`] takes (`+Inf` not counted).
const MAX_BOUNDS: usize = 24;

/// Shards per sharded metric: enough that the worker threads of a busy
/// relay rarely share one; each shard is its own cache lines.
const SHARDS: usize = 8;

/// The shard of the calling thread: threads take shards round-robin, once.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        let mut v = i.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            i.set(v);
        }
        v
    })
}

/// A `u64` alone on its cache lines (128 bytes: adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A counter that many threads add to without sharing a cache line: each
/// thread adds to its own shard; a scrape sums them. Same methods as
/// prometheus-client's `Counter` for the hot path (`inc`, `inc_by`, `get`).
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter {
    shards: Arc<[Padded; SHARDS]>,
}

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `v`.
    pub fn inc_by(&self, v: u64) {
        self.shards[shard_index()].0.fetch_add(v, Ordering::Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's slice of a histogram.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// Observations per bucket (not cumulative); index `len` is `+Inf`.
    counts: [AtomicU64; MAX_BOUNDS + 1],
    /// Sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, padded with `+∞` to the fixed length.
    bounds: [f64; MAX_BOUNDS],
    /// Real bounds in `bounds`.
    len: usize,
    shards: [Shard; SHARDS],
}

/// A Prometheus histogram that many threads observe into without a lock or
/// a shared cache line.
///
/// prometheus-client's `Histogram` takes a write lock per observation; with
/// a frame per client per batch, every writer thread of a transport would
/// bounce that lock between cores. Here an observation is two relaxed
/// atomic ops on the calling thread's own shard (the same cost as the lock
/// when uncontended; `benches/metrics.rs`), and a scrape adds the shards
/// up. The count is the sum of the buckets, so `_count` always equals the
/// `+Inf` bucket.
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (ascending, finite; `+Inf` is
    /// added; at most 24 are kept).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut padded = [f64::INFINITY; MAX_BOUNDS];
        let mut len = 0;
        for b in bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .take(MAX_BOUNDS)
        {
            padded[len] = b;
            len += 1;
        }
        AtomicHistogram {
            inner: Arc::new(HistogramInner {
                bounds: padded,
                len,
                shards: std::array::from_fn(|_| Shard::default()),
            }),
        }
    }

    /// Records one observation of `v`.
    pub fn observe(&self, v: f64) {
        let inner = &*self.inner;
        // The first bound >= v, or `len` (+Inf) past the last; a linear
        // scan beats a binary search here (latencies sit in the low
        // buckets, and its exit branch predicts well). NaN counts as +Inf.
        let i = inner
            .bounds
            .iter()
            .position(|&b| b >= v)
            .unwrap_or(inner.len)
            .min(inner.len);
        let shard = &inner.shards[shard_index()];
        shard.counts[i].fetch_add(1, Ordering::Relaxed);
        if v.is_finite() {
            // Uncontended in practice: the shard belongs to this thread.
            let _ = shard
                .sum
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    Some((f64::from_bits(bits) + v).to_bits())
                });
        }
    }

    /// `(sum, count, per-bucket counts)` over every shard; the buckets are
    /// `(upper bound, count)`, not cumulative, the last bound `f64::MAX`
    /// (`+Inf` to the encoder).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let n = inner.len + 1;
        let mut counts = vec![0u64; n];
        let mut sum = 0.0;
        for shard in &inner.shards {
            for (c, a) in counts.iter_mut().zip(&shard.counts[..n]) {
                *c += a.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
        }
        let count = counts.iter().sum();
        let buckets = inner.bounds[..inner.len]
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(counts)
            .collect();
        (sum, count, buckets)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(
            sum,
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Clock ticks per second of the CPU times in `/proc/self/stat`. Linux
/// reports them in USER_HZ, which is 100 on x86_64 and arm64 (the kernel
/// ABI fixes it there); asking `sysconf(_SC_CLK_TCK)` would need libc and
/// `unsafe`, which this crate forbids.
const CLK_TCK: f64 = 100.0;

/// What the process collector reads from `/proc`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// OS threads.
    pub threads: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

/// Fields of `/proc/[pid]/stat`: `(utime + stime in ticks, threads,
/// start time in ticks after boot)`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((num(14)? + num(15)?, num(20)?, num(22)?))
}

/// A `Key:   1234 kB` line of `/proc/[pid]/status`, in bytes.
pub fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// The soft `Max open files` limit from `/proc/[pid]/limits` (`None` when
/// unlimited).
pub fn parse_max_fds(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl ProcessStats {
    /// Reads this process's stats; `None` where `/proc` is missing.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (ticks, threads, start_ticks) = parse_proc_stat(&stat)?;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_boot_time(&t));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| parse_max_fds(&t));
        Some(ProcessStats {
            cpu_seconds: ticks as f64 / CLK_TCK,
            resident_bytes: parse_status_kib(&status, "VmRSS"),
            virtual_bytes: parse_status_kib(&status, "VmSize"),
            threads: Some(threads),
            start_time_seconds: boot.map(|b| b as f64 + start_ticks as f64 / CLK_TCK),
            open_fds,
            max_fds,
        })
    }
}

/// The standard `process_*` metrics, read from `/proc/self` on each scrape.
/// On systems without `/proc` it exposes nothing.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        encoder
            .encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, f64>(&p.cpu_seconds, None)?;
        let gauges: [(&str, &str, Option<f64>); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                p.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                p.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                p.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                p.threads.map(|v| v as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                encoder
                    .encode_descriptor(name, help, None, MetricType::Gauge)?
                    .encode_gauge(&v)?;
            }
        }
        Ok(())
    }
}

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
        for reason in DROP_REASONS {
            let _ = feed.dropped.get_or_create(&ReasonLabel { reason });
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

        for status in ["live", "stale", "recovering"] {
            feed.status
                .get_or_create(&StatusLabel { status })
                .set(i64::from(status == "stale"));
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
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn atomic_histogram_encodes_like_the_locked_one() {
        let ours = AtomicHistogram::new(latency_buckets());
        let theirs = Histogram::new(latency_buckets());
        let values = [0.0, 0.000_01, 0.000_011, 0.003, 0.5, 1.31072, 2.0, 1e9];
        std::thread::scope(|s| {
            for chunk in values.chunks(2) {
                let (ours, theirs) = (&ours, &theirs);
                s.spawn(move || {
                    for &v in chunk {
                        ours.observe(v);
                        theirs.observe(v);
                    }
                });
            }
        });
        let mut a = Registry::default();
        a.register("lat_seconds", "h", ours.clone());
        let mut b = Registry::default();
        b.register("lat_seconds", "h", theirs);
        assert_eq!(encode(&a), encode(&b));
        let (sum, count, buckets) = ours.snapshot();
        assert_eq!(count, values.len() as u64);
        assert_eq!(sum, values.iter().sum::<f64>());
        assert_eq!(buckets.len(), 19);
        assert_eq!(buckets[0], (0.000_01, 2), "<= 10 µs");
        assert_eq!(buckets[18], (f64::MAX, 2), "+Inf");
    }

    #[test]
    fn nan_counts_as_infinite_and_stays_out_of_the_sum() {
        let h = AtomicHistogram::new([1.0, 2.0]);
        h.observe(f64::NAN);
        h.observe(1.5);
        h.observe(f64::INFINITY);
        h.observe(-1.0);
        let (sum, count, buckets) = h.snapshot();
        assert_eq!((sum, count), (0.5, 4));
        assert_eq!(buckets, vec![(1.0, 1), (2.0, 1), (f64::MAX, 2)]);
    }

    #[test]
    fn sharded_counter_adds_up_across_threads_and_encodes_as_a_counter() {
        let c = ShardedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..12 {
                let c = c.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                    c.inc_by(5);
                });
            }
        });
        assert_eq!(c.get(), 12 * 1005);
        let mut r = Registry::default();
        r.register("frames", "h", c);
        let text = encode(&r);
        assert!(
            text.contains("# TYPE frames counter\nframes_total 12060\n"),
            "{text}"
        );
    }

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        // pid (comm) state ppid ... utime(14) stime(15) ... threads(20) ... starttime(22)
        let stat = "4242 (tick (relay) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 104857600 2048 18446744073709551615";
        assert_eq!(parse_proc_stat(stat), Some((325, 9, 123456)));
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status = "Name:\ttickrelay\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\nThreads:\t9\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(2048 * 1024));
        assert_eq!(parse_status_kib(status, "VmSize"), Some(123_456 * 1024));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1764300000\nprocesses 9\n"),
            Some(1_764_300_000)
        );
    }

    // Linux only: there /proc must exist, so a missing one fails here
    // instead of passing as a skip; elsewhere the test is not counted.
    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_read_from_proc() {
        let p = ProcessStats::read().expect("read /proc/self");
        assert!(p.resident_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() > 0);
        assert!(p.threads.unwrap() >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        // A wrong clock-tick rate would put the start far from now.
        assert!(start <= now + 1.0 && start > now - 3600.0, "start {start}");
    }

    #[test]
    fn every_name_is_prefixed_and_follows_the_conventions() {
        let text = Metrics::new().encode();
        let mut families = 0;
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            families += 1;
            assert!(
                name.starts_with("tickrelay_") || name.starts_with("process_"),
                "{name} lacks the tickrelay_ prefix"
            );
            assert!(!name.starts_with("tickrelay_process_"), "{name}");
            // Counters get `_total` from the encoder, never in their name.
            assert!(!name.ends_with("_total"), "{name}");
            if kind == "histogram" {
                assert!(
                    name.ends_with("_seconds"),
                    "{name}: histograms are in seconds"
                );
            }
        }
        assert!(families >= 30, "only {families} families");
        for sample in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "tickrelay_feed_packets_received_total{line=\"a\"}",
            "tickrelay_feed_decode_errors_total{reason=\"bad_msgpack\"} 0",
            "tickrelay_limit_refusals_total{limit=\"max_symbols\"} 0",
            "tickrelay_slow_client_disconnects_total{transport=\"ws\",reason=\"no_pong\"} 0",
            "tickrelay_tick_to_write_seconds_bucket{le=\"0.00001\",transport=\"ws\"} 0",
        ] {
            if sample.starts_with("process_") && !cfg!(target_os = "linux") {
                continue;
            }
            assert!(text.contains(sample), "{sample} missing from:\n{text}");
        }
        assert!(text.contains("tickrelay_build_info{version=\""));
        assert!(text.ends_with("# EOF\n"));
    }
}
