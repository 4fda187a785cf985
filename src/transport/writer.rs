//! The write side of a streaming connection written from the fan-out's
//! sweep (WebSocket frames or SSE chunks), shared by the sweep and the
//! connection's own task.
//!
//! The sweep drains what the hub marked for the client into one frame, built
//! in the sweep's shared buffer, and writes it with one non-blocking
//! `try_write`: no task is woken, no timer or future exists per frame. When
//! the socket is full, the unwritten rest is kept and the client's task is
//! told; until the task has finished that write, the sweep leaves the client
//! alone and its changes stay conflated as marks. With `batch_ms` or a
//! throttled symbol, the task keeps the timer. The task also finishes a
//! write that would block, and ends the connection on a verdict (4008).

use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::api::{AppState, close};
use crate::fanout::{Format, Scratch, Sweep, envelope};
use crate::feed::FeedState;
use crate::metrics::TransportCounters;
use crate::transport::bookstream;
use crate::transport::chartstream::ChartFrame;
use crate::transport::kind::{SlowReason, Transport};
use crate::transport::pacer::Beat;
use crate::transport::subscriptions::Subscriptions;
use crate::transport::user::{ConnUser, Deliveries};
use crate::transport::wsdeflate::Outgoing;
use std::sync::Arc;

mod framing;
mod slot;
mod wake;
use framing::HEAD_ROOM;
pub use framing::sse_head;
pub use slot::{Direct, Slot, StreamClient};
pub use wake::Wake;
use wake::{BEAT, GIVEN};

/// How frames are put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// WebSocket data frames in this format.
    Ws(Format),
    /// SSE events, each in one HTTP/1.1 chunk.
    Sse,
}

/// Why a connection ends, decided by whoever saw it first.
#[derive(Debug)]
pub enum Verdict {
    /// Tell the client (close code, or its SSE twin) and end.
    Close(u16, String),
    /// The peer is gone: just end.
    Stop,
}

/// How long [`WriteSide::finish`] waits for a frame the sweep staged.
const STAGED_WAIT: Duration = Duration::from_millis(20);

/// The state behind the lock.
pub struct WriteState {
    /// The client's subscriptions and delivery state.
    pub subs: Subscriptions,
    /// Bytes the socket did not take yet; empty unless blocked (or
    /// written while a staged frame waits).
    out: Vec<u8>,
    /// Written at once, staged, or blocked.
    flow: Flow,
    /// With `batch_ms`: the next frame is due then.
    held: Option<Instant>,
    /// The connection must end so (boxed: one pointer until it must).
    verdict: Option<Box<Verdict>>,
    /// permessage-deflate, when the WebSocket client negotiated it (boxed:
    /// a connection without it pays one empty pointer).
    deflate: Option<Box<Outgoing>>,
}

/// Where a client's writes stand (one field: a client is never staged and
/// blocked at once, and the three fit in an `Option<Instant>`'s 16 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flow {
    /// Written at once.
    Free,
    /// A frame of this client waits in the shard's burst: what is written
    /// meanwhile queues behind it ([`WriteSide::send_staged`]). `flush`: a
    /// flush was asked for meanwhile, done once the frame is out.
    Staged { flush: bool },
    /// The socket has been full since then: control frames queue, ticks
    /// stay marks.
    Blocked(Instant),
}

impl WriteState {
    /// Whether pending changes may be drained and written now: not staged
    /// or blocked, not in a batch window, not ending.
    fn may_flush(&self) -> bool {
        self.flow == Flow::Free && self.held.is_none() && self.verdict.is_none()
    }
}

impl Flow {
    fn blocked_since(self) -> Option<Instant> {
        match self {
            Flow::Blocked(since) => Some(since),
            _ => None,
        }
    }
}

/// What the task waits for next.
pub struct Status {
    /// The socket has been full since then.
    pub blocked_since: Option<Instant>,
    /// A batch window or throttled symbol is due then.
    pub timer: Option<Instant>,
}

/// One connection's write side.
pub struct WriteSide {
    /// The client's socket.
    pub tcp: TcpStream,
    framing: Framing,
    transport: Transport,
    /// What every handler can reach.
    pub state: AppState,
    counters: Arc<TransportCounters>,
    writer: Mutex<WriteState>,
    /// The sweep tells the task: the socket is full, a timer started, or the
    /// connection must end.
    pub wake: Wake,
    /// Where its deliveries are counted by class (and in the user's usage);
    /// holds the client's user, when it came with a per-user token.
    deliveries: Deliveries,
}

