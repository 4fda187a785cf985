//! A streaming connection's own task (WebSocket, SSE written from the
//! sweep), as a plain struct rather than an `async fn`'s state machine: what
//! it holds is what an idle connection costs, and it is spawned as it is,
//! not boxed. It waits in one place ([`WriteSide::poll_event`]): nothing of its
//! own for shutdown or feed status (it is poked), no timer unless one is due
//! (pings and keep-alives come from a [`Pacer`]). Once the connection ends,
//! its last write and linger run in a boxed future of their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::feed::FeedState;
use crate::transport::pacer::Pacer;
use crate::transport::writer::{Event, StreamClient, Timer, Verdict, WriteSide, arm};

/// A connection's last write and linger.
type Last = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What follows an event.
pub enum Step {
    /// Wait for the next one.
    Continue,
    /// The connection is over.
    End,
    /// Write the last frame (and linger): the connection is over after it.
    Last(Last),
}

/// One protocol's side of a connection's task.
pub trait Protocol: Unpin {
    /// The connection's write side and its view of the feed status.
    fn parts(&mut self) -> (&WriteSide, &mut watch::Receiver<FeedState>);
    /// Handles what the task was woken for.
    fn on_event(&mut self, event: Event) -> Step;
    /// The connection must end (decided by the sweep, a timer, or the task).
    fn on_verdict(&mut self, verdict: Verdict) -> Step;
}

/// A connection's task. See the module docs.
pub struct Task<P> {
    conn: P,
    /// There only while something is due (`transport::writer::arm`).
    timer: Timer,
    /// The last write and linger, once the connection is over (boxed again
    /// so that an idle task holds one pointer for it, not two).
    last: Option<Box<Last>>,
}

impl<P: Protocol> Task<P> {
    /// The task of `conn`.
    pub fn new(conn: P) -> Self {
        Task {
            conn,
            timer: None,
            last: None,
        }
    }
}

impl<P: Protocol> Future for Task<P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if let Some(last) = &mut this.last {
                return last.as_mut().as_mut().poll(cx);
            }
            let next = {
                let (direct, feed) = this.conn.parts();
                match direct.status() {
                    Err(verdict) => Err(verdict),
                    Ok(status) => {
                        arm(&mut this.timer, direct.due(&status));
                        let blocked = status.blocked_since.is_some();
                        match direct.poll_event(cx, blocked, feed, &mut this.timer) {
                            Poll::Ready(event) => Ok(event),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                }
            };
            let step = match next {
                Ok(event) => this.conn.on_event(event),
                Err(verdict) => this.conn.on_verdict(verdict),
            };
            match step {
                Step::Continue => {}
                Step::End => return Poll::Ready(()),
                Step::Last(last) => {
                    this.timer = None;
                    this.last = Some(Box::new(last));
                }
            }
        }
    }
}

/// What the streaming connections beat to, reached from their handlers (a
/// request extension the server sets).
#[derive(Clone)]
pub struct Pacers {
    /// WebSocket pings, every `ping_interval`.
    pub ws: Arc<Pacer<StreamClient>>,
    /// SSE keep-alives, every `keepalive`.
    pub sse: Arc<Pacer<StreamClient>>,
}

impl Pacers {
    /// Pacers for `policy`, their tasks running until `cancel`.
    pub fn spawn(policy: &crate::config::ClientPolicy, cancel: &CancellationToken) -> Self {
        let ws = Pacer::new(policy.ping_interval);
        let sse = Pacer::new(policy.keepalive);
        tokio::spawn(ws.clone().run(cancel.clone()));
        tokio::spawn(sse.clone().run(cancel.clone()));
        Pacers { ws, sse }
    }
}
