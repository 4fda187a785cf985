//! Server-Sent Events `/v1/stream?symbols=…`: a `snapshot` event, then one
//! `tick` event per wake-up carrying every pending quote, `feed` events on
//! status changes, keep-alive comments. Each event's `id:` is `SESSION:SEQ`
//! (the feed's sequence, not a per-process counter), so a reconnect with
//! `Last-Event-ID` resumes on this relay or any other reading the same feed:
//! it gets only the symbols changed since, with their newest quote.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use tokio::sync::watch;

use crate::accept::{RawConn, Upgrade};
use crate::admission::ConnGuard;
use crate::api::{ApiError, AppState, Door, close};
use crate::fanout::{Client, envelope};
use crate::feed::FeedState;
use crate::metrics::TransportCounters;
use crate::table::BookFrame;
use crate::transport::bookstream::{self, requested_books};
use crate::transport::chartstream::{ChartFrame, requested_charts};
use crate::transport::kind::{SlowReason, Transport};
use crate::transport::slow::{self, SlowSignal, linger, read_gone, write_all};
use crate::transport::subscriptions::{
    Batch, Subscriptions, acquire, batch_window, requested_locates, resume_point, sub_options,
};
use crate::transport::task::{Pacers, Protocol, Step, Task};
use crate::transport::user::{ConnUser, Ending, Expiry, TOKEN_EXPIRED};
use crate::transport::writer::{
    Direct, Event, Framing, Slot, StreamClient, Verdict, WriteSide, sse_head,
};

/// Query of `/v1/stream`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Comma-separated tickers; every symbol when absent (if allowed).
    pub symbols: Option<String>,
    /// Resume point, for clients that cannot set `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// Bearer token, for EventSource (which cannot set headers).
    pub token: Option<String>,
    /// `conflate` (default) or `every`.
    pub mode: Option<String>,
    /// Most updates per second per symbol.
    pub max_hz: Option<f64>,
    /// Gather changes for up to this long into one event (0–1000 ms).
    pub batch_ms: Option<u64>,
    /// `1`: quotes after the snapshot carry only what changed.
    pub delta: Option<u8>,
    /// Comma-separated tickers whose books to stream (`book` events).
    pub book: Option<String>,
    /// Levels a side of those books, 1–50 (default 10).
    pub depth: Option<String>,
    /// Comma-separated tickers whose trades to stream (`trades` events).
    pub trades: Option<String>,
    /// Comma-separated tickers whose bars to stream (`bars` events).
    pub bars: Option<String>,
    /// Those bars' interval: `1s`, `1m` (default), `5m`, `15m` or `1h`.
    pub interval: Option<String>,
    /// Trades or bars of history in their first events (default 0).
    pub history: Option<String>,
    /// Trades: resume after this trade sequence (or `SESSION:SEQ`).
    pub since: Option<String>,
}

