//! Which transport a client uses and why one was closed as slow.
//!
//! A leaf: it imports nothing of the crate, so `metrics` and `fanout` can
//! label by these without depending on the transports
//! (tests/architecture.rs lists the leaves).

/// Transport of a client, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// Long polling.
    Poll,
}

impl Transport {
    /// Every transport, for pre-creating metric series.
    pub const ALL: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
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
pub const SLOW_REASONS: [(Transport, SlowReason); 5] = [
    (Transport::Ws, SlowReason::QueueOverflow),
    (Transport::Ws, SlowReason::WriteTimeout),
    (Transport::Ws, SlowReason::NoPong),
    (Transport::Sse, SlowReason::QueueOverflow),
    (Transport::Sse, SlowReason::WriteTimeout),
];
