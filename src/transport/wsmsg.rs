//! The WebSocket server's messages other than quotes (`subscribed`, `feed`,
//! `pong`, `error`, `shutdown`; docs/PROTOCOL.md, "Envelopes"), shared by
//! the connection's task (`ws`) and the write side the sweep uses
//! (`writer`), which sends the `feed` frame after a session reset.

use std::sync::Arc;

use serde::Serialize;

use crate::feed::FeedState;

/// A server frame other than `snapshot` and `ticks`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ServerFrame<'a> {
    Subscribed {
        /// `book` for a book subscription (absent for quotes).
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        symbols: &'a [Arc<str>],
        unknown: &'a [String],
        /// Symbols outside the user's entitlements: nothing is sent for them.
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        denied: &'a [String],
    },
    /// Symbols dropped from the subscription (a refreshed token no longer
    /// allows them).
    Unsubscribed {
        symbols: &'a [Arc<str>],
        reason: &'a str,
    },
    /// The token expires in `in_ms`: send a fresh one (`{"op":"auth"}`).
    #[serde(rename = "auth_expiring")]
    AuthExpiring {
        in_ms: u64,
    },
    /// A fresh token was accepted; it expires then (ms since the epoch).
    Authorized {
        expires_ms: Option<u64>,
    },
    Feed {
        status: &'a str,
        session: &'a str,
        /// Whether every symbol's state is whole (false while recovering).
        complete: bool,
        /// Messages of this session lost beyond gap repair.
        lost: u64,
        /// Symbols that may lack changes the relay missed.
        incomplete: u32,
    },
    Pong,
    Error {
        code: &'a str,
        message: &'a str,
    },
    Shutdown {
        reconnect_ms: u64,
    },
}

/// The `feed` frame of a feed state: status, session and recovery.
pub(crate) fn feed_frame(feed: &FeedState) -> ServerFrame<'_> {
    ServerFrame::Feed {
        status: feed.status.as_str(),
        session: feed.session.as_str(),
        complete: feed.complete,
        lost: feed.lost,
        incomplete: feed.incomplete,
    }
}
