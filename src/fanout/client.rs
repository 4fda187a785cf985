//! The hub's side of one client: its pending work, how its writer is woken
//! (or swept in place), and its shard.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::*;
use crate::metrics::StreamMetrics;
use crate::transport::kind::Transport;
use crate::wire::{Locate, Session};

/// A client whose frames the fan-out writes itself, during its sweep: no
/// task is woken for it. The transport implements it over its socket.
pub trait Sweep: Send + Sync {
    /// Frames what is pending for this client and writes it, if that can be
    /// done without waiting; otherwise leaves it pending (and makes sure the
    /// client's own task will finish it). `scratch` is the sweep's buffers,
    /// shared by every client it writes. `due`: a hold this client asked
    /// for has passed. Returns `Some(at)` when the client starts holding its
    /// changes until `at` (`batch_ms`): the shard sweeps it again then.
    fn sweep(&self, scratch: &mut Scratch, due: bool) -> Option<Instant>;

    /// Writes the frame [`Sweep::sweep`] staged in the sweep's burst
    /// (`scratch.staging`), ahead of anything queued since.
    fn send_staged(&self, _frame: &[u8]) {}

    /// Wakes the client's task to look at the feed status and shutdown
    /// (or, for a client not written from the sweep, at what is pending).
    fn poke(&self);

    /// Loads the lines the sweep will read first, without waiting for them
    /// (see `Client::touch`).
    fn touch(&self) {}

    /// What a client not written from the sweep waits on ([`Client::wait`]).
    fn notified(&self) -> Option<&Notify> {
        None
    }
}

/// The tail of a client that is never written from the sweep (a long poll,
/// a stream served through hyper): its task waits on [`Client::wait`], and
/// the fan-out wakes it when work arrives.
impl Sweep for Notify {
    fn sweep(&self, _: &mut Scratch, _: bool) -> Option<Instant> {
        None
    }

    fn poke(&self) {
        self.notify_one();
    }

    fn notified(&self) -> Option<&Notify> {
        Some(self)
    }
}

/// The hub's side of one client: where the fan-out leaves work and how it
/// wakes the writer — and, in the same allocation, the writer itself
/// (`sink`: a WebSocket's or SSE stream's write side, with the client's
/// subscriptions and what each last sent). One allocation per client, the
/// fan-out's fields first: marking a client and queueing it for the sweep
/// touch its first two cache lines, and the sweep goes on into the same
/// block instead of chasing a pointer to another.
#[repr(C)]
pub struct Client<S: ?Sized = dyn Sweep> {
    pub(super) pending: Mutex<Pending>,
    /// The last fan-out round that queued this client for its sweep.
    pub(super) swept: AtomicU64,
    /// Set for clients written from the sweep (`sink`): they are not woken
    /// per change.
    pub(super) direct: AtomicBool,
    /// Its shard holds its changes (`batch_ms`) until a timer sweeps it:
    /// changes meanwhile only mark it.
    pub(super) held: AtomicBool,
    /// It streams bars: woken when feed time passes a second, since a bar
    /// closes then whether or not its symbol trades.
    pub(super) clocked: AtomicBool,
    pub(super) closed: AtomicBool,
    /// The fan-out shard that serves it.
    pub(super) shard: u32,
    pub(super) transport: Transport,
    /// Most `every` changes it may have waiting (beside `transport`: no
    /// padding after either).
    pub(super) every_limit: u32,
    /// Set for a delayed client: its group's position in the delayed view
    /// (shared by the shard's clients of one delay). It is marked by the
    /// view's tick, never by live changes.
    pub(super) delayed: Option<Arc<super::delayed::Position>>,
    pub(super) id: u64,
    /// Table epoch the client has seen; older resets do not concern it.
    pub(super) epoch: AtomicU64,
    /// The writer: the sweep calls it when `direct`, else it is woken.
    pub sink: S,
}

impl<S: ?Sized> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("transport", &self.transport)
            .field("direct", &self.direct.load(Ordering::Relaxed))
            .field("delay_ms", &self.delayed.as_ref().map_or(0, |p| p.delay_ms))
            .finish_non_exhaustive()
    }
}

impl<S: ?Sized + Sweep> Client<S> {
    /// How long its data is delayed, ms (0: real time).
    pub(super) fn delay_ms(&self) -> u64 {
        self.delayed.as_ref().map_or(0, |p| p.delay_ms)
    }

    /// Waits until something is pending (returns at once if it already is).
    pub async fn wait(&self) {
        loop {
            let Some(notify) = self.sink.notified() else {
                // Written from the sweep: nobody waits on it.
                return std::future::pending().await;
            };
            let notified = notify.notified();
            if !self.pending.lock().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Takes everything pending.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock())
    }

