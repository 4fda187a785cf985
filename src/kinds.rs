//! The small shared kinds: which transport a client uses, why one was
//! closed, which limit refused something, the feed's status and why a
//! message was dropped.
//!
//! A leaf: it depends on nothing else in the crate. `metrics`, `feed`,
//! `fanout`, `limits` and the transports all name these, so none of them
//! has to import another for a label (docs/ARCHITECTURE.md, "Modules").

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

/// Health of the feed as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedStatus {
    /// Packets (or heartbeats) arriving, no gap open.
    Live,
    /// Nothing heard for longer than the stale timeout (or never).
    Stale,
    /// The table lacks state it is rebuilding (a late join, a new session
    /// joined mid-way, a loss beyond repair), or a gap is open and later
    /// packets are held while it is repaired.
    Recovering,
}

impl FeedStatus {
    /// Every status, for the one-hot status gauge.
    pub const ALL: [FeedStatus; 3] = [FeedStatus::Live, FeedStatus::Stale, FeedStatus::Recovering];

    /// `live`, `stale` or `recovering`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedStatus::Live => "live",
            FeedStatus::Stale => "stale",
            FeedStatus::Recovering => "recovering",
        }
    }
}

/// Why a well-formed message was dropped: the `reason` label of
/// `tickrelay_feed_dropped_messages_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A message for a locate the directory has not listed.
    UnknownLocate,
    /// A packet of an older session.
    StaleSession,
    /// A packet of a new session not yet believed (docs/FEED.md).
    UnconfirmedSession,
}

impl DropReason {
    /// Every reason, for pre-creating the series.
    pub const ALL: [DropReason; 3] = [
        DropReason::UnknownLocate,
        DropReason::StaleSession,
        DropReason::UnconfirmedSession,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownLocate => "unknown_locate",
            DropReason::StaleSession => "stale_session",
            DropReason::UnconfirmedSession => "unconfirmed_session",
        }
    }
}
