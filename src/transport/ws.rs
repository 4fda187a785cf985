//! WebSocket `/v1/ws`: subscribe at any time; snapshot, then batched ticks.
//!
//! The fan-out writes a client's `ticks` frames itself, straight to the
//! socket, while it sweeps the changed symbols (`Sweep`): no task wake-up,
//! timer or future per frame. The frame is built in the sweep's shared
//! buffer and written with one non-blocking `try_write`. A client whose
//! socket is full keeps only its conflation marks; its own task waits for
//! the socket to drain, finishes the write and catches up. That task
//! otherwise only reads the client's frames (operations, pongs, close),
//! pings, pushes feed status, and sends the shutdown notice. A client that
//! cannot take its frames within the write timeout is closed (4008).
//!
//! Server frames are framed here (`wsframe`): unmasked, a 2–10 byte header.
//! JSON text frames by default; the `tickrelay.msgpack` subprotocol gives
//! MessagePack binary frames.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::fanout::{Encoded, Format, Sweep, Transport, envelope};
use crate::feed::FeedState;
use crate::http::{ApiError, AppState, AuthQuery, check_origin, check_token, parse_symbol_list};
use crate::limits::{ConnGuard, RateLimiter};
use crate::metrics::{Limit, SlowReason, TransportCounters};
use crate::raw_stream::{RawConn, Upgrade};
use crate::transport::stream::{
    Batch, SubOptions, Subscriptions, batch_window, resume_point, sub_options,
};
use crate::transport::wsframe::{self, FrameError, Incoming, opcode};

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
    /// A client frame that breaks the protocol.
    pub const PROTOCOL: u16 = 1002;
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

/// `GET /v1/ws`: checks the handshake, origin, token and limits, answers
/// 101 and hands the socket to [`Conn`]. Refusals after the handshake are
/// close frames a browser can see (4001, 4009).
pub async fn handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(auth): Query<AuthQuery>,
    mut request: Request,
) -> Response {
    let tracker = state.tracker.clone();
    let headers = request.headers();
    if let Err(e) = check_origin(&state, headers) {
        return e.into_response();
    }
    let key = match handshake_key(headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let offered = |p: &str| {
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|o| o.trim() == p)
    };
    let (format, protocol) = if offered(MSGPACK_PROTOCOL) {
        (Format::Msgpack, Some(MSGPACK_PROTOCOL))
    } else if offered(JSON_PROTOCOL) {
        (Format::Json, Some(JSON_PROTOCOL))
    } else {
        (Format::Json, None)
    };
    let refusal = match check_token(&state, headers, auth.token.as_deref()) {
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
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    let start = move |tcp: TcpStream, read: Bytes| async move {
        match (guard, refusal) {
            (Some(guard), None) => Conn::start(state, tcp, read, format, guard).run().await,
            (_, Some((code, reason))) => refuse(tcp, code, &reason).await,
            _ => {}
        }
    };
    if request.extensions().get::<RawConn>().is_some() {
        // Served off hyper (`raw_stream`): it writes the 101 and calls us.
        response
            .extensions_mut()
            .insert(Upgrade::new(move |tcp| Box::pin(start(tcp, Bytes::new()))));
    } else if let Some(on) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    {
        // Upgraded from a hyper connection: take the socket back from it.
        tracker.spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let Ok(parts) = upgraded.downcast::<hyper_util::rt::TokioIo<TcpStream>>() else {
                return;
            };
            start(parts.io.into_inner(), parts.read_buf).await;
        });
    } else {
        return ApiError::bad_request("not_upgradable", "this connection cannot be upgraded")
            .into_response();
    }
    response
}

/// The client's `Sec-WebSocket-Key`, once the request is a version-13 upgrade.
fn handshake_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(ApiError {
            status: StatusCode::UPGRADE_REQUIRED,
            code: "upgrade_required",
            message: "a WebSocket upgrade request is expected here".into(),
        });
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::bad_request(
            "bad_upgrade",
            "Sec-WebSocket-Version must be 13",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request("bad_upgrade", "Sec-WebSocket-Key is missing"))
}

/// Closes a refused connection with `code`, after the handshake.
async fn refuse(tcp: TcpStream, code: u16, reason: &str) {
    let mut out = Vec::new();
    wsframe::close(&mut out, code, reason);
    if tokio::time::timeout(Duration::from_secs(5), write_all(&tcp, &out))
        .await
        .is_ok()
    {
        linger(&tcp, Duration::from_secs(2)).await;
    }
}

