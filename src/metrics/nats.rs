//! The NATS JetStream metrics: the bridge's publisher and the relay's
//! stream line.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::*;

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
    pub(super) fn register(registry: &mut Registry) -> Self {
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