/// `GET /v1/stream`.
// Each argument is an axum extractor for one concern; a struct of them
// would only hide the list.
#[allow(clippy::too_many_arguments)]
pub async fn handler(
    door: Door,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<StreamQuery>,
    raw: Option<Extension<RawConn>>,
    slow: Option<Extension<SlowSignal>>,
    Extension(pacers): Extension<Pacers>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let policy = &state.config.policy;
    let identity = &door.identity;
    let opts = sub_options(q.mode.as_deref(), identity.rights.cap_hz(q.max_hz))?
        .with_delta(q.delta == Some(1));
    let batch = batch_window(q.batch_ms)?;
    let books = requested_books(&state, identity, q.book.as_deref(), q.depth.as_deref())?;
    let charts = requested_charts(
        &state,
        identity,
        q.trades.as_deref(),
        q.bars.as_deref(),
        q.interval.as_deref(),
        q.history.as_deref(),
        q.since.as_deref(),
    )?;
    // Books or charts alone when only they are given: no quotes of every symbol.
    let quotes_asked = q.symbols.is_some() || (books.is_none() && charts.is_none());
    let located = match quotes_asked {
        true => requested_locates(&state, identity, q.symbols.as_deref())?,
        false => Some(Vec::new()),
    };
    let symbols: Option<Vec<Arc<str>>> = located.map(|locates| {
        locates
            .iter()
            .filter_map(|&l| state.table.info(l))
            .map(|i| i.symbol.clone())
            .collect()
    });
    let guard = acquire(&state, peer.ip())?;
    let user = ConnUser::admit(&state, identity.clone(), "sse")?;
    if let Some(u) = &user {
        let all: [Arc<str>; 1] = [Arc::from("*")];
        u.saw_symbols(symbols.as_deref().unwrap_or(&all));
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.last_event_id);

    // Served off hyper (`accept`), the fan-out writes the events: the write
    // side will live in the client's slot. Through hyper, a task does.
    let (every, delay) = (policy.every_queue, identity.rights.delay_ms);
    let (client, direct): (Arc<Client>, _) = match raw.is_some() {
        true => {
            let c = (state.hub).register_with(Transport::Sse, every, delay, Slot::default());
            (c.clone(), Some(c))
        }
        false => (
            (state.hub).register_delayed(Transport::Sse, every, delay),
            None,
        ),
    };
    let mut subs = Subscriptions::new(state.hub.clone(), Arc::downgrade(&client));
    subs.set_batch(batch);
    let session = state.table.session();
    let since = subs.resume_from(resume_point(resume.as_deref(), session));
    let (seq, quotes) = match &symbols {
        Some(list) => subs.subscribe(list, opts, since),
        None => subs.subscribe_all(opts, since),
    };
    let book_frames = books.map_or_else(Vec::new, |b| subs.subscribe_books(&b.names, b.depth));
    let mut first = BytesMut::with_capacity(256);
    first.extend_from_slice(format!("retry: {}\n\n", policy.sse_retry.as_millis()).as_bytes());
    // A resume gets the changed symbols as a tick; anything else a snapshot.
    let data = if since.is_some() {
        envelope::tick_json(seq, &quotes)
    } else {
        envelope::snapshot_json(seq, session.as_str(), &quotes)
    };
    if since.is_none() || !quotes.is_empty() {
        event(
            &mut first,
            if since.is_some() { "tick" } else { "snapshot" },
            session.as_str(),
            seq,
            &data,
        );
    }
    let books_at = first.len();
    first.extend_from_slice(&book_events(&book_frames));
    let counters = state.hub.metrics.transport(Transport::Sse);
    counters.count_books(book_frames.len(), first.len() - books_at);
    if let Some(c) = charts {
        let mut frames = subs.subscribe_trades(&c.trades, c.since, policy.every_queue);
        frames.extend(subs.subscribe_bars(&c.bars, c.interval, c.bar_history));
        let events = chart_events(&frames);
        count_charts(&counters, &frames, events.len());
        first.extend_from_slice(&events);
    }
    Subscriptions::count(
        &counters,
        &Batch {
            seq,
            quotes,
            ..Default::default()
        },
        first.len(),
    );

    let head = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ];
    if let Some(client) = direct {
        let first = first.freeze();
        let mut response = head.into_response();
        response.extensions_mut().insert(Upgrade::new(move |tcp| {
            let tracker = state.tracker.clone();
            let stream = DirectStream::start(state, tcp, (client, subs), first, guard, user);
            pacers.sse.add(stream.direct.client());
            // Its own task (`transport::task`), spawned as it is.
            tracker.spawn(Task::new(stream));
        }));
        return Ok(response);
    }
    let mut feed = state.feed.clone();
    feed.mark_unchanged();
    // Listed for the operator, who may end it, as a raw stream is.
    let ending = user.as_deref().map(|u| Ending::attach(u, subs.symbols()));
    let stream = SseStream {
        keepalive: policy.keepalive,
        reconnect_ms: policy.reconnect.as_millis() as u64,
        cancel: state.cancel.clone(),
        state: state.clone(),
        subs,
        client,
        counters,
        feed,
        first: Some(first.freeze()),
        done: false,
        held: None,
        slow: slow.map(|Extension(s)| s),
        told: false,
        user,
        ending,
        _guard: guard,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), s))
    }));
    Ok((head, body).into_response())
}

/// `book` events of `frames`, one after another.
fn book_events(frames: &[BookFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        bookstream::sse_into(&mut out, f);
    }
    out
}

/// `trades` and `bars` events of `frames`, one after another.
fn chart_events(frames: &[ChartFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.sse_into(&mut out);
    }
    out
}

/// Records chart events written in the transport's metrics.
fn count_charts(counters: &TransportCounters, frames: &[ChartFrame], bytes: usize) {
    if !frames.is_empty() {
        counters.charts.inc_by(frames.len() as u64);
        counters.chart_bytes.inc_by(bytes as u64);
    }
}

