//! Slow clients: the relay closes them first, and tells them where it can.
//!
//! - A streaming client (WebSocket, SSE) whose socket stays full for the
//!   write timeout gets its close frame (4008) or `event: error`. Its socket
//!   is full by then, so [`make_room`] grows the send buffer by what that
//!   last frame needs: it waits in the kernel behind the client's backlog and
//!   reaches the client if it ever reads again.
//! - A connection hyper serves (long and short polls, and an SSE stream
//!   asked for on a reused keep-alive connection) writes through
//!   [`TimedIo`]: a write that makes no progress for the write timeout ends
//!   the connection. An HTTP answer cannot be followed by an error once it
//!   has started, so the client learns it from the cut: fewer body bytes than
//!   `Content-Length` (or no last chunk), then the relay's FIN.
//!
//! Either way the close is counted in `tickrelay_slow_client_disconnects_total`
//! (reason `write_timeout`) and logged, one line per client with its
//! address. The kernel's TCP_USER_TIMEOUT, set at twice the write timeout on
//! every connection, is only the backstop for a socket the relay no longer
//! polls.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::kinds::{SlowReason, Transport};
use crate::metrics::StreamMetrics;

/// Grows `tcp`'s send buffer so `bytes` more fit even though it is full, and
/// lets the kernel keep the socket for `keep` of unacknowledged data (from
/// when the client stopped taking it), so the last frame outlives the
/// relay's close for a while. Best effort: the kernel caps the buffer at
/// `net.core.wmem_max` (twice that, as it doubles what it is given); a
/// buffer already larger than that is left as it is.
pub fn make_room(tcp: &TcpStream, bytes: usize, keep: Duration) {
    let sock = socket2::SockRef::from(tcp);
    if let Ok(current) = sock.send_buffer_size() {
        // Linux doubles the size asked for and counts its bookkeeping in it.
        let _ = sock.set_send_buffer_size((current + 2 * bytes + 64 * 1024) / 2);
        if sock.send_buffer_size().is_ok_and(|now| now < current) {
            let _ = sock.set_send_buffer_size(current / 2);
        }
    }
    let _ = sock.set_tcp_user_timeout(Some(keep));
}

/// What a hyper-served connection is answering now, for the counter's
/// `transport` label.
#[derive(Clone, Debug, Default)]
pub struct Route(Arc<AtomicU8>);

impl Route {
    const OTHER: u8 = 0;
    const POLL: u8 = 1;
    const SSE: u8 = 2;

    /// The request now being answered is for `path`.
    pub fn set(&self, path: &str) {
        // Long and short polling (`/v1/snapshot…`) are both `poll`.
        let kind = match path {
            "/v1/poll" => Route::POLL,
            p if p.starts_with("/v1/snapshot") => Route::POLL,
            "/v1/stream" => Route::SSE,
            _ => Route::OTHER,
        };
        self.0.store(kind, Ordering::Relaxed);
    }

    fn transport(&self) -> Option<Transport> {
        match self.0.load(Ordering::Relaxed) {
            Route::POLL => Some(Transport::Poll),
            Route::SSE => Some(Transport::Sse),
            _ => None,
        }
    }
}

/// A hyper connection's socket under the write timeout.
pub struct TimedIo {
    tcp: TcpStream,
    timeout: Duration,
    /// Running while a write makes no progress.
    blocked: Option<Pin<Box<Sleep>>>,
    route: Route,
    metrics: StreamMetrics,
    peer: SocketAddr,
}

impl TimedIo {
    /// `tcp` from `peer`, whose requests `route` names.
    pub fn new(
        tcp: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
        route: Route,
        metrics: StreamMetrics,
    ) -> Self {
        TimedIo {
            tcp,
            timeout,
            blocked: None,
            route,
            metrics,
            peer,
        }
    }

    /// The socket, for a connection upgraded off hyper (WebSocket), which
    /// keeps its own write timeout.
    pub fn into_inner(self) -> TcpStream {
        self.tcp
    }

    /// A write made progress (`Ready`) or is waiting (`Pending`): the
    /// timer stops, or starts and is checked.
    fn track<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.blocked = None;
            return r;
        }
        let timeout = self.timeout;
        let sleep = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.blocked = None;
        let transport = self.route.transport();
        if let Some(t) = transport {
            self.metrics.slow(t, SlowReason::WriteTimeout);
        }
        tracing::info!(
            transport = transport.map_or("http", Transport::as_str),
            peer = %self.peer,
            "client closed: write timeout"
        );
        // The answer's bytes already queued stay for the client to read, a
        // while longer than the kernel's backstop alone would keep them.
        let _ = socket2::SockRef::from(&self.tcp).set_tcp_user_timeout(Some(timeout * 3));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "slow consumer: write timeout",
        )))
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.track(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.track(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_flush(cx);
        this.track(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
