//! Slow clients: the relay closes them first, and tells them where it can.
//!
//! - A streaming client (WebSocket, SSE) whose socket stays full for the
//!   write timeout gets its close frame (4008) or `event: error`. Its socket
//!   is full by then, so [`make_room`] grows the send buffer by what that
//!   last frame needs: it waits in the kernel behind the client's backlog and
//!   reaches the client if it ever reads again.
//! - A connection hyper serves writes through [`TimedIo`]. For an SSE stream
//!   asked for on a reused keep-alive connection, a write that makes no
//!   progress for the write timeout is let through into a grown send buffer
//!   and the stream is told ([`SlowSignal`]): its last event is the same
//!   `event: error` as above, then the end of the chunked body and the
//!   relay's FIN. If the socket still takes nothing for another write
//!   timeout, the connection ends there. For long and short polls the
//!   connection ends at the first write timeout: an HTTP answer cannot be
//!   followed by an error once it has started, so the client learns it from
//!   the cut: fewer body bytes than `Content-Length`, then the relay's FIN.
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
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::api::ErrorCode;
use crate::metrics::StreamMetrics;
use crate::transport::kind::{SlowReason, Transport};

/// What a client closed for the write timeout is told: the 4008 close
/// frame's reason, the SSE `error` event's message.
pub const WRITE_TIMEOUT: &str = "slow consumer: write timeout";

/// The `data` of the SSE `error` event that ends a slow client's stream,
/// the twin of a WebSocket's close frame `close_code` with `reason`.
pub fn error_data(close_code: u16, reason: &str) -> String {
    // The close codes an open stream can end with, and their error codes.
    let code = match close_code {
        crate::api::close::UNAUTHORIZED => ErrorCode::TokenExpired,
        crate::api::close::DISCONNECTED => ErrorCode::Disconnected,
        _ => ErrorCode::SlowConsumer,
    };
    serde_json::json!({
        "code": code.as_str(),
        "close_code": close_code,
        "message": reason,
    })
    .to_string()
}

/// Room for the `error` event and the end of the chunked body behind a
/// write let through at the write timeout.
const LAST_EVENT_ROOM: usize = 4096;

/// The least time the kernel keeps a closed slow client's last frame for it
/// (TCP_USER_TIMEOUT after the relay's close): a client that stalled for a
/// few seconds (a busy machine, a tab in the background) still finds its
/// close frame or error event rather than a reset. The cost is the socket's
/// send buffer (`send_buffer`, 128 KiB by default) for that long.
pub const LAST_FRAME_KEEP: Duration = Duration::from_secs(10);

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
    let _ = sock.set_tcp_user_timeout(Some(keep.max(LAST_FRAME_KEEP)));
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

/// Between a hyper connection's socket ([`TimedIo`]) and the SSE stream it
/// is writing (`transport::sse`): the write timeout passed, the stream
/// sends its `error` event and ends, and the connection closes once that
/// is written.
#[derive(Clone, Debug, Default)]
pub struct SlowSignal(Arc<SignalState>);

#[derive(Debug, Default)]
struct SignalState {
    stage: AtomicU8,
    notify: Notify,
}

impl SlowSignal {
    const QUIET: u8 = 0;
    const RAISED: u8 = 1;
    const TOLD: u8 = 2;

    /// The write timeout passed: the stream must send its error and end.
    fn raise(&self) {
        let s = &self.0;
        if s.stage
            .compare_exchange(
                SlowSignal::QUIET,
                SlowSignal::RAISED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            s.notify.notify_one();
        }
    }

    /// Whether the write timeout passed.
    pub fn is_raised(&self) -> bool {
        self.0.stage.load(Ordering::Acquire) >= SlowSignal::RAISED
    }

    /// Resolves once the write timeout passed.
    pub async fn raised(&self) {
        while !self.is_raised() {
            self.0.notify.notified().await;
        }
    }

    /// The stream sent its `error` event and ended: the connection closes
    /// once that is written.
    pub fn told(&self) {
        self.0.stage.store(SlowSignal::TOLD, Ordering::Release);
    }

    fn is_told(&self) -> bool {
        self.0.stage.load(Ordering::Acquire) == SlowSignal::TOLD
    }
}

/// A hyper connection's socket under the write timeout.
pub struct TimedIo {
    tcp: TcpStream,
    timeout: Duration,
    /// Running while a write makes no progress.
    blocked: Option<Pin<Box<Sleep>>>,
    route: Route,
    signal: SlowSignal,
    /// The write timeout passed once: counted, logged, the SSE stream told.
    slowed: bool,
    /// The stream's last event is written: reads see the end, so hyper
    /// closes the connection.
    closing: bool,
    metrics: StreamMetrics,
    peer: SocketAddr,
}

