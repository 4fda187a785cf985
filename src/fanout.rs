//! The fan-out hub: from a changed symbol to every client that wants it.
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
//! Here: the hub (subscribe, unsubscribe, the shards' fan-out loop). Beside
//! it: `client` (the hub's side of one client), `pending` (what is left for
//! its writer), `shard` (a shard's clients, outbox and held heap),
//! `listener` (the ingest thread's half), `encoding` (the encoded quote and
//! the hub's cache of the newest one), `envelope` (frames built from those
//! shared bytes) and `hashers` (the map types keyed by locate or ticker).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::transport::kind::Transport;

mod client;
mod delayed;
mod encoding;
pub mod envelope;
mod hashers;
mod listener;
mod pending;
mod shard;

pub use client::{Client, Sweep};
pub use delayed::At;
pub use encoding::{Encoded, Format};
pub use hashers::{LocateHasher, LocateSet, SymbolHasher, SymbolMap};
pub use listener::HubListener;
use listener::clear_bit;
pub use pending::{Pending, Scratch};
use shard::{Event, MAX_OUTBOX_EVERY, Shard, Subscriber, sweep_due, sweep_touched};

use crate::metrics::StreamMetrics;
use crate::table::{ChangeListener, DelayedView, LOCATES, Table};

/// The hub. See the module docs.
pub struct Hub {
    table: Arc<Table>,
    shards: Box<[Shard]>,
    every_subscriptions: AtomicUsize,
    cache: Box<[ArcSwapOption<Encoded>]>,
    /// The delayed view, when delayed users may connect.
    delayed: Option<Arc<DelayedView>>,
    /// The newest encoding read from the delayed view, per locate.
    delayed_cache: Box<[ArcSwapOption<Encoded>]>,
    /// The last delta built, per locate.
    delta_cache: Box<[ArcSwapOption<encoding::DeltaEntry>]>,
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
        Hub::with_view(table, metrics, shards, None)
    }

    /// A hub over `table` and, for delayed users, its `delayed` view (the
    /// hub's ingest half keeps it).
    pub fn with_view(
        table: Arc<Table>,
        metrics: StreamMetrics,
        shards: usize,
        delayed: Option<Arc<DelayedView>>,
    ) -> Arc<Self> {
        let cache = || (0..LOCATES).map(|_| ArcSwapOption::empty()).collect();
        Arc::new(Hub {
            table,
            shards: (0..shards.max(1)).map(|_| Shard::new()).collect(),
            every_subscriptions: AtomicUsize::new(0),
            cache: cache(),
            delayed_cache: if delayed.is_some() {
                cache()
            } else {
                Box::new([])
            },
            delayed,
            delta_cache: (0..LOCATES).map(|_| ArcSwapOption::empty()).collect(),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    /// The delayed view, when delayed users may connect.
    pub fn delayed(&self) -> Option<&Arc<DelayedView>> {
        self.delayed.as_ref()
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
            second: 0,
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
        self.register_delayed(transport, every_limit, 0)
    }

    /// Registers a client of `transport` whose data is delayed `delay_ms`
    /// (0: real time; without a delayed view, always real time — the doors
    /// refuse delayed users then).
    pub fn register_delayed(
        &self,
        transport: Transport,
        every_limit: usize,
        delay_ms: u64,
    ) -> Arc<Client> {
        self.register_with(transport, every_limit, delay_ms, Notify::new())
    }

    /// [`Hub::register_delayed`] with the client's writer, `sink`, in the
    /// client's own allocation (see [`Client`]).
    pub fn register_with<S: Sweep + 'static>(
        &self,
        transport: Transport,
        every_limit: usize,
        delay_ms: u64,
        sink: S,
    ) -> Arc<Client<S>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shard = (id % self.shards.len() as u64) as u32;
        let make = |delayed| {
            Arc::new(Client {
                pending: Mutex::new(Pending::default()),
                swept: AtomicU64::new(0),
                direct: AtomicBool::new(false),
                held: AtomicBool::new(false),
                clocked: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                shard,
                transport,
                delayed,
                id,
                every_limit: u32::try_from(every_limit).unwrap_or(u32::MAX),
                epoch: AtomicU64::new(self.table.epoch()),
                sink,
            })
        };
        let client = self.join_delayed(&self.shards[shard as usize], delay_ms, make);
        self.shards[shard as usize]
            .clients
            .lock()
            .insert(id, client.clone());
        self.metrics.clients.get_or_create(&transport.into()).inc();
        client
    }

    /// Removes a client and all its subscriptions.
    pub fn unregister(&self, client: &Arc<Client>, symbols: &[Arc<str>]) {
        client.closed.store(true, Ordering::Relaxed);
        if client.delayed.is_some() {
            self.leave_delayed(client);
        }
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
        // A delayed client's changes come a step at a time: conflated.
        let every = every && client.delayed.is_none();
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
            live: client.delayed.is_none(),
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
        // The delayed view moves a step at a time; without one, never.
        let step = self.delayed.as_ref().map(|v| v.resolution_ms());
        let mut delayed = tokio::time::interval(Duration::from_millis(step.unwrap_or(3_600_000)));
        delayed.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let next = shard.held.lock().peek().map(|h| h.at);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = shard.wake.notified() => self.fan_out(shard),
                _ = delayed.tick(), if step.is_some() => self.tick_delayed(shard),
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
        self.metrics.fanout_rounds.inc();
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
                        // Delayed clients are marked by the view's tick.
                        if let Some(list) = subs.get(&info.symbol) {
                            for run in list.chunks(TOUCH_AHEAD) {
                                run.iter().for_each(|s| s.client.touch());
                                for s in run.iter().filter(|s| !s.every && s.live) {
                                    let was_empty = s.client.mark(locate, &self.metrics);
                                    s.client.wake(was_empty, round, touched);
                                }
                            }
                        }
                        for c in wildcard.iter().filter(|c| c.delayed.is_none()) {
                            let was_empty = c.mark(locate, &self.metrics);
                            c.wake(was_empty, round, touched);
                        }
                    }
                    Event::Every(locate, quote) => {
                        if let Some(list) = subs.get(&quote.symbol)
                            && list.iter().any(|s| s.every)
                        {
                            let enc = Arc::new(Encoded::new(locate, quote, epoch));
                            for s in list.iter().filter(|s| s.every) {
                                let was_empty = s.client.push_every(&enc);
                                s.client.wake(was_empty, round, touched);
                            }
                        }
                    }
                    Event::Clock => {
                        for c in shard.clients.lock().values() {
                            if c.clocked.load(Ordering::Relaxed) {
                                let was_empty = c.tick();
                                c.wake(was_empty, round, touched);
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
                            // The view starts again with the session.
                            if let Some(p) = &c.delayed {
                                p.reset();
                            }
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
        sweep_touched(shard, touched, scratch);
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
            // client that left, whose drop frees its write side.
            let clients: Vec<Arc<Client>> = shard.clients.lock().values().cloned().collect();
            for c in clients {
                c.poke();
            }
        }
    }
}

/// Clients whose lines the fan-out loads together before it marks them
/// (and the sweep before it writes them): their misses overlap.
const TOUCH_AHEAD: usize = 16;

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
pub(crate) mod tests;
