//! Beyond one multicast domain: the feed carried through a NATS JetStream
//! stream (docs/SCALING.md, docs/ARCHITECTURE.md "NATS JetStream").
//!
//! Two halves, both tasks on the main runtime that talk to the ingest
//! thread through bounded channels, so the ingest path never waits on NATS:
//!
//! - the **publisher** (`tickrelay bridge`): the ingest's sequencer forwards
//!   every datagram that moved the feed on (the sequencer's
//!   `Sink::forward`, in `feed`); each is published unchanged
//!   to `STREAM.feed.SESSION`, a data packet with `Nats-Msg-Id` =
//!   `SESSION:SEQ` of its first message, so two bridges on one feed store it
//!   once. Heartbeats carry the session's horizon and go out without an id.
//! - the **line** (`tickrelay serve --nats`): an ordered consumer hands the
//!   stored packets to the ingest as one more feed line, arbitrated by
//!   sequence like line B. A late joiner replays the current session from its
//!   first stream sequence; a reconnect resumes after the last stream
//!   sequence seen; a retransmission request is answered from the stream by
//!   the feed → stream sequence map learned as packets arrive.
//!
//! Malformed payloads are not this module's business: the ingest counts and
//! drops them like a bad datagram.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::NatsMetrics;
use crate::wire::{Packet, PacketKind, Session};

mod line;
mod publisher;

pub use line::{Line, NatsPacket, spawn_line};
pub use publisher::{Forward, spawn_publisher};

/// Where the stream lives: a NATS server and a JetStream stream name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTarget {
    /// Server URL, `nats://HOST:PORT` (or `HOST:PORT`).
    pub url: String,
    /// Stream name: letters, digits, `-` and `_`.
    pub stream: String,
}

/// Whether `name` may name a JetStream stream (and a subject token).
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The subject a session's packets are published on: `STREAM.feed.SESSION`,
/// the session with anything that is not a letter, digit, `-` or `_` as `_`.
pub fn subject(stream: &str, session: Session) -> String {
    let mut s = format!("{stream}.feed.");
    let id = session.as_str();
    if id.is_empty() {
        s.push('_');
    }
    s.extend(id.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        }
    }));
    s
}

/// The `Nats-Msg-Id` of a datagram: `SESSION:SEQ` for a data packet,
/// `SESSION:end` for the end of session, none for a heartbeat (they repeat
/// the same sequence while the feed is idle, and each one is news).
pub fn msg_id(packet: &Packet<'_>) -> Option<String> {
    match packet.kind {
        PacketKind::Data => Some(format!("{}:{}", packet.session, packet.seq)),
        PacketKind::EndOfSession => Some(format!("{}:end", packet.session)),
        PacketKind::Heartbeat => None,
    }
}

/// The stream both halves create when it is missing: file storage, every
/// session's subject, duplicates caught for two minutes.
pub fn stream_config(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.feed.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Connects, retrying forever in the background (the server may start
/// later or restart); logs connects and disconnects.
async fn connect(
    url: &str,
    name: &'static str,
    metrics: &NatsMetrics,
    reconnected: Option<Arc<Notify>>,
) -> Option<async_nats::Client> {
    let m = metrics.clone();
    let url_log = url.to_owned();
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).min(1_000))
        })
        .event_callback(move |event| {
            let m = m.clone();
            let url = url_log.clone();
            let reconnected = reconnected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        m.connected.set(1);
                        if m.connects.inc() > 0
                            && let Some(n) = reconnected
                        {
                            n.notify_one();
                        }
                        tracing::info!(%url, "NATS connected");
                    }
                    async_nats::Event::Disconnected => {
                        m.connected.set(0);
                        tracing::warn!(%url, "NATS disconnected; reconnecting");
                    }
                    other => tracing::info!(%url, event = %other, "NATS event"),
                }
            }
        });
    match options.connect(url).await {
        Ok(c) => {
            // retry_on_initial_connect returns before the first connect.
            Some(c)
        }
        Err(e) => {
            tracing::error!(%url, error = %e, "cannot use the NATS URL (setting nats)");
            None
        }
    }
}

/// Gets the stream, creating it when missing; retries until cancelled.
async fn open_stream(
    js: &jetstream::Context,
    name: &str,
    cancel: &CancellationToken,
) -> Option<stream::Stream> {
    loop {
        match js.get_or_create_stream(stream_config(name)).await {
            Ok(s) => {
                tracing::info!(stream = name, "JetStream stream ready");
                return Some(s);
            }
            Err(e) => {
                tracing::warn!(stream = name, error = %e, "JetStream stream not ready; retrying")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
