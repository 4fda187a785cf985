//! The fan-out hub: from a changed symbol to every client that wants it.
//! (About 750 lines: the hub, its shards and their sweep are one state
//! machine over shared per-client state; the encoding cache, envelopes,
//! hashers and tests live beside it in `fanout/`.)
//!
//! ```text
//! ingest thread ──HubListener──▶ every shard's outbox (ordered events,
//!                                   │ deduplicated per symbol), one wake each
//!                                   ▼
//!          fan-out shard (a thread, a share of the clients): per symbol,
//!          its subscribers in the shard:
//!                       conflate → mark the symbol pending
//!                       every    → push the encoded change on a bounded queue
//!                                   │
//!                                   ▼
//!          the sweep: each touched client written from here (`Sweep`: WS,
//!          SSE) drains everything pending into one frame and writes it
//!          without waiting; other writers (long polls) are woken
//! ```
//!
//! The ingest path only appends to the outboxes: it never waits on a client
//! and its work does not grow with the number of clients. A quote is encoded
//! once per change, into shared `Bytes`, by the first writer that needs it;
//! every other client reuses those bytes. A slow client in `conflate` mode
//! costs at most one pending mark per subscribed symbol, whatever the rate.
//!
//! Here: the hub, its shards, clients and the sweep. Beside it:
//! `encoding` (the encoded quote and the hub's cache of the newest one),
//! `envelope` (frames built from those shared bytes) and `hashers` (the
//! map types keyed by locate or ticker).

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::kinds::Transport;
mod encoding;
pub mod envelope;
mod hashers;

pub use encoding::{Encoded, Format};
pub use hashers::{LocateHasher, LocateSet, SymbolHasher, SymbolMap};

use crate::metrics::StreamMetrics;
use crate::table::{ChangeListener, LOCATES, Quote, Table};
use crate::wire::{Locate, Session};

/// What the fan-out left for a client's writer.
#[derive(Default, Debug)]
pub struct Pending {
    /// Conflated symbols, in order of their first change since the last drain.
    pub marks: Vec<Locate>,
    /// Built only for many marks (see `insert_mark`).
    marked: Option<Box<LocateSet>>,
    /// `every` mode changes, in feed order.
    pub every: VecDeque<Arc<Encoded>>,
    /// The `every` queue overflowed: the client must be closed (4008).
    pub overflow: bool,
    /// The feed started a new session: sequence numbers restart.
    pub reset: Option<Session>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.marks.is_empty() && self.every.is_empty() && !self.overflow && self.reset.is_none()
    }

    /// Marks `locate` unless it already is; false if it was.
    fn insert_mark(&mut self, locate: Locate) -> bool {
        // A few marks (a client drained every sweep) are checked in place,
        // in the one cache line they share; a set is built only for many
        // (a blocked or `*` client).
        let fresh = if self.marks.len() < SCAN_MARKS {
            !self.marks.contains(&locate)
        } else {
            let marks = &self.marks;
            let marked = self.marked.get_or_insert_with(Default::default);
            if marked.is_empty() {
                marked.extend(marks.iter().copied());
            }
            marked.insert(locate)
        };
        if fresh {
            self.marks.push(locate);
        }
        fresh
    }
}

/// Up to this many marks, a client's marks are deduplicated by a scan.
const SCAN_MARKS: usize = 32;

/// The sweep's buffers, shared by every client a shard writes and kept for
/// their capacity: building a frame allocates nothing in steady state.
#[derive(Default)]
pub struct Scratch {
    /// The frame (or frames) being built.
    pub frame: Vec<u8>,
    /// The quotes drained for it.
    pub quotes: Vec<Arc<Encoded>>,
}

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

    /// Wakes the client's task to look at the feed status and shutdown.
    fn poke(&self);
}