    /// Takes what is pending, swapping the conflated marks into `marks` (pass
    /// it empty) so the client's buffers keep their capacity: no allocation
    /// per drain in steady state. Returns the `every` changes, the overflow
    /// flag and a session reset.
    pub fn take_into(
        &self,
        marks: &mut Vec<Locate>,
    ) -> (VecDeque<Arc<Encoded>>, bool, Option<Session>) {
        let mut p = self.pending.lock();
        std::mem::swap(&mut p.marks, marks);
        if let Some(marked) = p.marked.as_mut().filter(|m| !m.is_empty()) {
            marked.clear();
        }
        p.clock = false;
        let every = if p.every.is_empty() {
            VecDeque::new()
        } else {
            std::mem::take(&mut p.every)
        };
        (every, std::mem::take(&mut p.overflow), p.reset.take())
    }

    /// Marks `locate` pending again (a throttled symbol not yet due).
    pub fn remark(&self, locate: Locate) {
        self.pending.lock().insert_mark(locate);
    }

    /// Wakes the writer without leaving work (e.g. feed status changed).
    pub fn poke(&self) {
        self.sink.poke();
    }

    /// From now on the fan-out writes this client's frames itself, through
    /// its `sink`, instead of waking a task per change.
    pub fn set_direct(&self) {
        self.direct.store(true, Ordering::Release);
    }

    /// Whether the fan-out writes this client's frames (see `set_direct`).
    pub(super) fn is_direct(&self) -> bool {
        self.direct.load(Ordering::Acquire)
    }

    /// Sweeps it if it is written from the sweep: see [`Sweep::sweep`].
    pub(super) fn sweep(&self, scratch: &mut Scratch, due: bool) -> Option<Instant> {
        self.is_direct()
            .then(|| self.sink.sweep(scratch, due))
            .flatten()
    }

    /// Writes the frame its sweep staged: see [`Sweep::send_staged`].
    pub(super) fn send_staged(&self, frame: &[u8]) {
        self.sink.send_staged(frame);
    }

    /// Wakes it when feed time passes a second (`on`: it streams bars).
    pub fn set_clocked(&self, on: bool) {
        self.clocked.store(on, Ordering::Relaxed);
    }

    /// Feed time passed a second; true if the client had nothing pending.
    pub(super) fn tick(&self) -> bool {
        let mut p = self.pending.lock();
        let was_empty = p.is_empty();
        p.clock = true;
        was_empty
    }

    /// Marks `locate` pending; true if the client had nothing pending.
    pub(super) fn mark(&self, locate: Locate, metrics: &StreamMetrics) -> bool {
        let mut p = self.pending.lock();
        let was_empty = p.is_empty();
        if !p.insert_mark(locate) {
            // Replaced before it was sent: the client gets only the newest.
            metrics.conflated.inc();
        }
        was_empty
    }

    /// Queues an `every` change; true if the client had nothing pending.
    pub(super) fn push_every(&self, enc: &Arc<Encoded>) -> bool {
        let mut p = self.pending.lock();
        let was_empty = p.is_empty();
        if p.every.len() >= self.every_limit as usize {
            p.overflow = true;
            p.every.clear();
        } else if !p.overflow {
            p.every.push_back(enc.clone());
        }
        was_empty
    }

    /// Leaves the new session for the writer; false if it is not news.
    pub(super) fn reset(&self, session: Session, epoch: u64) -> bool {
        // A client that registered after the table was reset already reads
        // the new session: the reset is not news to it.
        if self.epoch.fetch_max(epoch, Ordering::AcqRel) >= epoch {
            return false;
        }
        let mut p = self.pending.lock();
        p.marks.clear();
        p.marked = None;
        p.every.clear();
        p.reset = Some(session);
        true
    }
}

impl Client {
    /// Loads the lines of this client that marking and queueing it touch
    /// (the counts and marks, the lock and flags), without waiting for
    /// them: touched for a run of clients before any is marked, their
    /// cache misses overlap instead of following one another.
    #[inline]
    pub(super) fn touch(self: &Arc<Self>) {
        std::hint::black_box(Arc::strong_count(self));
        std::hint::black_box(self.swept.load(Ordering::Relaxed));
    }

    /// Wakes a task-driven writer that had nothing pending. A direct client
    /// is queued for the sweep of fan-out round `round` instead, once per
    /// round, even with work pending (a throttled symbol's mark must not
    /// hold back the others).
    pub(super) fn wake(
        self: &Arc<Self>,
        was_empty: bool,
        round: u64,
        sweep: &mut Vec<Arc<Client>>,
    ) {
        if self.is_direct() {
            if self.held.load(Ordering::Relaxed) {
                return;
            }
            if self.swept.swap(round, Ordering::Relaxed) != round {
                sweep.push(self.clone());
            }
        } else if was_empty {
            self.sink.poke();
        }
    }
}
