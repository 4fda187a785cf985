//! Long polling `GET /v1/poll?symbols=…&since=SESSION:SEQ&timeout_ms=T`.
//!
//! Answers at once with the newest quote of each requested symbol changed
//! after `since` (all of them when `since` is absent or names another
//! session); otherwise parks the request as a hub client until one of them
//! changes — woken by the fan-out, never by re-reading the table on a timer —
//! or the timeout passes, then answers with an empty list. A client that
//! goes away drops the parked future, and with it the waiter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use crate::api::{ApiError, AppState, Door, Encoding, ErrorCode};
use crate::clock::now_ms;
use crate::fanout::{At, Encoded, Format, envelope};
use crate::table::BookFrame;
use crate::transport::bookstream::{BookRequest, append_books, requested_books};
use crate::transport::kind::Transport;
use crate::transport::subscriptions::{
    Batch, SubOptions, Subscriptions, acquire, batch_window, parse_resume, requested_locates,
    resumable,
};
use crate::transport::user::ConnUser;
use crate::wire::Locate;

/// Query of `/v1/poll`.
#[derive(Debug, Deserialize)]
pub struct PollQuery {
    /// Comma-separated tickers; every symbol when absent (if allowed).
    pub symbols: Option<String>,
    /// `SESSION:SEQ` from the previous answer.
    pub since: Option<String>,
    /// How long to hold the request, ms (capped by `max_poll_timeout_ms`).
    pub timeout_ms: Option<String>,
    /// Bearer token for clients that cannot set headers.
    pub token: Option<String>,
    /// After the first change, gather for up to this long (0–1000 ms).
    pub batch_ms: Option<u64>,
    /// Comma-separated tickers whose books to answer (`books`).
    pub book: Option<String>,
    /// Levels a side of those books, 1–50 (default 10).
    pub depth: Option<String>,
}