/// The hub's side of one client: where the fan-out leaves work and how it
/// wakes the writer.
pub struct Client {
    id: u64,
    /// The fan-out shard that serves it.
    shard: u32,
    transport: Transport,
    pending: Mutex<Pending>,
    notify: Notify,
    every_limit: usize,
    closed: AtomicBool,
    /// Table epoch the client has seen; older resets do not concern it.
    epoch: AtomicU64,
    /// Set for clients written from the sweep: they are not woken per change.
    direct: OnceLock<Weak<dyn Sweep>>,
    /// The last fan-out round that queued this client for its sweep.
    swept: AtomicU64,
    /// Its shard holds its changes (`batch_ms`) until a timer sweeps it:
    /// changes meanwhile only mark it.
    held: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("transport", &self.transport)
            .field("direct", &self.direct.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Waits until something is pending (returns at once if it already is).
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
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

    /// Whether the client's connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Wakes the writer without leaving work (e.g. feed status changed).
    pub fn poke(&self) {
        match self.direct.get().and_then(Weak::upgrade) {
            Some(sink) => sink.poke(),
            None => self.notify.notify_one(),
        }
    }

    /// From now on the fan-out writes this client's frames itself, through
    /// `sink`, instead of waking a task per change.
    pub fn set_direct(&self, sink: Weak<dyn Sweep>) {
        let _ = self.direct.set(sink);
    }

    /// Wakes a task-driven writer that had nothing pending. A direct client
    /// is queued for the sweep of fan-out round `round` instead, once per
    /// round, even with work pending (a throttled symbol's mark must not
    /// hold back the others).
    fn wake(self: &Arc<Self>, was_empty: bool, round: u64, sweep: &mut Vec<Arc<Client>>) {
        if self.direct.get().is_some() {
            if self.held.load(Ordering::Relaxed) {
                return;
            }
            if self.swept.swap(round, Ordering::Relaxed) != round {
                sweep.push(self.clone());
            }
        } else if was_empty {
            self.notify.notify_one();
        }
    }

    /// Marks `locate` pending; true if the client had nothing pending.
    fn mark(&self, locate: Locate, metrics: &StreamMetrics) -> bool {
        let mut p = self.pending.lock();
        let was_empty = p.is_empty();
        if !p.insert_mark(locate) {
            // Replaced before it was sent: the client gets only the newest.
            metrics.conflated.inc();
        }
        was_empty
    }

    /// Queues an `every` change; true if the client had nothing pending.
    fn push_every(&self, enc: &Arc<Encoded>) -> bool {
        let mut p = self.pending.lock();
        let was_empty = p.is_empty();
        if p.every.len() >= self.every_limit {
            p.overflow = true;
            p.every.clear();
        } else if !p.overflow {
            p.every.push_back(enc.clone());
        }
        was_empty
    }

    /// Leaves the new session for the writer; false if it is not news.
    fn reset(&self, session: Session, epoch: u64) -> bool {
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

impl Pending {
    /// Clears the conflation set after a drain so marks can be taken again.
    pub fn into_parts(self) -> (Vec<Locate>, VecDeque<Arc<Encoded>>, bool, Option<Session>) {
        (self.marks, self.every, self.overflow, self.reset)
    }
}

/// A subscription as the fan-out sees it.
#[derive(Clone, Debug)]
struct Subscriber {
    client: Arc<Client>,
    every: bool,
}

#[derive(Clone)]
enum Event {
    Changed(Locate),
    Every(Locate, Quote),
    Reset(Session, u64),
}

#[derive(Default)]
struct Outbox {
    events: Vec<Event>,
    /// Which locates have a `Changed` event waiting (dedup across batches).
    queued: Vec<u64>,
    last_seq: u64,
    every_events: usize,
    every_overflowed: bool,
}

/// Most `every` events waiting for the fan-out before they are dropped (and
/// their subscribers closed as too slow).
const MAX_OUTBOX_EVERY: usize = 1 << 20;

/// One fan-out shard: its own clients and subscriptions, its own outbox of
/// changes, its own sweep. Shards share nothing but the table and the
/// encoding cache; each runs on its own thread.
struct Shard {
    subs: RwLock<SymbolMap<Vec<Subscriber>>>,
    wildcard: RwLock<Vec<Arc<Client>>>,
    clients: Mutex<HashMap<u64, Arc<Client>>>,
    outbox: Mutex<Outbox>,
    wake: Notify,
    fanned_seq: AtomicU64,
    /// Fan-out rounds so far; the sweep's buffers, kept for their capacity.
    round: AtomicU64,
    sweep: Mutex<(Vec<Arc<Client>>, Scratch)>,
    /// Clients holding their changes (`batch_ms`), soonest due first: the
    /// shard's own timer sweeps them, no task is woken per window.
    held: Mutex<BinaryHeap<Held>>,
}

/// Sweeps the clients of `held` whose window has ended by `now`.
fn sweep_due(held: &mut BinaryHeap<Held>, scratch: &mut Scratch, now: Instant) {
    let mut again = Vec::new();
    while held.peek().is_some_and(|h| h.at <= now) {
        let Some(Held { client, .. }) = held.pop() else {
            break;
        };
        client.held.store(false, Ordering::Relaxed);
        if let Some(sink) = client.direct.get().and_then(Weak::upgrade) {
            if let Some(at) = sink.sweep(scratch, true) {
                again.push(Held::new(at, client));
            }
        }
    }
    held.extend(again);
}

/// A client held until `at`.
struct Held {
    at: Instant,
    client: Arc<Client>,
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
    fn new(at: Instant, client: Arc<Client>) -> Self {
        client.held.store(true, Ordering::Relaxed);
        Held { at, client }
    }
}

impl Shard {
    fn new() -> Self {
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
            sweep: Mutex::new((Vec::new(), Scratch::default())),
            held: Mutex::new(BinaryHeap::new()),
        }
    }
}

/// The hub. See the module docs.
pub struct Hub {
    table: Arc<Table>,
    shards: Box<[Shard]>,
    every_subscriptions: AtomicUsize,
    cache: Box<[ArcSwapOption<Encoded>]>,
    next_id: AtomicU64,
    /// Streaming metrics.
    pub metrics: StreamMetrics,
}

impl Hub {
    /// A hub over `table` with one shard.
    pub fn new(table: Arc<Table>, metrics: StreamMetrics) -> Arc<Self> {
        Hub::with_shards(table, metrics, 1)
    }

    /// A hub over `table` whose clients are spread over `shards` shards.
    pub fn with_shards(table: Arc<Table>, metrics: StreamMetrics, shards: usize) -> Arc<Self> {
        Arc::new(Hub {
            table,
            shards: (0..shards.max(1)).map(|_| Shard::new()).collect(),
            every_subscriptions: AtomicUsize::new(0),
            cache: (0..LOCATES).map(|_| ArcSwapOption::empty()).collect(),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    fn shard(&self, client: &Client) -> &Shard {
        &self.shards[client.shard as usize]
    }

    /// The table the hub reads.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The ingest side of the hub, to hand to `feed::start`.
    pub fn listener(self: &Arc<Self>) -> HubListener {
        HubListener {
            hub: self.clone(),
            events: Vec::new(),
            seen: vec![0; LOCATES / 64],
        }
    }

    /// Every change up to this sequence has been marked for the subscribers
    /// of every shard.
    pub fn fanned_seq(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.fanned_seq.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    /// Every change up to this sequence has been marked for `client`'s
    /// shard. Read it before draining the client: it is the promise an
    /// envelope makes.
    pub fn fanned_seq_for(&self, client: &Client) -> u64 {
        self.shard(client).fanned_seq.load(Ordering::Acquire)
    }

    /// Registers a client of `transport`.
    pub fn register(&self, transport: Transport, every_limit: usize) -> Arc<Client> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(Client {
            id,
            shard: (id % self.shards.len() as u64) as u32,
            transport,
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            every_limit,
            closed: AtomicBool::new(false),
            epoch: AtomicU64::new(self.table.epoch()),
            direct: OnceLock::new(),
            swept: AtomicU64::new(0),
            held: AtomicBool::new(false),
        });
        self.shard(&client)
            .clients
            .lock()
            .insert(client.id, client.clone());
        self.metrics.clients.get_or_create(&transport.into()).inc();
        client
    }

    /// Removes a client and all its subscriptions.
    pub fn unregister(&self, client: &Arc<Client>, symbols: &[Arc<str>]) {
        client.closed.store(true, Ordering::Relaxed);
        self.unsubscribe(client, symbols);
        self.unsubscribe_all(client);
        if self
            .shard(client)
            .clients
            .lock()
            .remove(&client.id)
            .is_some()
        {
            self.metrics
                .clients
                .get_or_create(&client.transport.into())
                .dec();
        }
    }

    /// Subscribes `client` to `symbol` (a listed ticker).
    pub fn subscribe(&self, client: &Arc<Client>, symbol: &Arc<str>, every: bool) {
        let mut subs = self.shard(client).subs.write();
        let list = subs.entry(symbol.clone()).or_default();
        if let Some(s) = list.iter_mut().find(|s| Arc::ptr_eq(&s.client, client)) {
            if s.every != every {
                s.every = every;
                self.adjust_every(every);
            }
            return;
        }
        list.push(Subscriber {
            client: client.clone(),
            every,
        });
        drop(subs);
        if every {
            self.adjust_every(true);
        }
        self.metrics
            .subscriptions
            .get_or_create(&client.transport.into())
            .inc();
    }

    fn adjust_every(&self, up: bool) {
        if up {
            self.every_subscriptions.fetch_add(1, Ordering::Relaxed);
        } else {
            self.every_subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removes `client`'s subscriptions to `symbols`.
    pub fn unsubscribe(&self, client: &Arc<Client>, symbols: &[Arc<str>]) {
        let mut subs = self.shard(client).subs.write();
        for symbol in symbols {
            let Some(list) = subs.get_mut(symbol) else {
                continue;
            };
            if let Some(i) = list.iter().position(|s| Arc::ptr_eq(&s.client, client)) {
                let s = list.swap_remove(i);
                if s.every {
                    self.adjust_every(false);
                }
                self.metrics
                    .subscriptions
                    .get_or_create(&client.transport.into())
                    .dec();
            }
            if list.is_empty() {
                subs.remove(symbol);
            }
        }
    }

    /// Subscribes `client` to every symbol, present and future.
    pub fn subscribe_all(&self, client: &Arc<Client>) {
        let mut w = self.shard(client).wildcard.write();
        if !w.iter().any(|c| Arc::ptr_eq(c, client)) {
            w.push(client.clone());
            self.metrics.wildcard_subscriptions.inc();
        }
    }

    /// Ends `client`'s subscription to every symbol.
    pub fn unsubscribe_all(&self, client: &Arc<Client>) {
        let mut w = self.shard(client).wildcard.write();
        if let Some(i) = w.iter().position(|c| Arc::ptr_eq(c, client)) {
            w.swap_remove(i);
            self.metrics.wildcard_subscriptions.dec();
        }
    }

    /// Runs every shard's fan-out in this task until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let shards = (0..self.shards.len()).map(|i| self.run_shard(i, cancel.clone()));
        futures_util::future::join_all(shards).await;
    }

    /// Runs each shard's fan-out on a thread of its own until `cancel` fires.
    pub fn spawn_shards(
        self: &Arc<Self>,
        cancel: &CancellationToken,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        (0..self.shards.len())
            .map(|i| {
                let (hub, cancel) = (self.clone(), cancel.clone());
                std::thread::Builder::new()
                    .name(format!("fanout-{i}"))
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_time()
                            .build();
                        match rt {
                            Ok(rt) => rt.block_on(hub.run_shard(i, cancel)),
                            Err(e) => tracing::error!(error = %e, "fan-out shard failed to start"),
                        }
                    })
            })
            .collect()
    }

    async fn run_shard(&self, i: usize, cancel: CancellationToken) {
        let shard = &self.shards[i];
        loop {
            let next = shard.held.lock().peek().map(|h| h.at);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = shard.wake.notified() => self.fan_out(shard),
                _ = sleep_until(next) => {
                    let mut sweep = shard.sweep.lock();
                    self.sweep_due(shard, &mut sweep.1);
                }
            }
        }
    }

    /// Sweeps the held clients whose window has passed.
    fn sweep_due(&self, shard: &Shard, scratch: &mut Scratch) {
        sweep_due(&mut shard.held.lock(), scratch, Instant::now());
    }

    fn fan_out(&self, shard: &Shard) {
        let (events, last_seq, every_overflowed) = {
            let mut out = shard.outbox.lock();
            let events = std::mem::take(&mut out.events);
            // Clear only the bits these events set: a batch touches a few
            // symbols, the bitmap covers all 65,536.
            for e in &events {
                if let Event::Changed(l) = e {
                    clear_bit(&mut out.queued, *l);
                }
            }
            out.every_events = 0;
            (
                events,
                out.last_seq,
                std::mem::take(&mut out.every_overflowed),
            )
        };
        let epoch = self.table.epoch();
        let round = shard.round.fetch_add(1, Ordering::Relaxed) + 1;
        let mut sweep = shard.sweep.lock();
        let (touched, scratch) = &mut *sweep;
        {
            let subs = shard.subs.read();
            let wildcard = shard.wildcard.read();
            for event in events {
                match event {
                    Event::Changed(locate) => {
                        let Some(info) = self.table.info(locate) else {
                            continue;
                        };
                        if let Some(list) = subs.get(&info.symbol) {
                            for s in list.iter().filter(|s| !s.every) {
                                let was_empty = s.client.mark(locate, &self.metrics);
                                s.client.wake(was_empty, round, touched);
                            }
                        }
                        for c in wildcard.iter() {
                            let was_empty = c.mark(locate, &self.metrics);
                            c.wake(was_empty, round, touched);
                        }
                    }
                    Event::Every(locate, quote) => {
                        if let Some(list) = subs.get(&quote.symbol) {
                            if list.iter().any(|s| s.every) {
                                let enc = Arc::new(Encoded::new(locate, quote, epoch));
                                for s in list.iter().filter(|s| s.every) {
                                    let was_empty = s.client.push_every(&enc);
                                    s.client.wake(was_empty, round, touched);
                                }
                            }
                        }
                    }
                    Event::Reset(session, epoch) => {
                        for slot in self.cache.iter() {
                            if slot.load().is_some() {
                                slot.store(None);
                            }
                        }
                        for c in shard.clients.lock().values() {
                            if c.reset(session, epoch) {
                                c.wake(true, round, touched);
                            }
                        }
                    }
                }
            }
            if every_overflowed {
                for list in subs.values() {
                    for s in list.iter().filter(|s| s.every) {
                        s.client.pending.lock().overflow = true;
                        s.client.wake(true, round, touched);
                    }
                }
            }
        }
        // Published before the sweep: its frames promise this batch.
        shard.fanned_seq.store(last_seq, Ordering::Release);
        let mut held = shard.held.lock();
        for client in touched.drain(..) {
            if let Some(sink) = client.direct.get().and_then(Weak::upgrade) {
                if let Some(at) = sink.sweep(scratch, false) {
                    held.push(Held::new(at, client));
                }
            }
        }
        sweep_due(&mut held, scratch, Instant::now());
    }

    /// Fans out what every shard's outbox holds, here and now.
    #[cfg(test)]
    fn fan_out_all(&self) {
        for shard in self.shards.iter() {
            self.fan_out(shard);
        }
    }

    /// Wakes every client (feed status changed, shutdown).
    pub fn poke_all(&self) {
        for shard in self.shards.iter() {
            // Outside the lock: a poke may hold the last reference to a
            // connection's write side, whose drop unregisters the client.
            let clients: Vec<Arc<Client>> = shard.clients.lock().values().cloned().collect();
            for c in clients {
                c.poke();
            }
        }
    }
}

/// The hub's ingest-side half: collects changes during a batch and hands
/// them over once per batch. Lives on the ingest thread.
pub struct HubListener {
    hub: Arc<Hub>,
    events: Vec<Event>,
    seen: Vec<u64>,
}

fn clear_bit(bits: &mut [u64], locate: Locate) {
    bits[usize::from(locate) / 64] &= !(1 << (usize::from(locate) % 64));
}

fn test_and_set(bits: &mut [u64], locate: Locate) -> bool {
    let (w, b) = (usize::from(locate) / 64, usize::from(locate) % 64);
    let was = bits[w] & (1 << b) != 0;
    bits[w] |= 1 << b;
    was
}

impl ChangeListener for HubListener {
    fn changed(&mut self, locate: Locate, _seq: u64) {
        if !test_and_set(&mut self.seen, locate) {
            self.events.push(Event::Changed(locate));
        }
        if self.hub.every_subscriptions.load(Ordering::Relaxed) > 0 {
            if let Some(q) = self.hub.table.quote(locate) {
                self.events.push(Event::Every(locate, q));
            }
        }
    }

    fn batch_done(&mut self, last_seq: u64) {
        for event in &self.events {
            if let Event::Changed(l) = event {
                clear_bit(&mut self.seen, *l);
            }
        }
        // Every shard gets the batch's changes: each walks its own clients.
        let last = self.hub.shards.len() - 1;
        for (i, shard) in self.hub.shards.iter().enumerate() {
            let events = if i == last {
                std::mem::take(&mut self.events)
            } else {
                self.events.clone()
            };
            let mut out = shard.outbox.lock();
            for event in events {
                match event {
                    Event::Changed(l) => {
                        if !test_and_set(&mut out.queued, l) {
                            out.events.push(Event::Changed(l));
                        }
                    }
                    Event::Every(l, q) => {
                        if out.every_events < MAX_OUTBOX_EVERY {
                            out.every_events += 1;
                            out.events.push(Event::Every(l, q));
                        } else {
                            out.every_overflowed = true;
                        }
                    }
                    Event::Reset(s, e) => {
                        out.queued.iter_mut().for_each(|w| *w = 0);
                        out.events.push(Event::Reset(s, e));
                    }
                }
            }
            out.last_seq = last_seq;
            drop(out);
            shard.wake.notify_one();
        }
    }

    fn session_reset(&mut self, session: Session) {
        self.seen.iter_mut().for_each(|w| *w = 0);
        // The table was reset just before: its epoch names this session.
        self.events
            .push(Event::Reset(session, self.hub.table.epoch()));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests;
