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
//! MessagePack binary frames. permessage-deflate (RFC 7692) is negotiated
//! per the `deflate` setting (`crate::deflate`, `wsdeflate`).

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::accept::{RawConn, Upgrade};
use crate::admission::Limit;
use crate::admission::{ConnGuard, OpRate, millis};
use crate::api::{ApiError, AppState, Door, ErrorCode, Refused, close, parse_symbol_list};
use crate::api::{entitled, identify};
use crate::auth::{Channel, Identity};
use crate::deflate::{Agreement, Inflater};
use crate::fanout::{Encoded, Format, envelope};
use crate::feed::FeedState;
use crate::transport::kind::{SlowReason, Transport};
use crate::transport::slow::write_all;
use crate::transport::snapshot::allowed_locates;
use crate::transport::subscriptions::{
    Batch, SubOptions, Subscriptions, batch_window, resume_point, sub_options,
};
use crate::transport::task::{Pacers, Protocol, Step, Task};
use crate::transport::user::TOKEN_EXPIRED;
use crate::transport::user::{ConnUser, Expiry};
use crate::transport::writer::{Direct, Event, Framing, Slot, Verdict, WriteSide, WriteState};
use crate::transport::wsdeflate::{Held, Outgoing};
use crate::transport::wsframe::{self, CloseWait, FrameError, Incoming, opcode};
use crate::transport::wsmsg::{ServerFrame, feed_frame};

mod chartops;
mod ops;

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
        /// Resume point: `SESSION:SEQ` for quotes; a trade's feed sequence
        /// (or `SESSION:SEQ`) for trades.
        #[serde(default)]
        since: Option<serde_json::Value>,
        /// Gather this client's changes for up to this long into one frame
        /// (0–1000 ms; applies to the whole connection).
        #[serde(default)]
        batch_ms: Option<u64>,
        /// Quotes after the snapshot carry only what changed.
        #[serde(default)]
        delta: bool,
        /// `quotes` (the default), `book`, `trades` or `bars`.
        #[serde(default)]
        channel: Option<String>,
        /// With `book`: levels a side, 1–50 (default 10).
        #[serde(default)]
        depth: Option<serde_json::Value>,
        /// With `bars`: `1s`, `1m` (default), `5m`, `15m` or `1h`.
        #[serde(default)]
        interval: Option<String>,
        /// With `trades` or `bars`: how many of the newest the first frame
        /// carries (default 0).
        #[serde(default)]
        history: Option<u64>,
    },
    /// Remove symbols.
    Unsubscribe {
        /// Tickers, or `["*"]`.
        symbols: Vec<String>,
        /// `quotes` (the default), `book`, `trades` or `bars`.
        #[serde(default)]
        channel: Option<String>,
        /// With `bars`: only this interval's (every interval's when absent).
        #[serde(default)]
        interval: Option<String>,
    },
    /// Liveness check; answered with `pong`.
    Ping,
    /// Replaces the connection's token with a fresh one of the same user.
    Auth {
        /// The new token.
        token: String,
    },
}

