//! WebSocket `/v1/ws`: subscribe at any time; snapshot, then batched ticks.
//!
//! One task per connection runs a `select!` over the client's frames, the
//! hub's wake-up, the ping timer, feed status and shutdown. Every write has a
//! deadline; a client that cannot take a frame in time is closed (4008)
//! rather than buffered for. JSON text frames by default; the
//! `tickrelay.msgpack` subprotocol gives MessagePack binary frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::fanout::{Format, Transport, envelope};
use crate::feed::FeedState;
use crate::http::{AppState, AuthQuery, check_origin, check_token, parse_symbol_list};
use crate::limits::{ConnGuard, RateLimiter};
use crate::metrics::{Limit, SlowReason, TransportCounters};
use crate::transport::stream::{
    Batch, SubOptions, Subscriptions, batch_window, resume_point, sub_options,
};

/// Close codes (README, "Close codes").
pub mod close {
    /// Bad or missing token.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Queue overflow or write timeout.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// A limit was exceeded.
    pub const LIMIT_EXCEEDED: u16 = 4009;
    /// No pong (or anything) heard within the idle timeout.
    pub const NO_PONG: u16 = 4010;
    /// Server shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Client frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// The WebSocket subprotocol for MessagePack frames.
pub const MSGPACK_PROTOCOL: &str = "tickrelay.msgpack";
/// The WebSocket subprotocol for JSON frames (also the default).
pub const JSON_PROTOCOL: &str = "tickrelay.json";

/// A client operation.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientOp {
    /// Add symbols.
    Subscribe {
        /// Tickers, or `["*"]`.
        symbols: Vec<String>,
        /// `conflate` (default) or `every`.
        #[serde(default)]
        mode: Option<String>,
        /// Most updates per second per symbol.
        #[serde(default)]
        max_hz: Option<f64>,
        /// Resume point `SESSION:SEQ`.
        #[serde(default)]
        since: Option<String>,
        /// Gather this client's changes for up to this long into one frame
        /// (0–1000 ms; applies to the whole connection).
        #[serde(default)]
        batch_ms: Option<u64>,
    },
    /// Remove symbols.
    Unsubscribe {
        /// Tickers, or `["*"]`.
        symbols: Vec<String>,
    },
    /// Liveness check; answered with `pong`.
    Ping,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerFrame<'a> {
    Subscribed {
        symbols: &'a [Arc<str>],
        unknown: &'a [String],
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

/// `GET /v1/ws`.
pub async fn handler(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(auth): Query<AuthQuery>,
) -> Response {
    if let Err(e) = check_origin(&state, &headers) {
        return e.into_response();
    }
    let limits = &state.config.limits;
    let ws = ws
        .protocols([MSGPACK_PROTOCOL, JSON_PROTOCOL])
        // Client frames are small operations; a larger frame grows the buffer
        // for itself. Every idle connection pays for this capacity.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_frame_bytes.max(1 << 20) * 4)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes);
    let format = match ws.selected_protocol() {
        Some(p) if p == MSGPACK_PROTOCOL => Format::Msgpack,
        _ => Format::Json,
    };
    // Refusals after the upgrade, with a close code a browser can see.
    let refusal = match check_token(&state, &headers, auth.token.as_deref()) {
        Err(e) => Some((close::UNAUTHORIZED, e.message)),
        Ok(()) => None,
    };
    let (guard, refusal) = match refusal {
        Some(r) => (None, Some(r)),
        None => match state.conns.acquire(peer.ip()) {
            Ok(g) => (Some(g), None),
            Err(e) => {
                crate::http::refused(&state, e.label());
                tracing::info!(peer = %peer, limit = e.label().as_str(), "websocket refused");
                (None, Some((close::LIMIT_EXCEEDED, e.message())))
            }
        },
    };
    let tracker = state.tracker.clone();
    ws.on_upgrade(move |socket| {
        tracker.track_future(async move {
            match (guard, refusal) {
                (Some(guard), None) => Conn::new(state, socket, format, guard).run().await,
                (_, Some((code, reason))) => {
                    let mut socket = socket;
                    let _ = socket.send(close_msg(code, &reason)).await;
                }
                _ => {}
            }
        })
    })
}

fn close_msg(code: u16, reason: &str) -> Message {
    // Close reasons are limited to 123 bytes.
    let mut r = reason.to_owned();
    while r.len() > 123 {
        r.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(r),
    }))
}