/// Appends one event. `data` is single-line JSON.
fn event(out: &mut BytesMut, name: &str, session: &str, seq: u64, data: &[u8]) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(session.as_bytes());
    out.put_u8(b':');
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

struct SseStream {
    state: AppState,
    subs: Subscriptions,
    /// The hub's client (the subscriptions' owner).
    client: Arc<Client>,
    counters: TransportCounters,
    feed: watch::Receiver<FeedState>,
    keepalive: Duration,
    reconnect_ms: u64,
    cancel: tokio_util::sync::CancellationToken,
    first: Option<Bytes>,
    done: bool,
    /// With `batch_ms`: changes are pending but the next event is due then.
    held: Option<Instant>,
    /// Raised by the connection's socket at the write timeout.
    slow: Option<SlowSignal>,
    /// The stream ended with the write timeout's error event.
    told: bool,
    /// The client's user, when it came with a per-user token.
    user: Option<Arc<ConnUser>>,
    /// Where an operator's end arrives (with a user).
    ending: Option<Arc<Ending>>,
    _guard: ConnGuard,
}

impl SseStream {
    /// The next write: one chunk per wake-up. `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.done {
            if self.told
                && let Some(slow) = &self.slow
            {
                // The error event is buffered and the body ends now: the
                // connection closes once they are written.
                slow.told();
            }
            return None;
        }
        let deadline = Instant::now() + self.keepalive;
        loop {
            let held = self.held;
            let due = held.or(self.subs.next_due);
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    self.done = true;
                    let mut out = BytesMut::new();
                    let data = format!("{{\"reconnect_ms\":{}}}", self.reconnect_ms);
                    event(&mut out, "shutdown", self.state.table.session().as_str(), self.subs.promised, data.as_bytes());
                    return Some(out.freeze());
                }
                // Counted and logged by the socket (`slow::TimedIo`), which
                // made room for this last event.
                _ = raised(self.slow.as_ref()) => {
                    self.told = true;
                    return Some(self.error_event(slow::WRITE_TIMEOUT));
                }
                _ = expires(self.user.as_deref()) => {
                    if self.user.as_ref().is_some_and(|u| u.expiry() == Expiry::Expired) {
                        return Some(self.end_event(close::UNAUTHORIZED, TOKEN_EXPIRED));
                    }
                }
                (code, reason) = ended(self.ending.as_deref()) => {
                    return Some(self.end_event(code, &reason));
                }
                _ = self.client.wait(), if held.is_none() => {
                    if let Some(chunk) = self.ticks() { return Some(chunk); }
                }
                _ = sleep_until(due) => {
                    self.held = None;
                    if let Some(chunk) = self.ticks() { return Some(chunk); }
                }
                changed = self.feed.changed() => {
                    if changed.is_ok() {
                        return Some(self.feed_event());
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return Some(Bytes::from_static(b": keepalive\n\n"));
                }
            }
        }
    }

    fn ticks(&mut self) -> Option<Bytes> {
        // With batch_ms, an event went out less than a window ago: gather.
        if let Some(at) = self.subs.hold_until(Instant::now()) {
            self.held = Some(at);
            return None;
        }
        let batch = self.subs.drain();
        let session = self.state.table.session();
        if batch.overflow {
            self.state
                .hub
                .metrics
                .slow(Transport::Sse, SlowReason::QueueOverflow);
            tracing::info!("sse client closed: every-mode queue overflow");
            let reason = batch.lagged.clone().unwrap_or_else(|| {
                format!(
                    "slow consumer: every-mode queue over {} (setting every_queue)",
                    self.state.config.policy.every_queue
                )
            });
            return Some(self.error_event(&reason));
        }
        let mut out = BytesMut::new();
        if batch.reset.is_some() {
            out.extend_from_slice(&self.feed_event());
        }
        if !batch.quotes.is_empty() {
            let data = envelope::tick_json(batch.seq, &batch.quotes);
            event(&mut out, "tick", session.as_str(), batch.seq, &data);
            Subscriptions::count(&self.counters, &batch, out.len());
        }
        let books_at = out.len();
        out.extend_from_slice(&book_events(&batch.books));
        self.counters
            .count_books(batch.books.len(), out.len() - books_at);
        let events = chart_events(&batch.charts);
        count_charts(&self.counters, &batch.charts, events.len());
        out.extend_from_slice(&events);
        (!out.is_empty()).then(|| out.freeze())
    }

    /// The last event of a slow client's stream (4008's twin); the stream
    /// ends after it.
    fn error_event(&mut self, reason: &str) -> Bytes {
        self.end_event(close::SLOW_CONSUMER, reason)
    }

    /// The last event, the `error` twin of close `code`; the stream ends.
    fn end_event(&mut self, code: u16, reason: &str) -> Bytes {
        self.done = true;
        let mut out = BytesMut::new();
        let data = slow::error_data(code, reason);
        event(
            &mut out,
            "error",
            self.state.table.session().as_str(),
            self.subs.promised,
            data.as_bytes(),
        );
        out.freeze()
    }

    fn feed_event(&mut self) -> Bytes {
        let feed = *self.feed.borrow_and_update();
        let mut out = BytesMut::new();
        let data = serde_json::json!({
            "status": feed.status.as_str(),
            "session": feed.session.as_str(),
            "complete": feed.complete,
            "lost": feed.lost,
            "incomplete": feed.incomplete,
        });
        event(
            &mut out,
            "feed",
            feed.session.as_str(),
            self.subs.promised,
            data.to_string().as_bytes(),
        );
        out.freeze()
    }
}