/// What to do with a write after [`TimedIo::track`].
enum Step<T> {
    Done(Poll<io::Result<T>>),
    /// Let it through: the send buffer was just grown for it.
    Retry,
}

impl TimedIo {
    /// `tcp` from `peer`, whose requests `route` names; an SSE stream it
    /// serves listens to `signal`.
    pub fn new(
        tcp: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
        route: Route,
        signal: SlowSignal,
        metrics: StreamMetrics,
    ) -> Self {
        TimedIo {
            tcp,
            timeout,
            blocked: None,
            route,
            signal,
            slowed: false,
            closing: false,
            metrics,
            peer,
        }
    }

    /// The socket, for a connection upgraded off hyper (WebSocket), which
    /// keeps its own write timeout.
    pub fn into_inner(self) -> TcpStream {
        self.tcp
    }

    /// A write of `len` bytes made progress (`Ready`) or is waiting
    /// (`Pending`): the timer stops, or starts and is checked.
    fn track<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>, len: usize) -> Step<T> {
        if r.is_ready() {
            self.blocked = None;
            return Step::Done(r);
        }
        let timeout = self.timeout;
        let sleep = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Step::Done(Poll::Pending);
        }
        self.blocked = None;
        let transport = self.route.transport();
        if !self.slowed {
            // Counted and logged once per client, however it ends.
            self.slowed = true;
            if let Some(t) = transport {
                self.metrics.slow(t, SlowReason::WriteTimeout);
            }
            tracing::info!(
                transport = transport.map_or("http", Transport::as_str),
                peer = %self.peer,
                "client closed: write timeout"
            );
            if transport == Some(Transport::Sse) && len > 0 {
                // The stream's error event goes behind this write, which
                // the grown buffer takes: both wait in the kernel for the
                // client, a while longer than its backstop alone would.
                make_room(&self.tcp, len + LAST_EVENT_ROOM, timeout * 3);
                self.signal.raise();
                return Step::Retry;
            }
            // The answer's bytes already queued stay for the client to read,
            // a while longer than the kernel's backstop alone would keep them.
            let _ = socket2::SockRef::from(&self.tcp)
                .set_tcp_user_timeout(Some((timeout * 3).max(LAST_FRAME_KEEP)));
        } else {
            tracing::debug!(peer = %self.peer, "slow client still not reading: connection ended");
        }
        Step::Done(Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            WRITE_TIMEOUT,
        ))))
    }

    /// A write: `poll` through tokio, under the timer. After the write
    /// timeout, `send` first, straight to the socket past tokio's
    /// readiness: a send buffer just grown takes the bytes though no wake-up
    /// says so.
    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        send: impl Fn(socket2::SockRef<'_>) -> io::Result<usize>,
        mut poll: impl FnMut(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.slowed {
                match send(socket2::SockRef::from(&self.tcp)) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => {
                        self.blocked = None;
                        return Poll::Ready(r);
                    }
                }
            }
            let r = poll(Pin::new(&mut self.tcp), cx);
            match self.track(cx, r, len) {
                Step::Done(r) => return r,
                // Once at most: `slowed` is set now.
                Step::Retry => continue,
            }
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing {
            // Nothing read: the end, on which hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_with(
            cx,
            buf.len(),
            |s| s.send(buf),
            |tcp, cx| tcp.poll_write(cx, buf),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.get_mut().write_with(
            cx,
            len,
            |s| s.send_vectored(bufs),
            |tcp, cx| tcp.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_flush(cx);
        if r.is_ready() {
            this.blocked = None;
            if this.signal.is_told() && !this.closing {
                // Hyper flushes the socket once all it buffered is written:
                // the error event and the end of the body are. The next read
                // sees the end, so hyper closes the connection.
                this.closing = true;
                cx.waker().wake_by_ref();
            }
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Writes all of `bytes`, waiting for the socket as needed.
pub async fn write_all(tcp: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    // Once straight to the socket, past tokio's readiness: a send buffer
    // just grown (`slow::make_room`) takes the bytes though no wake-up says so.
    if !bytes.is_empty()
        && let Ok(n) = socket2::SockRef::from(tcp).send(bytes)
    {
        bytes = &bytes[n..];
    }
    while !bytes.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads (and drops) until the peer closes or `within` passes, so a last
/// frame is not lost to a reset on unread data.
pub async fn linger(tcp: &TcpStream, within: Duration) {
    let _ = tokio::time::timeout(within, async {
        while tcp.readable().await.is_ok() && !read_gone(tcp) {}
    })
    .await;
}

/// Reads and drops what the peer sent; true once it has closed (or failed).
/// Not async: its buffer is on the stack only while it runs, never in a
/// connection's future.
pub fn read_gone(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tcp.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}
