//! Every metric tickrelay exposes, in one module: here the registry and what
//! the domains share; each domain's metrics (names, help, labels) in its
//! own file — `feed`, `delivery`, `users`, `http`, `nats` — the lock-free primitives
//! in `primitives`, the `process_*` collector in `process`.
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

mod delivery;
mod feed;
mod http;
mod nats;
mod primitives;
mod process;
mod scraped;
mod users;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

pub use delivery::{
    DisconnectLabels, LimitLabel, StreamMetrics, TransportCounters, TransportLabel,
};
pub use feed::{FeedMetrics, LineCounters, LineLabel, SessionLabel, StatusLabel};
pub use http::{HttpLabels, HttpMetrics, RouteLabel};
pub use nats::NatsMetrics;
pub use primitives::{AtomicHistogram, ShardedCounter};
pub use process::{ProcessCollector, ProcessStats};
pub use scraped::{ScrapedGauges, ScrapedRead};
pub use users::{ClassCounters, ClassLabels, CountedConn, NO_CLASS, UserMetrics};

/// Label: why something was counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// snake_case reason.
    pub reason: &'static str,
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
    /// Connections and deliveries by the user's class and delay.
    pub users: UserMetrics,
}

/// Histogram buckets for latencies: 10 µs to ~1.3 s, doubling (18 bounds,
/// then `+Inf`).
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
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("tickrelay");
        let feed = FeedMetrics::register(registry);
        let http = HttpMetrics::register(registry);
        let stream = StreamMetrics::register(registry);
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

        let nats = NatsMetrics::register(registry);
        let users = UserMetrics::register(registry);
        Metrics {
            registry: root,
            feed,
            http,
            stream,
            nats,
            users,
        }
    }

    /// Registers gauges read at scrape time.
    pub fn register_scraped(&mut self, gauges: ScrapedGauges) {
        self.registry.register_collector(Box::new(gauges));
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
