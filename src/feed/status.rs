//! The feed's health as clients see it, and why a message was dropped.
//!
//! A leaf: it imports nothing of the crate, so `metrics` and `http` can
//! name these without depending on the rest of `feed`
//! (tests/architecture.rs lists the leaves).

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