impl Beat for WriteSide {
    fn beat(&self) {
        self.wake.given.fetch_or(BEAT, Ordering::Release);
        self.wake.waker.wake();
    }
}

/// What a connection's task was woken for, in the order it looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The relay is shutting down.
    Shutdown,
    /// A blocked socket has room again; false: the socket failed.
    Writable(bool),
    /// The client sent bytes or closed; false: the socket failed.
    Readable(bool),
    /// The sweep asked ([`Wake::notify_one`]).
    Woken,
    /// The feed status changed.
    Feed,
    /// The timer is due: the write deadline, a batch window or throttle.
    Due,
    /// A ping or keep-alive is due (`transport::pacer`).
    Beat,
}

/// The timer of a connection's task, there only while something is due (an
/// idle connection has none: its pings come from the pacer).
pub type Timer = Option<Pin<Box<Sleep>>>;

/// Sets `timer` for `due`: made when first needed, dropped when nothing is.
pub fn arm(timer: &mut Timer, due: Option<Instant>) {
    match (timer.as_mut(), due) {
        (_, None) => *timer = None,
        (Some(t), Some(at)) => {
            if t.deadline() != at.into() {
                t.as_mut().reset(at.into());
            }
        }
        (None, Some(at)) => *timer = Some(Box::pin(tokio::time::sleep_until(at.into()))),
    }
}

impl Sweep for WriteSide {
    fn sweep(&self, scratch: &mut Scratch, due: bool) -> Option<Instant> {
        // The task holds the writer (an operation in progress): it looks at
        // what is pending when it is done.
        let Some(mut w) = self.writer.try_lock() else {
            self.wake.notify_one();
            return None;
        };
        if due {
            w.held = None;
        }
        if w.may_flush() {
            return self.flush(&mut w, scratch);
        }
        None
    }

    fn send_staged(&self, frame: &[u8]) {
        let mut w = self.writer.lock();
        let flush = w.flow == Flow::Staged { flush: true };
        w.flow = Flow::Free;
        if matches!(w.verdict.as_deref(), Some(Verdict::Stop)) {
            // The peer is gone, or `finish` gave up waiting for this frame
            // and the task wrote its last one: nothing may follow it.
            return;
        }
        let queued = std::mem::take(&mut w.out);
        self.write(&mut w, frame);
        if !queued.is_empty() {
            self.write(&mut w, &queued);
        }
        if flush && w.may_flush() {
            let _ = self.flush(&mut w, &mut Scratch::default());
        }
    }

    fn poke(&self) {
        self.wake.poke();
    }
}

impl WriteSide {
    /// The write side of `tcp` for `subs`.
    pub fn new(
        state: AppState,
        tcp: TcpStream,
        framing: Framing,
        subs: Subscriptions,
        user: Option<Arc<ConnUser>>,
    ) -> Self {
        let transport = match framing {
            Framing::Ws(_) => Transport::Ws,
            Framing::Sse => Transport::Sse,
        };
        WriteSide {
            tcp,
            framing,
            transport,
            counters: state.hub.metrics.transport_shared(transport),
            writer: Mutex::new(WriteState {
                subs,
                out: Vec::new(),
                flow: Flow::Free,
                held: None,
                verdict: None,
                deflate: None,
            }),
            wake: Wake::default(),
            deliveries: Deliveries::of(&state, user),
            state,
        }
    }

    /// Compresses this WebSocket connection's messages from now on.
    pub fn set_deflate(&self, deflate: Outgoing) {
        self.lock().deflate = Some(Box::new(deflate));
    }

    /// The client's user, when it came with a per-user token.
    pub fn user(&self) -> Option<&Arc<ConnUser>> {
        self.deliveries.user()
    }