enum Flow {
    Continue,
    Close(u16, String),
    Stop,
}

struct Conn {
    state: AppState,
    socket: WebSocket,
    format: Format,
    subs: Subscriptions,
    ops: RateLimiter,
    counters: TransportCounters,
    feed: tokio::sync::watch::Receiver<FeedState>,
    last_heard: Instant,
    /// With `batch_ms`: changes are pending but the next frame is due then.
    held: Option<Instant>,
    _guard: ConnGuard,
}

impl Conn {
    fn new(state: AppState, socket: WebSocket, format: Format, guard: ConnGuard) -> Self {
        let client = state
            .hub
            .register(Transport::Ws, state.config.limits.every_queue);
        let subs = Subscriptions::new(state.hub.clone(), client);
        let limits = &state.config.limits;
        Conn {
            ops: RateLimiter::new(
                limits.ops_per_second,
                limits.ops_per_second.saturating_mul(2),
            ),
            counters: state.hub.metrics.transport(Transport::Ws),
            feed: state.feed.clone(),
            socket,
            format,
            subs,
            last_heard: Instant::now(),
            held: None,
            _guard: guard,
            state,
        }
    }

    async fn run(mut self) {
        let limits = self.state.config.limits.clone();
        let cancel = self.state.cancel.clone();
        let mut ping = tokio::time::interval(limits.ping_interval);
        ping.tick().await;
        self.feed.mark_unchanged();
        let flow = loop {
            let held = self.held;
            let due = held.or(self.subs.next_due);
            let flow = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let frame = ServerFrame::Shutdown { reconnect_ms: limits.reconnect.as_millis() as u64 };
                    let _ = Box::pin(self.send_control(&frame)).await;
                    Flow::Close(close::GOING_AWAY, "server shutting down".into())
                }
                // The handlers are boxed: an idle connection then holds only
                // the small waiting futures, not the largest handler's state.
                msg = self.socket.recv() => Box::pin(self.incoming(msg)).await,
                _ = self.subs.client().wait(), if held.is_none() => Box::pin(self.flush()).await,
                _ = sleep_until(due) => {
                    self.held = None;
                    Box::pin(self.flush()).await
                }
                changed = self.feed.changed() => match changed {
                    Ok(()) => Box::pin(self.send_feed()).await,
                    Err(_) => Flow::Continue,
                },
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > limits.idle_timeout {
                        self.state.hub.metrics.slow(Transport::Ws, SlowReason::NoPong);
                        Flow::Close(close::NO_PONG, "no pong within the idle timeout".into())
                    } else {
                        Box::pin(self.send(Message::Ping(Bytes::new()), None)).await
                    }
                }
            };
            match flow {
                Flow::Continue => continue,
                other => break other,
            }
        };
        if let Flow::Close(code, reason) = flow {
            let _ = tokio::time::timeout(
                limits.write_timeout,
                self.socket.send(close_msg(code, &reason)),
            )
            .await;
            // Closing handshake: read until the peer answers or goes away, so
            // the close frame is not lost to a reset on unread data.
            let linger = limits.write_timeout.min(std::time::Duration::from_secs(5));
            let _ = tokio::time::timeout(linger, async {
                while let Some(Ok(m)) = self.socket.recv().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }

    async fn incoming(&mut self, msg: Option<Result<Message, axum::Error>>) -> Flow {
        let msg = match msg {
            None => return Flow::Stop,
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("Space limit")
                    || text.contains("too long")
                    || text.contains("Message too big")
                {
                    crate::http::refused(&self.state, Limit::MaxFrameBytes);
                    return Flow::Close(
                        close::TOO_BIG,
                        format!(
                            "frame over {} bytes (setting max_frame_bytes)",
                            self.state.config.limits.max_frame_bytes
                        ),
                    );
                }
                return Flow::Stop;
            }
            Some(Ok(m)) => m,
        };
        self.last_heard = Instant::now();
        let op = match &msg {
            Message::Text(t) => {
                serde_json::from_str::<ClientOp>(t.as_str()).map_err(|e| e.to_string())
            }
            Message::Binary(b) => rmp_serde::from_slice::<ClientOp>(b)
                .map_err(|e| e.to_string())
                .or_else(|e| serde_json::from_slice::<ClientOp>(b).map_err(|_| e)),
            Message::Close(_) => return Flow::Stop,
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
        };
        match op {
            Ok(op) => self.op(op).await,
            Err(e) => {
                self.error("bad_request", &format!("not a valid operation: {e}"))
                    .await
            }
        }
    }

    async fn op(&mut self, op: ClientOp) -> Flow {
        match op {
            ClientOp::Ping => self.send_control(&ServerFrame::Pong).await,
            ClientOp::Subscribe {
                symbols,
                mode,
                max_hz,
                since,
                batch_ms,
            } => {
                if !self.ops.allow() {
                    crate::http::refused(&self.state, Limit::OpsPerSecond);
                    return self
                        .error(
                            "rate_limited",
                            &format!(
                                "more than {} operations per second (setting ops_per_second)",
                                self.state.config.limits.ops_per_second
                            ),
                        )
                        .await;
                }
                let opts = match sub_options(mode.as_deref(), max_hz) {
                    Ok(o) => o,
                    Err(e) => return self.error(e.code, &e.message).await,
                };
                match batch_window(batch_ms) {
                    Ok(b) if batch_ms.is_some() => self.subs.set_batch(b),
                    Ok(_) => {}
                    Err(e) => return self.error(e.code, &e.message).await,
                }
                self.subscribe(symbols, opts, since).await
            }
            ClientOp::Unsubscribe { symbols } => {
                if !self.ops.allow() {
                    crate::http::refused(&self.state, Limit::OpsPerSecond);
                    return self
                        .error(
                            "rate_limited",
                            "too many operations per second (setting ops_per_second)",
                        )
                        .await;
                }
                let list: Vec<Arc<str>> = symbols
                    .iter()
                    .map(|s| Arc::from(s.to_ascii_uppercase().as_str()))
                    .collect();
                self.subs.unsubscribe(&list);
                Flow::Continue
            }
        }
    }

    async fn subscribe(
        &mut self,
        symbols: Vec<String>,
        opts: SubOptions,
        since: Option<String>,
    ) -> Flow {
        let limits = &self.state.config.limits;
        let since = resume_point(since.as_deref(), self.state.table.session());
        if symbols.iter().any(|s| s == "*") {
            if !limits.allow_wildcard {
                crate::http::refused(&self.state, Limit::AllowWildcard);
                return self
                    .error(
                        "wildcard_not_allowed",
                        "`*` subscriptions are off (setting allow_wildcard)",
                    )
                    .await;
            }
            let (seq, quotes) = self.subs.subscribe_all(opts, since);
            let all: [Arc<str>; 1] = [Arc::from("*")];
            if let Flow::Close(c, r) = self
                .send_control(&ServerFrame::Subscribed {
                    symbols: &all,
                    unknown: &[],
                })
                .await
            {
                return Flow::Close(c, r);
            }
            return self.send_snapshot(seq, &quotes).await;
        }
        if self.state.table.symbol_count() == 0 {
            let e = crate::http::ApiError::not_ready();
            return self.error(e.code, &e.message).await;
        }
        let names = match parse_symbol_list(&symbols, limits.max_symbols) {
            Ok(n) => n,
            Err(e) => return self.error(e.code, &e.message).await,
        };
        let mut known: Vec<Arc<str>> = Vec::new();
        let mut unknown = Vec::new();
        for n in names {
            match self
                .state
                .table
                .locate(&n)
                .and_then(|l| self.state.table.info(l))
            {
                Some(info) => known.push(info.symbol.clone()),
                None => unknown.push(n),
            }
        }
        let new = known.iter().filter(|s| !self.subs.contains(s)).count();
        if self.subs.len() + new > limits.max_symbols {
            crate::http::refused(&self.state, Limit::MaxSymbols);
            return self
                .error(
                    "too_many_symbols",
                    &format!(
                        "at most {} symbols per connection (setting max_symbols)",
                        limits.max_symbols
                    ),
                )
                .await;
        }
        let (seq, quotes) = self.subs.subscribe(&known, opts, since);
        if let Flow::Close(c, r) = self
            .send_control(&ServerFrame::Subscribed {
                symbols: &known,
                unknown: &unknown,
            })
            .await
        {
            return Flow::Close(c, r);
        }
        self.send_snapshot(seq, &quotes).await
    }

    async fn send_snapshot(&mut self, seq: u64, quotes: &[Arc<crate::fanout::Encoded>]) -> Flow {
        let session = self.state.table.session();
        let msg = match self.format {
            Format::Json => text(envelope::ws_snapshot_json(seq, session.as_str(), quotes)),
            Format::Msgpack => {
                Message::Binary(envelope::ws_snapshot_msgpack(seq, session.as_str(), quotes))
            }
        };
        let batch = Batch {
            seq,
            quotes: quotes.to_vec(),
            ..Default::default()
        };
        self.send(msg, Some(&batch)).await
    }

    async fn flush(&mut self) -> Flow {
        // With batch_ms, a frame went out less than a window ago: gather.
        if let Some(at) = self.subs.hold_until(Instant::now()) {
            self.held = Some(at);
            return Flow::Continue;
        }
        let batch = self.subs.drain();
        if batch.overflow {
            self.state
                .hub
                .metrics
                .slow(Transport::Ws, SlowReason::QueueOverflow);
            tracing::info!("websocket client closed: every-mode queue overflow");
            return Flow::Close(
                close::SLOW_CONSUMER,
                format!(
                    "slow consumer: every-mode queue over {} (setting every_queue)",
                    self.state.config.limits.every_queue
                ),
            );
        }
        if batch.reset.is_some() {
            if let Flow::Close(c, r) = self.send_feed().await {
                return Flow::Close(c, r);
            }
        }
        if batch.quotes.is_empty() {
            return Flow::Continue;
        }
        let msg = match self.format {
            Format::Json => text(envelope::ws_ticks_json(batch.seq, &batch.quotes)),
            Format::Msgpack => {
                Message::Binary(envelope::ws_ticks_msgpack(batch.seq, &batch.quotes))
            }
        };
        self.send(msg, Some(&batch)).await
    }

    async fn send_feed(&mut self) -> Flow {
        let feed = *self.feed.borrow_and_update();
        let frame = ServerFrame::Feed {
            status: feed.status.as_str(),
            session: feed.session.as_str(),
            complete: feed.complete,
            lost: feed.lost,
            incomplete: feed.incomplete,
        };
        self.send_control(&frame).await
    }

    async fn error(&mut self, code: &str, message: &str) -> Flow {
        self.send_control(&ServerFrame::Error { code, message })
            .await
    }

    async fn send_control(&mut self, frame: &ServerFrame<'_>) -> Flow {
        let msg = match self.format {
            Format::Json => text(Bytes::from(serde_json::to_vec(frame).unwrap_or_default())),
            Format::Msgpack => Message::Binary(Bytes::from(
                rmp_serde::to_vec_named(frame).unwrap_or_default(),
            )),
        };
        self.send(msg, None).await
    }

    /// Writes one frame within the write deadline.
    async fn send(&mut self, msg: Message, batch: Option<&Batch>) -> Flow {
        let len = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        let timeout = self.state.config.limits.write_timeout;
        match tokio::time::timeout(timeout, self.socket.send(msg)).await {
            Ok(Ok(())) => {
                if let Some(b) = batch {
                    Subscriptions::count(&self.counters, b, len);
                }
                Flow::Continue
            }
            Ok(Err(_)) => Flow::Stop,
            Err(_) => {
                self.state
                    .hub
                    .metrics
                    .slow(Transport::Ws, SlowReason::WriteTimeout);
                tracing::info!("websocket client closed: write timeout");
                Flow::Close(close::SLOW_CONSUMER, "slow consumer: write timeout".into())
            }
        }
    }
}

fn text(bytes: Bytes) -> Message {
    // Envelopes are built from serde_json output and ASCII literals.
    match Utf8Bytes::try_from(bytes) {
        Ok(t) => Message::Text(t),
        Err(_) => Message::Text(Utf8Bytes::from_static("{}")),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