/// Decrements the waiter gauge however the request ends.
struct Waiting(prometheus_client::metrics::gauge::Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /v1/poll`.
pub async fn handler(
    door: Door,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<PollQuery>,
) -> Result<Response, ApiError> {
    let policy = &state.config.policy;
    let timeout = match q.timeout_ms.as_deref() {
        None => policy.poll_timeout,
        Some(t) => match t.parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms).min(policy.max_poll_timeout),
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::BadTimeout,
                    format!(
                        "timeout_ms `{}` is not a whole number of milliseconds",
                        t.chars().take(20).collect::<String>()
                    ),
                ));
            }
        },
    };
    let batch = batch_window(q.batch_ms)?;
    let since = match q.since.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_resume(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadSince,
                "since must be SESSION:SEQ, as returned by the previous answer",
            )
        })?),
    };
    let books = requested_books(
        &state,
        &door.identity,
        q.book.as_deref(),
        q.depth.as_deref(),
    )?;
    // Books alone when only `book` is given: no quotes of every symbol.
    let locates = if q.symbols.is_none() && books.is_some() {
        Vec::new()
    } else {
        requested_locates(&state, &door.identity, q.symbols.as_deref())?
            .unwrap_or_else(|| state.table.locates())
    };
    let books = books.as_ref();
    let enc = door.encoding;
    // A delayed user reads the delayed view, at a cutoff that moves with the clock.
    let delay = door.identity.rights.delay_ms;
    let at = state.hub.at_now(delay);
    // Another session (or none given): everything, now.
    let since_seq = match &since {
        Some((session, seq)) if session == state.table.session().as_str() => Some(*seq),
        _ => None,
    };
    let since_seq = resumable(since_seq, state.hub.seq_at(at), at);
    let Some(since_seq) = since_seq else {
        return Ok(door.delivered(answer(&state, &locates, books, None, at, enc)));
    };
    if changed_since(&state, &locates, books, since_seq, at) {
        return Ok(door.delivered(answer(&state, &locates, books, Some(since_seq), at, enc)));
    }

    // A parked request keeps only what it needs: thousands of them wait at once.
    let books = books.map(|b| BookRequest {
        locates: b.locates.clone(),
        names: b.names.clone(),
        depth: b.depth,
    });
    let books = books.as_ref();
    drop((q, since));
    let _guard = acquire(&state, peer.ip())?;
    let _user = ConnUser::admit(&state, door.identity.clone(), "poll")?;
    // A held request never outlives the token it came with.
    let timeout = match door.identity.expires_ms {
        Some(exp) => timeout.min(Duration::from_millis(exp.saturating_sub(now_ms()))),
        None => timeout,
    };
    let gauge = state.hub.metrics.longpoll_waiters.clone();
    gauge.inc();
    let _waiting = Waiting(gauge);
    let client = state.hub.register_delayed(Transport::Poll, 1, delay);
    let mut subs = Subscriptions::new(state.hub.clone(), Arc::downgrade(&client));
    // Woken by a change to a quote or a book asked for.
    let symbols: Vec<Arc<str>> = locates
        .iter()
        .chain(books.iter().flat_map(|b| &b.locates))
        .filter_map(|&l| state.table.info(l))
        .map(|i| i.symbol.clone())
        .collect();
    subs.subscribe(&symbols, SubOptions::new(false, None), None);
    let deadline = tokio::time::Instant::now() + timeout;
    let session = state.table.session();
    loop {
        // Registered first, checked second: a change in between is not missed.
        let at = state.hub.at_now(delay);
        if changed_since(&state, &locates, books, since_seq, at) || state.table.session() != session
        {
            break;
        }
        tokio::select! {
            _ = client.wait() => { let _ = client.take(); }
            _ = tokio::time::sleep_until(deadline) => break,
            _ = state.cancel.cancelled() => break,
        }
    }
    // batch_ms: a change woke the request; let the window gather more.
    if let Some(batch) = batch {
        let until = (tokio::time::Instant::now() + batch).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = state.cancel.cancelled() => {}
        }
    }
    if door.identity.expires_ms.is_some_and(|exp| now_ms() >= exp) {
        return Err(ApiError::new(
            ErrorCode::TokenExpired,
            "the token has expired",
        ));
    }
    let since_seq = (state.table.session() == session).then_some(since_seq);
    let at = state.hub.at_now(delay);
    Ok(door.delivered(answer(&state, &locates, books, since_seq, at, enc)))
}

fn changed_since(
    state: &AppState,
    locates: &[Locate],
    books: Option<&BookRequest>,
    since: u64,
    at: At,
) -> bool {
    locates.iter().any(|&l| state.hub.seq_of_at(l, at) > since)
        || books.is_some_and(|b| {
            b.locates
                .iter()
                .any(|&l| state.table.book(l, 0).is_some_and(|r| r.seq > since))
        })
}

/// The quotes of `locates` at `at` changed after `since` (all without one).
fn answer(
    state: &AppState,
    locates: &[Locate],
    books: Option<&BookRequest>,
    since: Option<u64>,
    at: At,
    enc: Encoding,
) -> Response {
    // Sequence first, quotes second: the envelope never promises more than
    // the quotes read after it hold.
    let seq = state.hub.seq_at(at);
    let session = state.table.session();
    let quotes: Vec<Arc<Encoded>> = locates
        .iter()
        .filter_map(|&l| state.hub.current_at(l, at))
        .filter(|e| since.is_none_or(|s| e.quote.seq > s))
        .collect();
    let (body, format) = match enc {
        Encoding::Json => (
            envelope::snapshot_json(seq, session.as_str(), &quotes),
            Format::Json,
        ),
        Encoding::Msgpack => (
            envelope::snapshot_msgpack(seq, session.as_str(), &quotes),
            Format::Msgpack,
        ),
    };
    let counters = state.hub.metrics.transport(Transport::Poll);
    // Books changed after `since` (all without one), each whole.
    let body = match books {
        None => body,
        Some(b) => {
            let frames: Vec<BookFrame> = b
                .locates
                .iter()
                .zip(&b.names)
                .filter_map(|(&l, name)| {
                    let read = state.table.book(l, b.depth)?;
                    let fresh = since.is_none_or(|s| read.seq > s);
                    fresh.then(|| BookFrame::snapshot(name.clone(), &read))
                })
                .collect();
            let mut body = body.to_vec();
            let at = body.len();
            append_books(&mut body, format, &frames);
            counters.count_books(frames.len(), body.len().saturating_sub(at));
            Bytes::from(body)
        }
    };
    Subscriptions::count(
        &counters,
        &Batch {
            seq,
            quotes,
            ..Default::default()
        },
        body.len(),
    );
    (
        [
            (header::CONTENT_TYPE, enc.content_type()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
