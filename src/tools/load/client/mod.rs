//! One client's life: connect, subscribe, read until cancelled or closed.
//! One module per client kind, each the same shape — an `async fn` that
//! takes an open connection and returns why it ended:
//!
//! | module | client |
//! |---|---|
//! | `ws` | WebSocket (JSON, MessagePack, nchan), tokio-tungstenite |
//! | `wsdeflate` | WebSocket with permessage-deflate (`--deflate`), its own frames |
//! | `sse` | Server-Sent Events (the relay's and nchan's), hyper |
//! | `poll` | long polling with `since`, hyper |
//! | `snapshot` | short polling with `If-None-Match`, hyper |

mod poll;
mod snapshot;
mod sse;
mod ws;
mod wsdeflate;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::args::LoadTransport;
use super::conn::{Conn, connect};
use super::stats::Shared;
use crate::tools::tap::Counted;

/// One client: connect, subscribe, read until cancelled or closed.
pub(super) async fn client(shared: Arc<Shared>, id: usize, symbols: Vec<String>) {
    let stream = match connect(&shared.target, shared.args.source_ips, id).await {
        Ok(s) => s,
        Err(kind) => {
            shared.error(kind);
            shared.settled.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    shared.open.fetch_add(1, Ordering::Relaxed);
    let mut setup = Setup {
        shared: &shared,
        done: false,
    };
    let cancel = shared.cancel.clone();
    let run = async {
        match &shared.tap {
            Some(tap) => {
                let stream = Counted::new(stream, tap.client(id));
                serve(&shared, id, stream, &symbols, &mut setup).await
            }
            None => serve(&shared, id, stream, &symbols, &mut setup).await,
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        end = run => {
            if let Err(kind) = end {
                if setup.done { shared.closed(kind) } else { shared.error(kind) }
            }
        }
    }
    shared.open.fetch_sub(1, Ordering::Relaxed);
    if !setup.done {
        shared.settled.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the client of the chosen transport on an open connection.
async fn serve<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    match shared.args.transport {
        LoadTransport::Ws | LoadTransport::WsMsgpack | LoadTransport::NchanWs => {
            ws::client(shared, id, stream, symbols, setup).await
        }
        LoadTransport::Sse | LoadTransport::NchanSse => {
            sse::client(shared, id, stream, symbols, setup).await
        }
        LoadTransport::Poll => poll::client(shared, id, stream, symbols, setup).await,
        LoadTransport::Snapshot => snapshot::client(shared, id, stream, symbols, setup).await,
    }
}

/// Marks a client ready once, on its first data.
pub(super) struct Setup<'a> {
    shared: &'a Shared,
    pub(super) done: bool,
}

impl Setup<'_> {
    pub(super) fn ready(&mut self) {
        if !self.done {
            self.done = true;
            self.shared.ready.fetch_add(1, Ordering::Relaxed);
            self.shared.settled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type ClientEnd = Result<(), String>;

/// The envelope of a poll answer or snapshot, decoded in full (one per
/// request, so cheap next to a stream).
#[derive(Deserialize)]
struct Answer {
    seq: u64,
    session: String,
    #[serde(default)]
    quotes: Vec<AnswerQuote>,
}

#[derive(Deserialize)]
struct AnswerQuote {
    symbol: String,
    seq: u64,
    ts: u64,
}