/// `GET /v1/ws`: checks the handshake, origin, token and limits, answers
/// 101 and hands the socket to [`Conn`]. Refusals after the handshake are
/// close frames a browser can see (4001, 4009).
pub async fn handler(
    door: Result<Door, Refused>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(pacers): Extension<Pacers>,
    mut request: Request,
) -> Response {
    let tracker = state.tracker.clone();
    let headers = request.headers();
    // A bad origin is an HTTP error before the handshake; a bad token, a
    // close frame after it, which a browser can read.
    let (identity, token_refused) = match door {
        Ok(d) => (Some(d.identity), None),
        Err(Refused::Origin(e) | Refused::Query(e)) => return e.into_response(),
        Err(Refused::Token(e)) => (None, Some(e)),
    };
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
    // The close reason starts with the error code: `bad_token: …`.
    let refusal =
        token_refused.map(|e| (close::UNAUTHORIZED, format!("{}: {}", e.code, e.message)));
    let (guard, refusal) = match refusal {
        Some(r) => (None, Some(r)),
        None => match state.conns.acquire(peer.ip()) {
            Ok(g) => (Some(g), None),
            Err(e) => {
                crate::api::refused(&state, e.label());
                tracing::info!(peer = %peer, limit = e.label().as_str(), "websocket refused");
                (None, Some((close::LIMIT_EXCEEDED, e.message())))
            }
        },
    };
    let (user, refusal) = match (&guard, refusal, identity) {
        (Some(_), None, Some(identity)) => match ConnUser::admit(&state, identity, "ws") {
            Ok(u) => (u, None),
            Err(e) => (None, Some((close::LIMIT_EXCEEDED, e.message))),
        },
        (_, refusal, _) => (None, refusal),
    };
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let deflate = refusal
        .is_none()
        .then(|| crate::deflate::negotiate(state.config.policy.deflate, offers))
        .flatten();
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
    if let Some(v) = deflate.and_then(|a| HeaderValue::from_str(&a.response()).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    // The connection's own task (`transport::task`), spawned as it is.
    let spawn = tracker.clone();
    let start = move |tcp: TcpStream, read: Bytes| match (guard, refusal) {
        (Some(guard), None) => {
            let conn = Conn::start(state, tcp, read, (format, deflate), guard, user);
            pacers.ws.add(conn.direct.client());
            spawn.spawn(Task::new(conn));
        }
        (_, Some((code, reason))) => {
            spawn.spawn(async move { refuse(tcp, read, code, &reason).await });
        }
        _ => {}
    };
    if request.extensions().get::<RawConn>().is_some() {
        // Served off hyper (`accept`): it writes the 101 and calls us.
        response
            .extensions_mut()
            .insert(Upgrade::new(move |tcp| start(tcp, Bytes::new())));
    } else if let Some(on) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    {
        // Upgraded from a hyper connection: take the socket back from it.
        tracker.spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let Ok(parts) =
                upgraded.downcast::<hyper_util::rt::TokioIo<crate::transport::slow::TimedIo>>()
            else {
                return;
            };
            start(parts.io.into_inner().into_inner(), parts.read_buf);
        });
    } else {
        return ApiError::new(
            ErrorCode::NotUpgradable,
            "this connection cannot be upgraded",
        )
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
        return Err(ApiError::new(
            ErrorCode::UpgradeRequired,
            "a WebSocket upgrade request is expected here",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::new(
            ErrorCode::BadUpgrade,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::new(ErrorCode::BadUpgrade, "Sec-WebSocket-Key is missing"))
}

/// Closes a refused connection with `code`, after the handshake: the Close
/// frame, the client's answer, then the TCP connection at once.
async fn refuse(tcp: TcpStream, read: Bytes, code: u16, reason: &str) {
    let mut out = Vec::new();
    wsframe::close(&mut out, code, reason);
    let mut wait = CloseWait::default();
    let answered = wait.feed(&read);
    end_close(&tcp, &out, (!answered).then_some(wait), CLOSE_WAIT).await;
}

/// Longest wait for the client's Close after the server's: a conformant
/// client answers at once; one that does not is not waited for longer.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The end of a closing handshake (RFC 6455 §7.1.1): writes `last` (what
/// was pending, then the Close frame); when the server started the close,
/// reads and drops the client's frames until its Close (`wait`), at most
/// `within`; then closes the TCP connection at once, whoever else still
/// holds the socket.
async fn end_close(tcp: &TcpStream, last: &[u8], wait: Option<CloseWait>, within: Duration) {
    if tokio::time::timeout(within, write_all(tcp, last))
        .await
        .is_ok()
        && let Some(mut wait) = wait
    {
        let _ = tokio::time::timeout(within, async {
            let mut chunk = [0u8; 4096];
            loop {
                if tcp.readable().await.is_err() {
                    return;
                }
                match tcp.try_read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) if wait.feed(&chunk[..n]) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
    let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Both);
}

/// The burst of client operations a connection may make at once.
fn ops_burst(policy: &crate::config::ClientPolicy) -> u32 {
    policy.ops_per_second.saturating_mul(2)
}

enum Flow {
    Continue,
    Close(u16, String),
    Stop,
}

/// A connection's task: reads the client's frames, pings, pushes feed
/// status and shutdown, and takes over writes the sweep could not finish.
struct Conn {
    direct: Direct,
    format: Format,
    reader: wsframe::Reader,
    ops: OpRate,
    feed: tokio::sync::watch::Receiver<FeedState>,
    /// When the client was last heard from (`admission::millis`).
    last_heard: u32,
    /// The client's Close frame has come: the server waits for no other.
    peer_closed: bool,
    /// What the reader's inflater holds (permessage-deflate).
    inflater_held: Option<Box<Held>>,
    _guard: ConnGuard,
}

impl Conn {
    fn start(
        state: AppState,
        tcp: TcpStream,
        read: Bytes,
        (format, deflate): (Format, Option<Agreement>),
        guard: ConnGuard,
        user: Option<Arc<ConnUser>>,
    ) -> Self {
        let policy = &state.config.policy;
        let delay = user.as_ref().map_or(0, |u| u.identity().rights.delay_ms);
        let client =
            state
                .hub
                .register_with(Transport::Ws, policy.every_queue, delay, Slot::default());
        let weak = Arc::downgrade(&client);
        let subs = Subscriptions::new(state.hub.clone(), weak);
        let side = WriteSide::new(state.clone(), tcp, Framing::Ws(format), subs, user);
        let mut reader = wsframe::Reader::default();
        let metrics = &state.hub.metrics;
        if let Some(agreement) = deflate {
            side.set_deflate(Outgoing::new(agreement, metrics));
            reader.inflater = Some(Box::new(Inflater::new(!agreement.client_no_context)));
        }
        let direct = Direct::install(client, side);
        direct.watch_user();
        reader.buf.extend_from_slice(&read);
        let mut feed = state.feed.clone();
        feed.mark_unchanged();
        let mut conn = Conn {
            ops: OpRate::new(ops_burst(policy)),
            feed,
            direct,
            format,
            reader,
            last_heard: millis(),
            peer_closed: false,
            inflater_held: deflate.map(|_| Box::new(Held::new(metrics))),
            _guard: guard,
        };
        // Bytes that came with the upgrade request.
        match conn.parse() {
            Flow::Continue => {}
            Flow::Close(code, reason) => conn.direct.end(Verdict::Close(code, reason)),
            Flow::Stop => conn.direct.end(Verdict::Stop),
        }
        conn
    }

    fn state(&self) -> &AppState {
        &self.direct.state
    }

    fn policy(&self) -> &crate::config::ClientPolicy {
        &self.direct.state.config.policy
    }

    /// Takes one of the client's operations per second (`ops_per_second`,
    /// bursts of twice that).
    fn allow_op(&mut self) -> bool {
        let policy = &self.direct.state.config.policy;
        let (rate, burst) = (policy.ops_per_second, ops_burst(policy));
        self.ops.allow(rate, burst)
    }

    /// Pings, or closes a peer silent for longer than the idle timeout (4010).
    fn ping(&self, idle_timeout: Duration) -> Flow {
        let silent = millis().wrapping_sub(self.last_heard);
        if u128::from(silent) > idle_timeout.as_millis() {
            self.state()
                .hub
                .metrics
                .slow(Transport::Ws, SlowReason::NoPong);
            tracing::info!(
                transport = "ws",
                peer = ?self.direct.tcp.peer_addr().ok(),
                "client closed: no pong within the idle timeout"
            );
            return Flow::Close(close::NO_PONG, "no pong within the idle timeout".into());
        }
        let mut out = Vec::with_capacity(2);
        wsframe::frame(&mut out, opcode::PING, &[]);
        self.direct.write(&mut self.direct.lock(), &out);
        Flow::Continue
    }

    /// What follows `flow`.
    fn step(&mut self, flow: Flow) -> Step {
        match flow {
            Flow::Continue => Step::Continue,
            Flow::Stop => Step::End,
            Flow::Close(code, reason) => Step::Last(self.close(code, &reason)),
        }
    }

    /// Sends the close frame (after anything still waiting); when the
    /// server started the close, waits for the client's Close (the rest of
    /// a refused message skipped unread); then closes the TCP connection.
    fn close(&mut self, code: u16, reason: &str) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut frame = Vec::new();
        wsframe::close(&mut frame, code, reason);
        let pending = self.direct.finish(&frame);
        let within = self.policy().write_timeout.min(CLOSE_WAIT);
        let wait = (!self.peer_closed).then(|| {
            let mut wait = CloseWait::default();
            // What was read and not parsed: the start of the frame that
            // ended the connection, or of frames after it.
            wait.feed(&std::mem::take(&mut self.reader.buf));
            wait
        });
        let direct = self.direct.clone();
        Box::pin(async move { end_close(&direct.tcp, &pending, wait, within).await })
    }

    /// Reads what the socket has, then handles every complete frame.
    fn read(&mut self) -> Flow {
        let mut chunk = [0u8; 2048];
        loop {
            match self.direct.tcp.try_read(&mut chunk) {
                Ok(0) => return Flow::Stop,
                Ok(n) => {
                    self.last_heard = millis();
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
        let max = self.state().config.policy.max_frame_bytes;
        loop {
            let msg = match self.reader.next(max) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(FrameError::TooBig) => {
                    crate::api::refused(self.state(), Limit::MaxFrameBytes);
                    return Flow::Close(
                        close::TOO_BIG,
                        format!("frame over {max} bytes (setting max_frame_bytes)"),
                    );
                }
                Err(FrameError::Protocol(why)) => return Flow::Close(close::PROTOCOL, why.into()),
                Err(FrameError::InvalidUtf8(why)) => {
                    return Flow::Close(close::INVALID_DATA, why.into());
                }
                Err(FrameError::BadClose(code, why)) => {
                    self.peer_closed = true;
                    return Flow::Close(code, why.into());
                }
            };
            if let (Some(held), Some(i)) = (&mut self.inflater_held, &self.reader.inflater) {
                held.set(i.held_bytes());
            }
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
            // The closing handshake: answer with the client's code (the
            // reader checked it), then close the TCP connection at once.
            Incoming::Close(code) => {
                self.peer_closed = true;
                return Flow::Close(code.unwrap_or(1000), String::new());
            }
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
            Err(e) => self.error(
                ErrorCode::BadRequest,
                &format!("not a valid operation: {e}"),
            ),
        }
    }

    /// Appends a control envelope (`subscribed`, `pong`, …) as one frame
    /// (compressed under the writer's lock `w`, as it is then written).
    fn control_into(&self, w: &mut WriteState, out: &mut Vec<u8>, frame: &ServerFrame<'_>) {
        let at = out.len();
        match self.format {
            Format::Json => {
                let _ = serde_json::to_writer(&mut *out, frame);
            }
            Format::Msgpack => {
                let _ = rmp_serde::encode::write_named(&mut *out, frame);
            }
        }
        self.direct.seal_message(w, out, at);
    }

    fn error(&mut self, code: ErrorCode, message: &str) -> Flow {
        self.send(&ServerFrame::Error {
            code: code.as_str(),
            message,
        })
    }

    fn send(&self, frame: &ServerFrame<'_>) -> Flow {
        let mut out = Vec::new();
        let mut w = self.direct.lock();
        self.control_into(&mut w, &mut out, frame);
        self.direct.write(&mut w, &out);
        Flow::Continue
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.direct.unregister();
    }
}

impl Protocol for Conn {
    fn parts(&mut self) -> (&WriteSide, &mut tokio::sync::watch::Receiver<FeedState>) {
        (&self.direct, &mut self.feed)
    }

    fn on_event(&mut self, event: Event) -> Step {
        let flow = match event {
            Event::Shutdown => {
                let frame = ServerFrame::Shutdown {
                    reconnect_ms: self.policy().reconnect.as_millis() as u64,
                };
                self.send(&frame);
                Flow::Close(close::GOING_AWAY, "server shutting down".into())
            }
            Event::Writable(ok) => {
                if ok && self.direct.resume() {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
            Event::Readable(true) => self.read(),
            Event::Readable(false) => Flow::Stop,
            Event::Woken => match self.direct.user().map(|u| u.expiry()) {
                Some(Expiry::Expired) => Flow::Close(close::UNAUTHORIZED, TOKEN_EXPIRED.into()),
                Some(Expiry::Warn(in_ms)) => {
                    self.direct.flush_if_idle(false);
                    self.send(&ServerFrame::AuthExpiring { in_ms })
                }
                _ => {
                    self.direct.flush_if_idle(false);
                    Flow::Continue
                }
            },
            Event::Feed => {
                let feed = *self.feed.borrow_and_update();
                self.send(&feed_frame(&feed))
            }
            Event::Due => {
                self.direct.on_timer(Instant::now());
                Flow::Continue
            }
            Event::Beat => self.ping(self.policy().idle_timeout),
        };
        self.step(flow)
    }

    fn on_verdict(&mut self, verdict: Verdict) -> Step {
        self.step(match verdict {
            Verdict::Close(code, reason) => Flow::Close(code, reason),
            Verdict::Stop => Flow::Stop,
        })
    }
}

/// The size of a connection's task (a test's guard).
#[cfg(test)]
pub(crate) fn task_size() -> usize {
    std::mem::size_of::<Task<Conn>>()
}