    /// The next thing the connection's task must do. The one future an idle
    /// connection waits in, holding nothing of its own: readiness is the
    /// socket's, the wake-up the writer's, shutdown and feed status are
    /// looked at here (whoever changes them pokes every connection, see
    /// `server::wake_streams`), pings come from the pacer, and the timer is
    /// the task's while something else is due. `blocked`: a write waits for
    /// room.
    pub fn poll_event(
        &self,
        cx: &mut Context<'_>,
        blocked: bool,
        feed: &mut watch::Receiver<FeedState>,
        timer: &mut Timer,
    ) -> Poll<Event> {
        // Registered before anything is looked at: a change made after the
        // look comes with a wake-up.
        self.wake.waker.register(cx.waker());
        if self.state.cancel.is_cancelled() {
            return Poll::Ready(Event::Shutdown);
        }
        if blocked && let Poll::Ready(r) = self.tcp.poll_write_ready(cx) {
            return Poll::Ready(Event::Writable(r.is_ok()));
        }
        if let Poll::Ready(r) = self.tcp.poll_read_ready(cx) {
            return Poll::Ready(Event::Readable(r.is_ok()));
        }
        if self.wake.take(GIVEN) {
            return Poll::Ready(Event::Woken);
        }
        if feed.has_changed().unwrap_or(false) {
            return Poll::Ready(Event::Feed);
        }
        if let Some(t) = timer
            && t.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Event::Due);
        }
        if self.wake.take(BEAT) {
            return Poll::Ready(Event::Beat);
        }
        Poll::Pending
    }

    /// The writer, locked.
    pub fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.writer.lock()
    }

    /// Takes the verdict, or says what to wait for.
    pub fn status(&self) -> Result<Status, Verdict> {
        let mut w = self.writer.lock();
        if let Some(v) = w.verdict.take().map(|v| *v) {
            return Err(v);
        }
        Ok(Status {
            blocked_since: w.flow.blocked_since(),
            timer: w.held.or(w.subs.next_due),
        })
    }

    /// Ends the connection with `verdict` (the task's next
    /// [`WriteSide::status`]), unless it is ending already.
    pub fn end(&self, verdict: Verdict) {
        self.writer
            .lock()
            .verdict
            .get_or_insert_with(|| Box::new(verdict));
    }

    /// When the task's timer is due, from [`WriteSide::status`]: the write
    /// deadline while blocked (nothing is flushed then: the write catches up
    /// once the socket drains, so a batch window or throttle that passes
    /// meanwhile must not fire again and again), a batch window or throttled
    /// symbol otherwise.
    pub fn due(&self, status: &Status) -> Option<Instant> {
        match status.blocked_since {
            Some(since) => Some(since + self.state.config.policy.write_timeout),
            None => status.timer,
        }
    }

    /// The task's timer fired: closes a client blocked for longer than the
    /// write timeout (4008; the verdict is the task's next
    /// [`WriteSide::status`]) and flushes what a batch window or throttled
    /// symbol held.
    pub fn on_timer(&self, now: Instant) {
        let mut w = self.writer.lock();
        if w.verdict.is_some() {
            return;
        }
        let write_timeout = self.state.config.policy.write_timeout;
        if w.flow
            .blocked_since()
            .is_some_and(|b| b + write_timeout <= now)
        {
            self.slow(&mut w);
            return;
        }
        let timer = w.held.or(w.subs.next_due);
        drop(w);
        if timer.is_some_and(|t| t <= now) {
            self.flush_if_idle(true);
        }
    }

    /// Flushes pending changes unless the sweep's rules say wait (blocked,
    /// in a batch window, ending). `due`: a timer fired.
    pub fn flush_if_idle(&self, due: bool) {
        let mut w = self.writer.lock();
        if due {
            w.held = None;
        }
        if let Flow::Staged { flush } = &mut w.flow {
            *flush = true;
        } else if w.may_flush() {
            // A hold started here is the task's to time (`Status::timer`).
            let _ = self.flush(&mut w, &mut Scratch::default());
        }
    }

    /// Drains what is pending into one frame and writes it. Returns when
    /// the client starts holding its changes (`batch_ms`), for the caller's
    /// timer: the shard's when it sweeps, the task's otherwise.
    fn flush(&self, w: &mut WriteState, scratch: &mut Scratch) -> Option<Instant> {
        if let Some(at) = w
            .subs
            .batch()
            .and_then(|_| w.subs.hold_until(Instant::now()))
        {
            let new = w.held.is_none();
            w.held = Some(at);
            return new.then_some(at);
        }
        w.held = None;
        let due = w.subs.next_due;
        let Scratch {
            frame,
            quotes,
            staging,
            burst,
            ..
        } = scratch;
        quotes.clear();
        let batch = w.subs.drain_into(quotes);
        if batch.overflow {
            self.state
                .hub
                .metrics
                .slow(self.transport, SlowReason::QueueOverflow);
            tracing::info!(
                transport = self.transport.as_str(),
                peer = %self.peer(),
                "client closed: every-mode queue overflow"
            );
            let reason = batch.lagged.unwrap_or_else(|| {
                format!(
                    "slow consumer: every-mode queue over {} (setting every_queue)",
                    self.state.config.policy.every_queue
                )
            });
            w.verdict = Some(Box::new(Verdict::Close(close::SLOW_CONSUMER, reason)));
            self.wake.notify_one();
            return None;
        }
        if w.subs.next_due.is_some() && w.subs.next_due != due {
            // A throttled symbol: the task arms the timer.
            self.wake.notify_one();
        }
        frame.clear();
        // Where the bytes to write begin: the ticks frame's header is put in
        // room kept before its payload, so nothing is moved or allocated.
        let mut start = 0;
        if batch.reset.is_some() {
            self.feed_payload(frame, w.subs.promised);
            self.seal_message(w, frame, 0);
        }
        if !quotes.is_empty() {
            let at = frame.len();
            frame.resize(at + HEAD_ROOM, 0);
            match self.framing {
                Framing::Ws(format) => envelope::ws_ticks_into(frame, format, batch.seq, quotes),
                Framing::Sse => {
                    let session = self.state.table.session();
                    sse_head(frame, "tick", session.as_str(), batch.seq);
                    envelope::tick_json_into(frame, batch.seq, quotes);
                    frame.extend_from_slice(b"\n\n");
                }
            }
            let len = frame.len() - at - HEAD_ROOM;
            let head = self.seal_in_room(w, frame, at);
            if at == 0 {
                start = head;
            } else {
                // After a `feed` frame (a new session, rare): close the gap.
                frame.drain(at..head);
            }
            Subscriptions::count_quotes(&self.counters, quotes, len);
            self.deliveries.count(quotes.len(), len);
        }
        if !batch.books.is_empty() {
            let before = frame.len();
            for book in &batch.books {
                let at = frame.len();
                match self.framing {
                    Framing::Ws(format) => {
                        bookstream::ws_into(frame, format, book);
                        self.seal_message(w, frame, at);
                    }
                    Framing::Sse => {
                        bookstream::sse_into(frame, book);
                        self.seal(frame, at);
                    }
                }
            }
            self.deliveries
                .count(batch.books.len(), frame.len() - before);
            self.counters
                .count_books(batch.books.len(), frame.len() - before);
        }
        if !batch.charts.is_empty() {
            let before = frame.len();
            for chart in &batch.charts {
                let at = frame.len();
                match self.framing {
                    Framing::Ws(format) => {
                        chart.ws_into(frame, format);
                        self.seal_message(w, frame, at);
                    }
                    Framing::Sse => {
                        chart.sse_into(frame);
                        self.seal(frame, at);
                    }
                }
            }
            self.count_charts(&batch.charts, frame.len() - before);
        }
        if frame.len() > start {
            if *staging {
                burst.extend_from_slice(&frame[start..]);
                w.flow = Flow::Staged { flush: false };
            } else {
                self.write(w, &frame[start..]);
            }
        }
        quotes.clear();
        None
    }

    /// Records `frames` book frames of `bytes` written outside a batch (a
    /// subscription's snapshots) in the transport's metrics.
    pub fn count_books(&self, frames: usize, bytes: usize) {
        self.counters.count_books(frames, bytes);
    }

    /// Records a frame of `batch` in the transport's metrics.
    pub fn count(&self, batch: &crate::transport::subscriptions::Batch, bytes: usize) {
        Subscriptions::count(&self.counters, batch, bytes);
        self.deliveries.count(batch.quotes.len(), bytes);
    }

    /// Records `charts`, `bytes` on the wire, in the transport's metrics
    /// and the client's deliveries (a trade or bar each).
    pub fn count_charts(&self, charts: &[ChartFrame], bytes: usize) {
        let items: usize = charts.iter().map(ChartFrame::len).sum();
        self.counters.charts.inc_by(charts.len() as u64);
        self.counters.chart_bytes.inc_by(bytes as u64);
        self.deliveries.count(items, bytes);
    }

    /// The `feed` status as this connection's frame payload (unsealed).
    pub fn feed_payload(&self, out: &mut Vec<u8>, promised: u64) {
        let feed = *self.state.feed.borrow();
        let session = feed.session.as_str();
        match self.framing {
            Framing::Ws(format) => {
                let frame = crate::transport::wsmsg::feed_frame(&feed);
                out.extend_from_slice(&match format {
                    Format::Json => serde_json::to_vec(&frame).unwrap_or_default(),
                    Format::Msgpack => rmp_serde::to_vec_named(&frame).unwrap_or_default(),
                });
            }
            Framing::Sse => {
                sse_head(out, "feed", session, promised);
                let data = serde_json::json!({
                    "status": feed.status.as_str(),
                    "session": session,
                    "complete": feed.complete,
                    "lost": feed.lost,
                    "incomplete": feed.incomplete,
                });
                out.extend_from_slice(data.to_string().as_bytes());
                out.extend_from_slice(b"\n\n");
            }
        }
    }

    /// Writes `bytes` now if the socket takes them; the rest waits for the
    /// task (in order, behind anything already waiting).
    pub fn write(&self, w: &mut WriteState, bytes: &[u8]) {
        if w.flow != Flow::Free {
            // Only control frames queue while blocked; ticks stay marks.
            let cap = self.state.config.policy.max_frame_bytes.max(1 << 20) * 4;
            if w.out.len() + bytes.len() > cap {
                if w.verdict.is_none() {
                    self.slow(w);
                }
            } else {
                w.out.extend_from_slice(bytes);
            }
            return;
        }
        // Straight to the socket, past tokio's readiness bookkeeping (a
        // cold cache line per client per frame): a `WouldBlock` here leaves
        // the readiness set, so the task's first wait for room returns at
        // once, its `try_write` meets the full socket and clears it.
        let written = match socket2::SockRef::from(&self.tcp).send(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => {
                w.verdict.get_or_insert_with(|| Box::new(Verdict::Stop));
                self.wake.notify_one();
                return;
            }
        };
        if written < bytes.len() {
            w.out.extend_from_slice(&bytes[written..]);
            w.flow = Flow::Blocked(Instant::now());
            self.wake.notify_one();
        }
    }

    /// The client's address, for log lines.
    fn peer(&self) -> String {
        self.tcp
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string())
    }

    /// The client did not take its frames within the write timeout (4008).
    pub fn slow(&self, w: &mut WriteState) {
        self.state
            .hub
            .metrics
            .slow(self.transport, SlowReason::WriteTimeout);
        tracing::info!(
            transport = self.transport.as_str(),
            peer = %self.peer(),
            "client closed: write timeout"
        );
        w.verdict = Some(Box::new(Verdict::Close(
            close::SLOW_CONSUMER,
            crate::transport::slow::WRITE_TIMEOUT.into(),
        )));
        self.wake.notify_one();
    }

    /// The socket drained: write what waited, then catch up on the marks.
    /// False if the peer is gone.
    pub fn resume(&self) -> bool {
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
        w.flow = Flow::Free;
        if w.verdict.is_none() {
            let _ = self.flush(&mut w, &mut Scratch::default());
        }
        true
    }

    /// Ends the sweep's part: nothing is written after `last` (the close
    /// frame or final event), which follows whatever still waited. Returns
    /// the bytes to write.
    pub fn finish(&self, last: &[u8]) -> Vec<u8> {
        let mut w = self.writer.lock();
        // A frame the sweep staged goes first: what was queued behind it may
        // be compressed against it (permessage-deflate's context). The shard
        // writes it within microseconds; waiting is bounded all the same.
        let since = Instant::now();
        while matches!(w.flow, Flow::Staged { .. }) && since.elapsed() < STAGED_WAIT {
            drop(w);
            std::thread::yield_now();
            w = self.writer.lock();
        }
        w.verdict = Some(Box::new(Verdict::Stop));
        let mut out = std::mem::take(&mut w.out);
        out.extend_from_slice(last);
        if let Some(since) = w.flow.blocked_since() {
            // The socket is full: without room, the last frame (4008, the
            // error event) would never reach a client that reads again.
            let keep = since.elapsed() + 2 * self.state.config.policy.write_timeout;
            crate::transport::slow::make_room(&self.tcp, out.len(), keep);
        }
        out
    }
}