/// Resolves at `user`'s token's `exp`; never without one.
async fn expires(user: Option<&ConnUser>) {
    match user.and_then(|u| u.identity().expires_ms) {
        Some(exp) => {
            let wait = exp.saturating_sub(crate::clock::now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves with an operator's end; never without a user.
async fn ended(ending: Option<&Ending>) -> (u16, String) {
    match ending {
        Some(e) => e.ended().await,
        None => std::future::pending().await,
    }
}

/// Resolves once `slow` is raised; never without one.
async fn raised(slow: Option<&SlowSignal>) {
    match slow {
        Some(slow) => slow.raised().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// An SSE stream whose `tick` events the fan-out writes from its sweep
/// (`transport::writer`). Its task writes feed status, keep-alives and the
/// shutdown notice, finishes writes that would block, and notices the client
/// going away.
struct DirectStream {
    direct: Direct,
    feed: watch::Receiver<FeedState>,
    _guard: ConnGuard,
}

impl Drop for DirectStream {
    fn drop(&mut self) {
        self.direct.unregister();
    }
}

impl DirectStream {
    /// Writes the first event and hands the client to the sweep.
    fn start(
        state: AppState,
        tcp: tokio::net::TcpStream,
        (client, subs): (Arc<StreamClient>, Subscriptions),
        first: Bytes,
        guard: ConnGuard,
        user: Option<Arc<ConnUser>>,
    ) -> Self {
        let mut feed = state.feed.clone();
        feed.mark_unchanged();
        let side = WriteSide::new(state, tcp, Framing::Sse, subs, user);
        // Consumed here: the first event's buffer is not kept for the
        // connection's life. Written before the sweep knows the client.
        let mut out = Vec::from(first);
        side.seal(&mut out, 0);
        side.write(&mut side.lock(), &out);
        let direct = Direct::install(client, side);
        direct.watch_user();
        // Changes marked before the sweep knew this client.
        direct.flush_if_idle(false);
        DirectStream {
            direct,
            feed,
            _guard: guard,
        }
    }

    fn policy(&self) -> &crate::config::ClientPolicy {
        &self.direct.state.config.policy
    }

    /// Writes the last event (and the end of the body), then lingers.
    fn last(&self, last: Vec<u8>) -> Step {
        let linger_for = self.policy().write_timeout.min(Duration::from_secs(5));
        let direct = self.direct.clone();
        Step::Last(Box::pin(async move {
            let tcp = &direct.tcp;
            let ended = tokio::time::timeout(linger_for, write_all(tcp, &last)).await;
            if matches!(ended, Ok(Ok(()))) {
                let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
                linger(tcp, linger_for).await;
            }
        }))
    }
}

impl Protocol for DirectStream {
    fn parts(&mut self) -> (&WriteSide, &mut watch::Receiver<FeedState>) {
        (&self.direct, &mut self.feed)
    }

    fn on_event(&mut self, event: Event) -> Step {
        let direct = &self.direct;
        match event {
            Event::Shutdown => {
                let reconnect = self.policy().reconnect.as_millis();
                let data = format!("{{\"reconnect_ms\":{reconnect}}}");
                return self.last(final_event(direct, "shutdown", data.as_bytes()));
            }
            Event::Writable(ok) => {
                if !ok || !direct.resume() {
                    return Step::End;
                }
            }
            // A client sends nothing after its request: bytes are ignored.
            Event::Readable(ok) => {
                if !ok || read_gone(&direct.tcp) {
                    return Step::End;
                }
            }
            Event::Woken => {
                if direct.user().is_some_and(|u| u.expiry() == Expiry::Expired) {
                    let data = slow::error_data(close::UNAUTHORIZED, TOKEN_EXPIRED);
                    return self.last(final_event(direct, "error", data.as_bytes()));
                }
                direct.flush_if_idle(false);
            }
            Event::Feed => {
                self.feed.borrow_and_update();
                let mut w = direct.lock();
                let mut out = Vec::new();
                direct.feed_payload(&mut out, w.subs.promised);
                direct.seal(&mut out, 0);
                direct.write(&mut w, &out);
            }
            Event::Due => direct.on_timer(Instant::now()),
            Event::Beat => {
                let mut out = b": keepalive\n\n".to_vec();
                direct.seal(&mut out, 0);
                direct.write(&mut direct.lock(), &out);
            }
        }
        Step::Continue
    }

    fn on_verdict(&mut self, verdict: Verdict) -> Step {
        match verdict {
            Verdict::Stop => Step::End,
            Verdict::Close(code, reason) => {
                let data = slow::error_data(code, &reason);
                self.last(final_event(&self.direct, "error", data.as_bytes()))
            }
        }
    }
}

/// The last event (`error`, `shutdown`) and the end of the chunked body,
/// after anything still waiting; the sweep writes nothing more.
fn final_event(direct: &WriteSide, name: &str, data: &[u8]) -> Vec<u8> {
    let promised = direct.lock().subs.promised;
    let mut out = Vec::new();
    sse_head(
        &mut out,
        name,
        direct.state.table.session().as_str(),
        promised,
    );
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    direct.seal(&mut out, 0);
    out.extend_from_slice(b"0\r\n\r\n");
    direct.finish(&out)
}

#[cfg(test)]
mod sizes {
    use super::*;

    /// What every idle streaming connection holds in its task and write
    /// side (docs/BENCHMARKS.md, "Idle connections"): a guard against it
    /// growing unnoticed. A task is spawned as it is: tokio's task cell adds
    /// 112 bytes (with the task tracker's token) and rounds up to 128 on
    /// x86_64, so a task of up to 144 bytes is a cell of 256. The WebSocket
    /// task is 136: what only some connections use is boxed (a fragmented
    /// message in progress, permessage-deflate's reader state, the last
    /// write), and its clocks are 32-bit milliseconds
    /// (`admission::millis`) with the operation rate's figures read from
    /// the policy; at 248 bytes it took a 384-byte cell.
    #[test]
    fn idle_connection_state_stays_small() {
        let sse = std::mem::size_of::<Task<DirectStream>>();
        let ws = crate::transport::ws::task_size();
        let direct = std::mem::size_of::<WriteSide>();
        let head = std::mem::size_of::<crate::fanout::Client<()>>();
        let client = std::mem::size_of::<StreamClient>();
        eprintln!(
            "sse task {sse} B, ws task {ws} B, WriteSide {direct} B, client head {head} B, \
             streaming client {client} B"
        );
        assert!(sse <= 80 && ws <= 144, "sse {sse}, ws {ws}");
        // WriteSide: 352 with where deliveries are counted (two words: the
        // user of a per-user token, or the class `none`), the book
        // subscriptions (an empty list), the transport's counters behind one
        // shared pointer, the weak reference to its client (two words: its
        // tail is a trait object), and one empty pointer each for what only
        // some connections use: permessage-deflate, trades and bars, `*`,
        // `batch_ms`, the verdict that ends it. A drain's marks are a
        // per-thread buffer, not a per-client one. The client's head: 136
        // with the delayed position (one pointer, empty for a real-time
        // client; `every_limit` beside `transport`, no padding); a long
        // poll's `Notify` is its tail, not the head's. A streaming client is
        // both in one block (the write side in its slot): 496 bytes, with the
        // `Arc`'s two counts 512, jemalloc's 512-byte class (at 513 it takes
        // 640).
        assert!(
            direct <= 352 && head <= 136 && client + 16 <= 512,
            "WriteSide {direct}, client head {head}, streaming client {client}"
        );
    }
}
