//! What reaches clients: connections and subscriptions by transport,
//! frames, quotes and bytes sent, conflation, slow-client closes, refusals
//! by limit, and tick-to-write latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

use super::*;
use crate::admission::Limit;
use crate::transport::kind::{SLOW_REASONS, SlowReason, Transport};

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
    /// `trades` and `bars` frames or events written.
    pub chart_frames_sent: Family<TransportLabel, ShardedCounter>,
    /// Bytes of `trades` and `bars` frames or events written.
    pub chart_bytes_sent: Family<TransportLabel, ShardedCounter>,
    /// `book` frames, events or poll answers' books sent.
    pub book_frames_sent: Family<TransportLabel, ShardedCounter>,
    /// Bytes of those book frames.
    pub book_bytes_sent: Family<TransportLabel, ShardedCounter>,
    /// Quotes replaced by a newer one before they were sent.
    pub conflated: Counter,
    /// Fan-out rounds: batches of changes a shard fanned out, each a burst
    /// of writes (frames sent over rounds is the burst's size).
    pub fanout_rounds: Counter,
    /// Clients closed for being too slow or silent.
    pub slow_disconnects: Family<DisconnectLabels, Counter>,
    /// Exchange timestamp to socket write, per frame (its oldest quote).
    pub tick_to_write: Family<TransportLabel, AtomicHistogram>,
    /// Requests or operations refused by a limit.
    pub limit_refusals: Family<LimitLabel, Counter>,
    /// Long-poll requests waiting for a change.
    pub longpoll_waiters: Gauge,
    /// WebSocket connections with permessage-deflate.
    pub ws_deflate_connections: Gauge,
    /// Bytes held between messages by WebSocket connections' compressors
    /// and inflaters (an estimate per compressor and inflater).
    pub ws_deflate_bytes: Gauge,
    /// Compressed WebSocket messages that reused the compression of the
    /// same bytes just before on the same thread.
    pub ws_deflate_shared: Counter,
    /// Each transport's handles, made once: a connection holds one pointer.
    shared: Arc<[OnceLock<Arc<TransportCounters>>; 3]>,
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
    /// See [`StreamMetrics::chart_frames_sent`].
    pub charts: ShardedCounter,
    /// See [`StreamMetrics::chart_bytes_sent`].
    pub chart_bytes: ShardedCounter,
    /// See [`StreamMetrics::book_frames_sent`].
    pub book_frames: ShardedCounter,
    /// See [`StreamMetrics::book_bytes_sent`].
    pub book_bytes: ShardedCounter,
}

impl TransportCounters {
    /// Records `frames` book frames of `bytes` in all, written.
    pub fn count_books(&self, frames: usize, bytes: usize) {
        if frames > 0 {
            self.book_frames.inc_by(frames as u64);
            self.book_bytes.inc_by(bytes as u64);
        }
    }
}

impl StreamMetrics {
    /// Handles for one transport, made once and shared by its connections.
    pub fn transport_shared(&self, t: Transport) -> Arc<TransportCounters> {
        self.shared[t as usize]
            .get_or_init(|| Arc::new(self.transport(t)))
            .clone()
    }

    /// Handles for one transport.
    pub fn transport(&self, t: Transport) -> TransportCounters {
        let l = TransportLabel::from(t);
        TransportCounters {
            messages: self.messages_sent.get_or_create(&l).clone(),
            quotes: self.quotes_sent.get_or_create(&l).clone(),
            bytes: self.bytes_sent.get_or_create(&l).clone(),
            latency: self.tick_to_write.get_or_create(&l).clone(),
            charts: self.chart_frames_sent.get_or_create(&l).clone(),
            chart_bytes: self.chart_bytes_sent.get_or_create(&l).clone(),
            book_frames: self.book_frames_sent.get_or_create(&l).clone(),
            book_bytes: self.book_bytes_sent.get_or_create(&l).clone(),
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

impl StreamMetrics {
    /// Builds the delivery metrics and registers them, known label sets at zero.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let stream = StreamMetrics {
            clients: Family::default(),
            subscriptions: Family::default(),
            wildcard_subscriptions: Gauge::default(),
            messages_sent: Family::default(),
            quotes_sent: Family::default(),
            bytes_sent: Family::default(),
            chart_frames_sent: Family::default(),
            chart_bytes_sent: Family::default(),
            book_frames_sent: Family::default(),
            book_bytes_sent: Family::default(),
            conflated: Counter::default(),
            fanout_rounds: Counter::default(),
            slow_disconnects: Family::default(),
            tick_to_write: Family::new_with_constructor(|| AtomicHistogram::new(latency_buckets())),
            limit_refusals: Family::default(),
            longpoll_waiters: Gauge::default(),
            ws_deflate_connections: Gauge::default(),
            ws_deflate_bytes: Gauge::default(),
            ws_deflate_shared: Counter::default(),
            shared: Arc::default(),
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
            "chart_frames_sent",
            "Trades and bars frames or events written, by transport",
            stream.chart_frames_sent.clone(),
        );
        registry.register(
            "chart_bytes_sent",
            "Bytes of trades and bars frames or events written, by transport",
            stream.chart_bytes_sent.clone(),
        );
        registry.register(
            "book_frames_sent",
            "Depth-of-book frames sent (WebSocket frames, SSE events, books in poll answers), by transport",
            stream.book_frames_sent.clone(),
        );
        registry.register(
            "book_bytes_sent",
            "Bytes of the depth-of-book frames sent, by transport",
            stream.book_bytes_sent.clone(),
        );
        registry.register(
            "quotes_conflated",
            "Quotes replaced by a newer one before they were sent",
            stream.conflated.clone(),
        );
        registry.register(
            "fanout_rounds",
            "Batches of changes the fan-out shards fanned out, each a burst of writes",
            stream.fanout_rounds.clone(),
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
        registry.register(
            "ws_deflate_connections",
            "WebSocket connections with permessage-deflate negotiated",
            stream.ws_deflate_connections.clone(),
        );
        registry.register(
            "ws_deflate_bytes",
            "Bytes held between messages by WebSocket compressors and inflaters (estimated)",
            stream.ws_deflate_bytes.clone(),
        );
        registry.register(
            "ws_deflate_shared_messages",
            "Compressed WebSocket messages that reused the compression of the same bytes",
            stream.ws_deflate_shared.clone(),
        );

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

        stream
    }
}
