//! One fan-out shard: its clients, their subscriptions by symbol, its
//! outbox of changes from the ingest thread, and the heap of clients
//! holding their changes (`batch_ms`).

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::*;
use crate::table::{LOCATES, Quote};
use crate::wire::{Locate, Session};

/// A subscription as the fan-out sees it.
#[derive(Clone, Debug)]
pub(super) struct Subscriber {
    pub(super) client: Arc<Client>,
    pub(super) every: bool,
    /// Real time (not delayed): kept here so the fan-out's filter reads the
    /// list alone, not the client.
    pub(super) live: bool,
}

#[derive(Clone)]
pub(super) enum Event {
    Changed(Locate),
    Every(Locate, Quote),
    Reset(Session, u64),
    /// Feed time passed a second (bars may have closed).
    Clock,
}

#[derive(Default)]
pub(super) struct Outbox {
    pub(super) events: Vec<Event>,
    /// Which locates have a `Changed` event waiting (dedup across batches).
    pub(super) queued: Vec<u64>,
    pub(super) last_seq: u64,
    pub(super) every_events: usize,
    pub(super) every_overflowed: bool,
}

/// Most `every` events waiting for the fan-out before they are dropped (and
/// their subscribers closed as too slow).
pub(super) const MAX_OUTBOX_EVERY: usize = 1 << 20;

/// One fan-out shard: its own clients and subscriptions, its own outbox of
/// changes, its own sweep. Shards share nothing but the table and the
/// encoding cache; each runs on its own thread.
pub(super) struct Shard {
    pub(super) subs: RwLock<SymbolMap<Vec<Subscriber>>>,
    pub(super) wildcard: RwLock<Vec<Arc<Client>>>,
    pub(super) clients: Mutex<HashMap<u64, Arc<Client>>>,
    pub(super) outbox: Mutex<Outbox>,
    pub(super) wake: Notify,
    pub(super) fanned_seq: AtomicU64,
    /// Fan-out rounds so far; the sweep's buffers, kept for their capacity.
    pub(super) round: AtomicU64,
    pub(super) sweep: Mutex<(Vec<Arc<Client>>, Scratch)>,
    /// Clients holding their changes (`batch_ms`), soonest due first: the
    /// shard's own timer sweeps them, no task is woken per window.
    pub(super) held: Mutex<BinaryHeap<Held>>,
    /// Its delayed clients, by delay (ms): see `fanout::delayed`.
    pub(super) delayed: Mutex<std::collections::BTreeMap<u64, super::delayed::Group>>,
}

/// Sweeps the clients of `held` whose window has ended by `now`.
pub(super) fn sweep_due(held: &mut BinaryHeap<Held>, scratch: &mut Scratch, now: Instant) {
    let mut again = Vec::new();
    while held.peek().is_some_and(|h| h.at <= now) {
        let Some(Held { client, .. }) = held.pop() else {
            break;
        };
        client.held.store(false, Ordering::Relaxed);
        if let Some(at) = sweep_staging(&client, scratch, true) {
            again.push(Held::new(at, client));
        }
        if scratch.staged.len() >= STAGE_RUN {
            send_staged(scratch);
        }
    }
    send_staged(scratch);
    held.extend(again);
}

/// Frames staged before the sweep sends them back to back: 64 rather than
/// 16 (a touch-ahead run) was 3.5% less CPU a frame below saturation, for
/// +0.2 ms at p50 (docs/BENCHMARKS.md).
const STAGE_RUN: usize = 64;

/// Sweeps `client` ([`Client::sweep`]) and notes the frame it staged, if
/// it did, for [`send_staged`].
fn sweep_staging(client: &Arc<Client>, scratch: &mut Scratch, due: bool) -> Option<Instant> {
    let start = scratch.burst.len();
    let hold = client.sweep(scratch, due);
    let end = scratch.burst.len();
    if end > start {
        scratch.staged.push((client.clone(), start..end));
    }
    hold
}

/// Writes the frames a run of the sweep staged, one `send` each, back to
/// back: the run's user-space work (draining, framing) is done first, so a
/// client's reader, woken by the first frames, is still reading when the
/// last arrive instead of falling asleep between them (docs/ARCHITECTURE.md,
/// "Writes from the sweep").
pub(super) fn send_staged(scratch: &mut Scratch) {
    let Scratch { burst, staged, .. } = scratch;
    for (client, range) in staged.drain(..) {
        client.send_staged(&burst[range]);
    }
    burst.clear();
}

/// Sweeps the clients a fan-out round queued, then those held whose window
/// has passed.
pub(super) fn sweep_touched(shard: &Shard, touched: &mut Vec<Arc<Client>>, scratch: &mut Scratch) {
    let mut held = shard.held.lock();
    for run in touched.chunks(super::TOUCH_AHEAD) {
        for client in run {
            client.touch();
            client.sink.touch();
        }
        for client in run {
            if let Some(at) = sweep_staging(client, scratch, false) {
                held.push(Held::new(at, client.clone()));
            }
        }
        if scratch.staged.len() >= STAGE_RUN {
            send_staged(scratch);
        }
    }
    send_staged(scratch);
    touched.clear();
    sweep_due(&mut held, scratch, Instant::now());
}

/// A client held until `at`.
pub(super) struct Held {
    pub(super) at: Instant,
    pub(super) client: Arc<Client>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Reversed: the heap's top is the soonest due.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

impl Held {
    pub(super) fn new(at: Instant, client: Arc<Client>) -> Self {
        client.held.store(true, Ordering::Relaxed);
        Held { at, client }
    }
}

impl Shard {
    pub(super) fn new() -> Self {
        Shard {
            subs: RwLock::new(SymbolMap::default()),
            wildcard: RwLock::new(Vec::new()),
            clients: Mutex::new(HashMap::new()),
            outbox: Mutex::new(Outbox {
                queued: vec![0; LOCATES / 64],
                ..Default::default()
            }),
            wake: Notify::new(),
            fanned_seq: AtomicU64::new(0),
            round: AtomicU64::new(0),
            sweep: Mutex::new((Vec::new(), Scratch::staging())),
            held: Mutex::new(BinaryHeap::new()),
            delayed: Mutex::default(),
        }
    }
}
