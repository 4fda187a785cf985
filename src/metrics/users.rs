//! Connections and deliveries by the user's class and delay: what an
//! exchange's licence counts (professional or not, real time or delayed),
//! and never by user — a `sub` label would grow without bound.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::ShardedCounter;

/// The class of a client without a per-user token (anonymous, or the
/// shared `token`).
pub const NO_CLASS: &str = "none";

/// Labels: the user's class and whether it sees delayed data.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// `pro`, `nonpro`, or `none` (no per-user token).
    pub class: &'static str,
    /// `true` for a token with `delay_ms` above 0.
    pub delayed: &'static str,
}

impl ClassLabels {
    /// The labels of `class`, delayed or not.
    pub fn new(class: &'static str, delayed: bool) -> Self {
        ClassLabels {
            class,
            delayed: if delayed { "true" } else { "false" },
        }
    }
}

/// The handles of one class and delay, resolved once per connection or
/// request: counting never looks up a label.
#[derive(Clone, Debug)]
pub struct ClassCounters {
    labels: ClassLabels,
    connections: Gauge,
    deliveries: ShardedCounter,
    bytes: ShardedCounter,
}

impl ClassCounters {
    /// Counts a delivery: `messages` quotes (a stream's frame) or one answer
    /// (a snapshot or poll), of `bytes` bytes.
    #[inline]
    pub fn delivered(&self, messages: u64, bytes: u64) {
        self.deliveries.inc_by(messages);
        self.bytes.inc_by(bytes);
    }

    /// Whether these are the counters of `labels`.
    pub fn is(&self, labels: &ClassLabels) -> bool {
        self.labels == *labels
    }
}

/// One open connection counted under its class: the gauge is up while it
/// lives.
#[derive(Debug)]
pub struct CountedConn(ClassCounters);

impl CountedConn {
    /// Counts a connection under `counters` until dropped.
    pub fn open(counters: ClassCounters) -> Self {
        counters.connections.inc();
        CountedConn(counters)
    }

    /// Its class's counters.
    pub fn counters(&self) -> &ClassCounters {
        &self.0
    }
}

impl Drop for CountedConn {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// The metrics by class and delay.
#[derive(Clone, Debug)]
pub struct UserMetrics {
    connections: Family<ClassLabels, Gauge>,
    deliveries: Family<ClassLabels, ShardedCounter>,
    bytes: Family<ClassLabels, ShardedCounter>,
}

impl UserMetrics {
    /// The counters of `class` (`pro`, `nonpro` or [`NO_CLASS`]), delayed or not.
    pub fn of(&self, class: &'static str, delayed: bool) -> ClassCounters {
        self.counters(ClassLabels::new(class, delayed))
    }

    /// The counters of `labels`.
    pub fn counters(&self, labels: ClassLabels) -> ClassCounters {
        ClassCounters {
            connections: self.connections.get_or_create(&labels).clone(),
            deliveries: self.deliveries.get_or_create(&labels).clone(),
            bytes: self.bytes.get_or_create(&labels).clone(),
            labels,
        }
    }

    /// Builds them and registers them, every class and delay at zero.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = UserMetrics {
            connections: Family::default(),
            deliveries: Family::default(),
            bytes: Family::default(),
        };
        for (class, delayed) in [
            ("pro", false),
            ("pro", true),
            ("nonpro", false),
            ("nonpro", true),
            (NO_CLASS, false),
        ] {
            let _ = m.of(class, delayed);
        }
        registry.register(
            "user_connections",
            "Open connections by the user's class and delay: every connection of a per-user token (what max_connections counts), and WebSocket and SSE connections of none (no per-user token)",
            m.connections.clone(),
        );
        registry.register(
            "user_deliveries",
            "Quotes delivered on streams, and snapshot and poll answers, by the user's class and delay",
            m.deliveries.clone(),
        );
        registry.register(
            "user_delivered_bytes",
            "Bytes of those deliveries, by the user's class and delay",
            m.bytes.clone(),
        );
        m
    }
}