async fn write_all(tcp: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads (and drops) until the peer closes or `within` passes, so a close
/// frame is not lost to a reset on unread data.
async fn linger(tcp: &TcpStream, within: Duration) {
    let _ = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            match tcp.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

enum Flow {
    Continue,
    Close(u16, String),
    Stop,
}

/// The write side of a connection, shared by the fan-out's sweep and the
/// connection's task.
struct Direct {
    tcp: TcpStream,
    format: Format,
    state: AppState,
    counters: TransportCounters,
    writer: Mutex<Writer>,
    /// The sweep tells the task: the socket is full, a batch window or a
    /// throttle timer started, or the connection must close.
    wake: Notify,
}

struct Writer {
    subs: Subscriptions,
    /// Bytes the socket did not take yet; empty unless blocked.
    out: Vec<u8>,
    /// Since when the socket has been full.
    blocked_since: Option<Instant>,
    /// With `batch_ms`: the next frame is due then.
    held: Option<Instant>,
    /// Set by the sweep: end the connection so.
    verdict: Option<Flow>,
}

impl Sweep for Direct {
    fn sweep(&self, scratch: &mut Vec<u8>) {
        // The task holds the writer (an operation in progress): it looks at
        // what is pending when it is done.
        let Some(mut w) = self.writer.try_lock() else {
            self.wake.notify_one();
            return;
        };
        if w.blocked_since.is_none() && w.held.is_none() && w.verdict.is_none() {
            self.flush(&mut w, scratch);
        }
    }
}

impl Direct {
    /// Drains what is pending into one `ticks` frame and writes it.
    fn flush(&self, w: &mut Writer, scratch: &mut Vec<u8>) {
        if let Some(at) = w.subs.hold_until(Instant::now()) {
            if w.held != Some(at) {
                w.held = Some(at);
                self.wake.notify_one();
            }
            return;
        }
        w.held = None;
        let due = w.subs.next_due;
        let batch = w.subs.drain();
        if batch.overflow {
            self.state
                .hub
                .metrics
                .slow(Transport::Ws, SlowReason::QueueOverflow);
            tracing::info!("websocket client closed: every-mode queue overflow");
            w.verdict = Some(Flow::Close(
                close::SLOW_CONSUMER,
                format!(
                    "slow consumer: every-mode queue over {} (setting every_queue)",
                    self.state.config.limits.every_queue
                ),
            ));
            self.wake.notify_one();
            return;
        }
        if w.subs.next_due.is_some() && w.subs.next_due != due {
            // A throttled symbol: the task arms the timer.
            self.wake.notify_one();
        }
        scratch.clear();
        if batch.reset.is_some() {
            let feed = *self.state.feed.borrow();
            self.control_into(scratch, &feed_frame(&feed));
        }
        if !batch.quotes.is_empty() {
            let at = scratch.len();
            envelope::ws_ticks_into(scratch, self.format, batch.seq, &batch.quotes);
            let len = scratch.len() - at;
            let mut head = Vec::with_capacity(10);
            wsframe::header(&mut head, self.opcode(), len);
            scratch.splice(at..at, head);
            Subscriptions::count(&self.counters, &batch, len);
        }
        if !scratch.is_empty() {
            self.write(w, scratch);
        }
    }

    fn opcode(&self) -> u8 {
        match self.format {
            Format::Json => opcode::TEXT,
            Format::Msgpack => opcode::BINARY,
        }
    }

    /// Appends a control envelope (`subscribed`, `pong`, …) as one frame.
    fn control_into(&self, out: &mut Vec<u8>, frame: &ServerFrame<'_>) {
        let payload = match self.format {
            Format::Json => serde_json::to_vec(frame).unwrap_or_default(),
            Format::Msgpack => rmp_serde::to_vec_named(frame).unwrap_or_default(),
        };
        wsframe::frame(out, self.opcode(), &payload);
    }

    /// Writes `bytes` now if the socket takes them; the rest waits for the
    /// task (in order, behind anything already waiting).
    fn write(&self, w: &mut Writer, bytes: &[u8]) {
        if w.blocked_since.is_some() {
            let cap = self.state.config.limits.max_frame_bytes.max(1 << 20) * 4;
            if w.out.len() + bytes.len() > cap && w.verdict.is_none() {
                self.slow(w);
            } else {
                w.out.extend_from_slice(bytes);
            }
            return;
        }
        let written = match self.tcp.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => {
                w.verdict.get_or_insert(Flow::Stop);
                self.wake.notify_one();
                return;
            }
        };
        if written < bytes.len() {
            w.out.extend_from_slice(&bytes[written..]);
            w.blocked_since = Some(Instant::now());
            self.wake.notify_one();
        }
    }

    fn slow(&self, w: &mut Writer) {
        self.state
            .hub
            .metrics
            .slow(Transport::Ws, SlowReason::WriteTimeout);
        tracing::info!("websocket client closed: write timeout");
        w.verdict = Some(Flow::Close(
            close::SLOW_CONSUMER,
            "slow consumer: write timeout".into(),
        ));
        self.wake.notify_one();
    }

    /// The socket drained: write what waited, then catch up on the marks.
    fn resume(&self) -> bool {
        let mut w = self.writer.lock();
        while !w.out.is_empty() {
            match self.tcp.try_write(&w.out) {
                Ok(n) => {
                    w.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        w.out = Vec::new();
        w.blocked_since = None;
        if w.verdict.is_none() {
            self.flush(&mut w, &mut Vec::new());
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock()
    }
}

fn feed_frame(feed: &FeedState) -> ServerFrame<'_> {
    ServerFrame::Feed {
        status: feed.status.as_str(),
        session: feed.session.as_str(),
    }
}

/// A connection's task: reads the client's frames, pings, pushes feed
/// status and shutdown, and takes over writes the sweep could not finish.
struct Conn {
    direct: Arc<Direct>,
    reader: wsframe::Reader,
    ops: RateLimiter,
    feed: tokio::sync::watch::Receiver<FeedState>,
    last_heard: Instant,
    _guard: ConnGuard,
}

impl Conn {
    fn start(
        state: AppState,
        tcp: TcpStream,
        read: Bytes,
        format: Format,
        guard: ConnGuard,
    ) -> Self {
        let limits = &state.config.limits;
        let client = state.hub.register(Transport::Ws, limits.every_queue);
        let subs = Subscriptions::new(state.hub.clone(), client.clone());
        let direct = Arc::new(Direct {
            tcp,
            format,
            counters: state.hub.metrics.transport(Transport::Ws),
            writer: Mutex::new(Writer {
                subs,
                out: Vec::new(),
                blocked_since: None,
                held: None,
                verdict: None,
            }),
            wake: Notify::new(),
            state: state.clone(),
        });
        let sink: Weak<dyn Sweep> = Arc::downgrade(&direct) as Weak<Direct>;
        client.set_direct(sink);
        let mut reader = wsframe::Reader::default();
        reader.buf.extend_from_slice(&read);
        Conn {
            ops: RateLimiter::new(
                limits.ops_per_second,
                limits.ops_per_second.saturating_mul(2),
            ),
            feed: state.feed.clone(),
            direct,
            reader,
            last_heard: Instant::now(),
            _guard: guard,
        }
    }

    fn state(&self) -> &AppState {
        &self.direct.state
    }

    async fn run(mut self) {
        let limits = self.state().config.limits.clone();
        let cancel = self.state().cancel.clone();
        let mut ping = tokio::time::interval(limits.ping_interval);
        ping.tick().await;
        self.feed.mark_unchanged();
        // Bytes that came with the upgrade request.
        let mut flow = self.parse();
        while let Flow::Continue = flow {
            let (blocked, timer) = {
                let mut w = self.direct.lock();
                if let Some(v) = w.verdict.take() {
                    flow = v;
                    break;
                }
                (w.blocked_since, w.held.or(w.subs.next_due))
            };
            let direct = self.direct.clone();
            flow = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let frame = ServerFrame::Shutdown { reconnect_ms: limits.reconnect.as_millis() as u64 };
                    self.send(&frame);
                    Flow::Close(close::GOING_AWAY, "server shutting down".into())
                }
                r = direct.tcp.readable() => match r {
                    Ok(()) => self.read(),
                    Err(_) => Flow::Stop,
                },
                r = direct.tcp.writable(), if blocked.is_some() => match r {
                    Ok(()) if direct.resume() => Flow::Continue,
                    _ => Flow::Stop,
                },
                _ = sleep_until(blocked.map(|b| b + limits.write_timeout)) => {
                    direct.slow(&mut direct.lock());
                    Flow::Continue
                }
                _ = direct.wake.notified() => {
                    let mut w = direct.lock();
                    if w.blocked_since.is_none() && w.held.is_none() && w.verdict.is_none() {
                        direct.flush(&mut w, &mut Vec::new());
                    }
                    Flow::Continue
                }
                _ = sleep_until(timer) => {
                    let mut w = direct.lock();
                    w.held = None;
                    if w.blocked_since.is_none() && w.verdict.is_none() {
                        direct.flush(&mut w, &mut Vec::new());
                    }
                    Flow::Continue
                }
                changed = self.feed.changed() => {
                    if changed.is_ok() {
                        let feed = *self.feed.borrow_and_update();
                        self.send(&feed_frame(&feed));
                    }
                    Flow::Continue
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > limits.idle_timeout {
                        self.state().hub.metrics.slow(Transport::Ws, SlowReason::NoPong);
                        Flow::Close(close::NO_PONG, "no pong within the idle timeout".into())
                    } else {
                        let mut out = Vec::with_capacity(2);
                        wsframe::frame(&mut out, opcode::PING, &[]);
                        let mut w = direct.lock();
                        direct.write(&mut w, &out);
                        Flow::Continue
                    }
                }
            };
        }
        if let Flow::Close(code, reason) = flow {
            self.close(code, &reason, limits.write_timeout).await;
        }
    }

    /// Sends the close frame (after anything still waiting), then reads
    /// until the peer answers or goes away.
    async fn close(&mut self, code: u16, reason: &str, write_timeout: Duration) {
        let pending = {
            let mut w = self.direct.lock();
            // The sweep writes nothing after the close frame.
            w.verdict = Some(Flow::Stop);
            let mut out = std::mem::take(&mut w.out);
            wsframe::close(&mut out, code, reason);
            out
        };
        let linger_for = write_timeout.min(Duration::from_secs(5));
        if tokio::time::timeout(linger_for, write_all(&self.direct.tcp, &pending))
            .await
            .is_ok()
        {
            linger(&self.direct.tcp, linger_for).await;
        }
    }

    /// Reads what the socket has, then handles every complete frame.
    fn read(&mut self) -> Flow {
        let mut chunk = [0u8; 2048];
        loop {
            match self.direct.tcp.try_read(&mut chunk) {
                Ok(0) => return Flow::Stop,
                Ok(n) => {
                    self.last_heard = Instant::now();
                    self.reader.buf.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        break;
                    }
                    // A flood: handle what is here before reading more.
                    if self.reader.buf.len() >= 64 * 1024 {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return Flow::Stop,
            }
        }
        self.parse()
    }

    fn parse(&mut self) -> Flow {
        let max = self.state().config.limits.max_frame_bytes;
        loop {
            let msg = match self.reader.next(max) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(FrameError::TooBig) => {
                    crate::http::refused(self.state(), Limit::MaxFrameBytes);
                    return Flow::Close(
                        close::TOO_BIG,
                        format!("frame over {max} bytes (setting max_frame_bytes)"),
                    );
                }
                Err(FrameError::Protocol(why)) => return Flow::Close(close::PROTOCOL, why.into()),
            };
            let flow = self.incoming(msg);
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        self.reader.shrink();
        Flow::Continue
    }

    fn incoming(&mut self, msg: Incoming) -> Flow {
        let op = match msg {
            Incoming::Text(t) => serde_json::from_slice::<ClientOp>(&t).map_err(|e| e.to_string()),
            Incoming::Binary(b) => rmp_serde::from_slice::<ClientOp>(&b)
                .map_err(|e| e.to_string())
                .or_else(|e| serde_json::from_slice::<ClientOp>(&b).map_err(|_| e)),
            Incoming::Close => return Flow::Stop,
            Incoming::Ping(payload) => {
                let mut out = Vec::with_capacity(2 + payload.len());
                wsframe::frame(&mut out, opcode::PONG, &payload);
                let mut w = self.direct.lock();
                self.direct.write(&mut w, &out);
                return Flow::Continue;
            }
            Incoming::Pong => return Flow::Continue,
        };
        match op {
            Ok(op) => self.op(op),
            Err(e) => self.error("bad_request", &format!("not a valid operation: {e}")),
        }
    }

    fn op(&mut self, op: ClientOp) -> Flow {
        match op {
            ClientOp::Ping => self.send(&ServerFrame::Pong),
            ClientOp::Subscribe {
                symbols,
                mode,
                max_hz,
                since,
                batch_ms,
            } => {
                if !self.ops.allow() {
                    crate::http::refused(self.state(), Limit::OpsPerSecond);
                    let ops = self.state().config.limits.ops_per_second;
                    return self.error(
                        "rate_limited",
                        &format!("more than {ops} operations per second (setting ops_per_second)"),
                    );
                }
                let opts = match sub_options(mode.as_deref(), max_hz) {
                    Ok(o) => o,
                    Err(e) => return self.error(e.code, &e.message),
                };
                let batch = match batch_window(batch_ms) {
                    Ok(b) => b,
                    Err(e) => return self.error(e.code, &e.message),
                };
                if batch_ms.is_some() {
                    self.direct.lock().subs.set_batch(batch);
                }
                self.subscribe(symbols, opts, since)
            }
            ClientOp::Unsubscribe { symbols } => {
                if !self.ops.allow() {
                    crate::http::refused(self.state(), Limit::OpsPerSecond);
                    return self.error(
                        "rate_limited",
                        "too many operations per second (setting ops_per_second)",
                    );
                }
                let list: Vec<Arc<str>> = symbols
                    .iter()
                    .map(|s| Arc::from(s.to_ascii_uppercase().as_str()))
                    .collect();
                self.direct.lock().subs.unsubscribe(&list);
                Flow::Continue
            }
        }
    }

    fn subscribe(&mut self, symbols: Vec<String>, opts: SubOptions, since: Option<String>) -> Flow {
        let state = self.direct.state.clone();
        let limits = &state.config.limits;
        let since = resume_point(since.as_deref(), state.table.session());
        if symbols.iter().any(|s| s == "*") {
            if !limits.allow_wildcard {
                crate::http::refused(&state, Limit::AllowWildcard);
                return self.error(
                    "wildcard_not_allowed",
                    "`*` subscriptions are off (setting allow_wildcard)",
                );
            }
            // Held across subscribe and snapshot: no tick overtakes the snapshot.
            let mut w = self.direct.lock();
            let (seq, quotes) = w.subs.subscribe_all(opts, since);
            let all: [Arc<str>; 1] = [Arc::from("*")];
            self.subscribed(&mut w, &all, &[], seq, &quotes);
            return Flow::Continue;
        }
        if state.table.symbol_count() == 0 {
            let e = ApiError::not_ready();
            return self.error(e.code, &e.message);
        }
        let names = match parse_symbol_list(&symbols, limits.max_symbols) {
            Ok(n) => n,
            Err(e) => return self.error(e.code, &e.message),
        };
        let mut known: Vec<Arc<str>> = Vec::new();
        let mut unknown = Vec::new();
        for n in names {
            match state.table.locate(&n).and_then(|l| state.table.info(l)) {
                Some(info) => known.push(info.symbol.clone()),
                None => unknown.push(n),
            }
        }
        let mut w = self.direct.lock();
        let new = known.iter().filter(|s| !w.subs.contains(s)).count();
        if w.subs.len() + new > limits.max_symbols {
            drop(w);
            crate::http::refused(&state, Limit::MaxSymbols);
            return self.error(
                "too_many_symbols",
                &format!(
                    "at most {} symbols per connection (setting max_symbols)",
                    limits.max_symbols
                ),
            );
        }
        let (seq, quotes) = w.subs.subscribe(&known, opts, since);
        self.subscribed(&mut w, &known, &unknown, seq, &quotes);
        Flow::Continue
    }

    /// Writes `subscribed` and the snapshot.
    fn subscribed(
        &self,
        w: &mut Writer,
        symbols: &[Arc<str>],
        unknown: &[String],
        seq: u64,
        quotes: &[Arc<Encoded>],
    ) {
        let d = &self.direct;
        let mut out = Vec::new();
        d.control_into(&mut out, &ServerFrame::Subscribed { symbols, unknown });
        let session = d.state.table.session();
        let payload = match d.format {
            Format::Json => envelope::ws_snapshot_json(seq, session.as_str(), quotes),
            Format::Msgpack => envelope::ws_snapshot_msgpack(seq, session.as_str(), quotes),
        };
        wsframe::frame(&mut out, d.opcode(), &payload);
        let batch = Batch {
            seq,
            quotes: quotes.to_vec(),
            ..Default::default()
        };
        Subscriptions::count(&d.counters, &batch, payload.len());
        d.write(w, &out);
    }

    fn error(&mut self, code: &str, message: &str) -> Flow {
        self.send(&ServerFrame::Error { code, message })
    }

    fn send(&self, frame: &ServerFrame<'_>) -> Flow {
        let mut out = Vec::new();
        self.direct.control_into(&mut out, frame);
        let mut w = self.direct.lock();
        self.direct.write(&mut w, &out);
        Flow::Continue
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
