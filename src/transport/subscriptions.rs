//! What the streaming transports share: a client's subscriptions, the drain
//! that turns the hub's pending marks into one batch of quotes, and the
//! promise (`seq`) each batch carries.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::clock::now_ns;
use crate::fanout::{At, Client, Encoded, Hub};
use crate::metrics::TransportCounters;
use crate::table::{BookFrame, Table};
use crate::transport::bookstream::BookSubs;
use crate::transport::chartstream::{ChartFrame, ChartSubs};
use crate::wire::{Locate, Session};

mod charts;
mod params;
pub use params::*;

/// One subscribed symbol's delivery state: 48 bytes.
#[derive(Debug)]
struct Sub {
    name: Arc<str>,
    last_seq: u64,
    /// Only with `max_hz` (rare): kept out of line.
    throttle: Option<Box<Throttle>>,
    /// With `delta`: the quote this client last got, whole (its copy).
    last: Option<Arc<Encoded>>,
    delta: bool,
}

/// A `max_hz` symbol's spacing.
#[derive(Debug)]
struct Throttle {
    min: Duration,
    /// When it was last sent.
    last_at: Option<Instant>,
}

impl Sub {
    /// What to send of `enc`: itself, or with `delta` the difference to the
    /// client's copy (which becomes `enc`).
    fn diff(&mut self, hub: &Hub, enc: Arc<Encoded>) -> Arc<Encoded> {
        if !self.delta {
            return enc;
        }
        let out = match &self.last {
            Some(old) if old.epoch == enc.epoch => hub.delta(old, &enc),
            _ => enc.clone(),
        };
        self.last = Some(enc);
        out
    }

    fn new(name: Arc<str>, opts: SubOptions) -> Self {
        let mut sub = Sub {
            name,
            last_seq: 0,
            throttle: None,
            last: None,
            delta: false,
        };
        sub.set_opts(opts);
        sub
    }

    /// Applies `opts`, keeping when the symbol was last sent.
    fn set_opts(&mut self, opts: SubOptions) {
        if !opts.delta {
            self.last = None;
        }
        self.delta = opts.delta;
        self.throttle = opts.min_interval.map(|min| {
            let last_at = self.throttle.as_ref().and_then(|t| t.last_at);
            Box::new(Throttle { min, last_at })
        });
    }
}

/// A client's subscriptions keyed by locate: the keys sorted in one small
/// array beside the entries, so the drain finds a quote's entry with a
/// binary search over a cache line or two instead of hashing a ticker into
/// a map spread over the heap (the sweep does this once per quote per
/// client). Names are kept for relistings (a new session, a ticker moved):
/// an entry is re-filed when its ticker is first seen at another locate.
#[derive(Debug, Default)]
struct SubTable {
    keys: Vec<Locate>,
    subs: Vec<Sub>,
    /// The table's `listings` moved since the entries were filed: some may
    /// be under a locate that is not their ticker's now, so lookups that
    /// miss fall back to the name.
    misfiled: bool,
    /// The table's `listings` when last looked at.
    listings: u64,
}

impl SubTable {
    fn len(&self) -> usize {
        self.subs.len()
    }

    /// The entry of ticker `name` filed under `locate`.
    fn filed(&self, locate: Locate, name: &str) -> Option<usize> {
        let i = self.keys.binary_search(&locate).ok()?;
        (&*self.subs[i].name == name).then_some(i)
    }

    /// Loads the entry filed under `locate`, without waiting for it:
    /// touched for every mark of a drain before any is read, the entries'
    /// cache misses overlap instead of following one another.
    fn touch(&self, locate: Locate) {
        if let Ok(i) = self.keys.binary_search(&locate) {
            std::hint::black_box(self.subs[i].last_seq);
        }
    }

    /// The entry of ticker `name`, wherever it is filed.
    fn named(&self, name: &str) -> Option<usize> {
        self.subs.iter().position(|s| &*s.name == name)
    }

    /// Whether an entry may be misfiled, `listings` being the table's.
    fn may_be_misfiled(&self, listings: u64) -> bool {
        self.misfiled || listings != self.listings
    }

    /// The entry for the quote of `name` at `locate`: filed there, or (after
    /// a relisting) filed elsewhere under its name, then re-filed. The table
    /// is asked only on a miss.
    fn find(&mut self, locate: Locate, name: &str, table: &Table) -> Option<usize> {
        if let Some(i) = self.filed(locate, name) {
            return Some(i);
        }
        let listings = table.listings();
        if !self.may_be_misfiled(listings) {
            return None;
        }
        self.misfiled = true;
        self.listings = listings;
        let i = self.named(name)?;
        let sub = self.subs.remove(i);
        self.keys.remove(i);
        Some(self.insert(locate, sub))
    }

    /// The entry of ticker `name`, listed at `locate` if it is; `listings`
    /// is the table's.
    fn lookup(&self, locate: Option<Locate>, name: &str, listings: u64) -> Option<usize> {
        locate
            .and_then(|l| self.filed(l, name))
            .or_else(|| self.named(name).filter(|_| self.may_be_misfiled(listings)))
    }

    fn insert(&mut self, key: Locate, sub: Sub) -> usize {
        let at = self.keys.partition_point(|&k| k <= key);
        self.keys.insert(at, key);
        self.subs.insert(at, sub);
        at
    }

    fn remove(&mut self, i: usize) {
        self.keys.remove(i);
        self.subs.remove(i);
    }
}

/// One batch to send.
#[derive(Debug, Default)]
pub struct Batch {
    /// The envelope's promise: every change to this client's symbols up to
    /// here is in this batch or an earlier one.
    pub seq: u64,
    /// Quotes, each symbol at most once in conflate mode.
    pub quotes: Vec<Arc<Encoded>>,
    /// The `every` queue overflowed: close the client (4008).
    pub overflow: bool,
    /// The feed started a new session before this batch.
    pub reset: Option<Session>,
    /// `book` frames: each subscribed book that changed, as the difference
    /// to what this client last got.
    pub books: Vec<BookFrame>,
    /// `trades` and `bars` frames: what is newer than each subscription
    /// last sent.
    pub charts: Vec<ChartFrame>,
    /// With `overflow`: a chart subscription fell behind (the reason told).
    pub lagged: Option<String>,
}

/// A streaming client's subscriptions and delivery state.
pub struct Subscriptions {
    hub: Arc<Hub>,
    /// The hub's client. Not owned: a streaming client's subscriptions live
    /// in the client's own allocation (its write side), and the connection's
    /// task owns the client.
    client: Weak<Client>,
    subs: SubTable,
    /// `*`: every symbol, with these options (boxed: the rest pay one
    /// empty pointer).
    wildcard: Option<Box<SubOptions>>,
    /// When a throttled symbol becomes due.
    pub next_due: Option<Instant>,
    /// The last promise sent.
    pub promised: u64,
    /// What snapshots already covered: later batches promise at least this.
    floor: u64,
    /// `batch_ms` (boxed: a connection without it pays one empty pointer).
    batch: Option<Box<Batching>>,
    /// Book subscriptions, each with the levels this client holds.
    books: BookSubs,
    /// Trades and bars subscriptions, each with what this client holds
    /// (boxed: a connection without any pays one empty pointer).
    charts: Option<Box<ChartSubs>>,
}

/// A connection's `batch_ms`: the least time between two frames, and when
/// the last batch with quotes was drained.
#[derive(Clone, Copy)]
struct Batching {
    window: Duration,
    last: Option<Instant>,
}

thread_local! {
    /// The marks a drain takes, kept for their capacity: one buffer per
    /// thread rather than one per client.
    static MARKS: std::cell::Cell<Vec<Locate>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Subscriptions {
    /// Empty, for `client` (its owner keeps it: see `client`).
    pub fn new(hub: Arc<Hub>, client: Weak<Client>) -> Self {
        let subs = SubTable {
            listings: hub.table().listings(),
            ..SubTable::default()
        };
        Subscriptions {
            hub,
            subs,
            client,
            wildcard: None,
            next_due: None,
            promised: 0,
            floor: 0,
            batch: None,
            books: BookSubs::default(),
            charts: None,
        }
    }

    /// Sets `batch_ms` for the whole connection (`None` or zero: immediate).
    pub fn set_batch(&mut self, batch: Option<Duration>) {
        self.batch = batch.filter(|b| !b.is_zero()).map(|window| {
            let last = self.batch.as_ref().and_then(|b| b.last);
            Box::new(Batching { window, last })
        });
    }

    /// The `batch_ms` window, if any.
    pub fn batch(&self) -> Option<Duration> {
        self.batch.as_ref().map(|b| b.window)
    }

    /// With `batch_ms`, when the next frame may go out if that is still
    /// ahead: changes until then are gathered into it. `None`: drain now.
    pub fn hold_until(&self, now: Instant) -> Option<Instant> {
        let Batching { window, last } = **self.batch.as_ref()?;
        // Timed short by what a timer may fire late (its resolution), so a
        // change waits at most `batch_ms`, as the protocol promises.
        let at = last? + window - TIMER_SLACK.min(window / 4);
        (at > now).then_some(at)
    }

    /// The hub client, while its owner holds it: always, but while the
    /// client's allocation is being freed (and with it these
    /// subscriptions), when there is nothing left to do.
    fn client(&self) -> Option<Arc<Client>> {
        self.client.upgrade()
    }

    /// [`Hub::position`] of the client (nothing: when it is gone).
    fn position(&self) -> (u64, At) {
        self.client()
            .map_or((0, At::Live), |c| self.hub.position(&c))
    }

    /// [`Hub::snapshot_position`] of the client (nothing: when it is gone).
    fn snapshot_position(&self) -> (u64, At) {
        self.client()
            .map_or((0, At::Live), |c| self.hub.snapshot_position(&c))
    }

    /// Number of symbol subscriptions (the wildcard counts as one).
    pub fn len(&self) -> usize {
        self.subs.len() + usize::from(self.wildcard.is_some())
    }

    /// Whether nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `symbol` is subscribed (by name).
    pub fn contains(&self, symbol: &str) -> bool {
        let table = self.hub.table();
        self.subs
            .lookup(table.locate(symbol), symbol, table.listings())
            .is_some()
    }

    /// Subscribes to listed `symbols` and returns their current quotes for the
    /// snapshot: all of them, or with `since = Some(seq)` of the same
    /// session only those changed after it. Returns the snapshot's promise.
    pub fn subscribe(
        &mut self,
        symbols: &[Arc<str>],
        opts: SubOptions,
        since: Option<u64>,
    ) -> (u64, Vec<Arc<Encoded>>) {
        let Some(client) = self.client() else {
            return (self.promised, Vec::new());
        };
        for s in symbols {
            self.hub.subscribe(&client, s, opts.every);
        }
        // Registered first, read second: a change after the read is marked
        // pending and follows; one up to the table's sequence read here is
        // in the newest quotes read next, whether or not the fan-out has
        // seen it yet. (A delayed client: the view's, at its cutoff.)
        let (seq, at) = self.hub.snapshot_position(&client);
        let table = self.hub.table().clone();
        let current = symbols
            .iter()
            .filter_map(|s| table.locate(s).and_then(|l| self.hub.current_at(l, at)));
        let current: Vec<Arc<Encoded>> = current.collect();
        self.snapshot(seq, current, opts, resumable(since, seq, at), true)
    }

    /// Subscribes to every symbol; returns the snapshot like [`Self::subscribe`].
    pub fn subscribe_all(
        &mut self,
        opts: SubOptions,
        since: Option<u64>,
    ) -> (u64, Vec<Arc<Encoded>>) {
        let Some(client) = self.client() else {
            return (self.promised, Vec::new());
        };
        self.hub.subscribe_all(&client);
        self.wildcard = Some(Box::new(opts));
        let (seq, at) = self.hub.snapshot_position(&client);
        let table = self.hub.table().clone();
        let current: Vec<Arc<Encoded>> = table
            .locates()
            .into_iter()
            .filter_map(|l| self.hub.current_at(l, at))
            .collect();
        self.snapshot(seq, current, opts, resumable(since, seq, at), false)
    }

    /// Records the current quotes as sent and keeps those the snapshot
    /// carries: not already sent, and changed after `since` when resuming.
    /// `set_opts` applies `opts` to symbols subscribed before.
    fn snapshot(
        &mut self,
        seq: u64,
        current: Vec<Arc<Encoded>>,
        opts: SubOptions,
        since: Option<u64>,
        set_opts: bool,
    ) -> (u64, Vec<Arc<Encoded>>) {
        let table: &Table = self.hub.table();
        // Grown to fit: a connection keeps this for its life.
        self.subs.keys.reserve_exact(current.len());
        self.subs.subs.reserve_exact(current.len());
        let mut quotes = Vec::with_capacity(current.len());
        // A delayed view may hold nothing yet of a symbol (`seq` 0): the
        // snapshot still names it, as a delayed REST snapshot does.
        let delayed = matches!(self.position().1, At::Cutoff(_));
        for enc in current {
            let (i, new) = match self.subs.find(enc.locate, &enc.quote.symbol, table) {
                Some(i) => {
                    if set_opts {
                        self.subs.subs[i].set_opts(opts);
                    }
                    (i, false)
                }
                None => (
                    self.subs
                        .insert(enc.locate, Sub::new(enc.quote.symbol.clone(), opts)),
                    true,
                ),
            };
            let entry = &mut self.subs.subs[i];
            if entry.last_seq >= enc.quote.seq && !(new && delayed && since.is_none()) {
                continue;
            }
            entry.last_seq = enc.quote.seq;
            if since.is_none_or(|since| enc.quote.seq > since) {
                // A snapshot quote is whole: the client's copy starts here.
                if entry.delta {
                    entry.last = Some(enc.clone());
                }
                quotes.push(enc);
            }
        }
        self.promised = self.promised.max(seq);
        self.floor = self.floor.max(seq);
        (seq, quotes)
    }

    /// `since` as this client may resume from it (see [`resumable`]).
    pub fn resume_from(&self, since: Option<u64>) -> Option<u64> {
        let (seq, at) = self.snapshot_position();
        resumable(since, seq, at)
    }

    /// Ends subscriptions to `symbols` (`*` ends the wildcard).
    pub fn unsubscribe(&mut self, symbols: &[Arc<str>]) {
        if symbols.iter().any(|s| &**s == "*")
            && self.wildcard.take().is_some()
            && let Some(client) = self.client()
        {
            self.hub.unsubscribe_all(&client);
        }
        let table = self.hub.table().clone();
        for s in symbols {
            if let Some(i) = self.subs.lookup(table.locate(s), s, table.listings()) {
                self.subs.remove(i);
            }
        }
        self.release(symbols);
    }

    /// The trades and bars subscriptions (none yet: an empty set).
    fn charts(&self) -> &ChartSubs {
        static NONE: std::sync::LazyLock<ChartSubs> = std::sync::LazyLock::new(ChartSubs::default);
        self.charts.as_deref().unwrap_or(&NONE)
    }

    /// The trades and bars subscriptions, made at the first.
    fn charts_mut(&mut self) -> &mut ChartSubs {
        self.charts.get_or_insert_with(Box::default)
    }

    /// Whether anything of `symbol` is subscribed: its quote, book, trades
    /// or bars (the hub marks it for this client while so).
    fn wanted(&self, symbol: &str) -> bool {
        self.contains(symbol) || self.books.contains(symbol) || self.charts().contains(symbol)
    }

    /// Registers `symbol` with the hub unless something of it already is
    /// (a quote subscription in `every` mode stays so).
    fn hold(&self, symbol: &Arc<str>) {
        if !self.wanted(symbol)
            && let Some(client) = self.client()
        {
            self.hub.subscribe(&client, symbol, false);
        }
    }

    /// Ends the hub's marks of those `symbols` nothing is subscribed to now.
    fn release(&self, symbols: &[Arc<str>]) {
        let gone: Vec<Arc<str>> = symbols
            .iter()
            .filter(|s| &***s != "*" && !self.wanted(s))
            .cloned()
            .collect();
        if let Some(client) = self.client() {
            self.hub.unsubscribe(&client, &gone);
        }
    }

    /// Subscribes to the books of listed `symbols` at `depth`; returns
    /// their snapshots. Registered with the hub first, read second, as
    /// quotes are: a change after the read is marked and follows as a diff.
    pub fn subscribe_books(&mut self, symbols: &[Arc<str>], depth: usize) -> Vec<BookFrame> {
        let table = self.hub.table().clone();
        let mut frames = Vec::with_capacity(symbols.len());
        for s in symbols {
            self.hold(s);
            if let Some(l) = table.locate(s) {
                frames.extend(self.books.subscribe(s, l, depth, &table));
            }
        }
        frames
    }

    /// Ends the book subscriptions of `symbols`.
    pub fn unsubscribe_books(&mut self, symbols: &[Arc<str>]) {
        for s in symbols {
            self.books.unsubscribe(s);
        }
        self.release(symbols);
    }

    /// Whether `symbol`'s book is subscribed.
    pub fn books_contain(&self, symbol: &str) -> bool {
        self.books.contains(symbol)
    }

    /// Every symbol whose book is subscribed.
    pub fn book_names(&self) -> Vec<Arc<str>> {
        self.books.names()
    }

    /// Number of book subscriptions.
    pub fn book_count(&self) -> usize {
        self.books.len()
    }

    /// Takes what the hub left and builds one batch. Throttled symbols not
    /// yet due stay pending and set [`Self::next_due`].
    pub fn drain(&mut self) -> Batch {
        let mut quotes = Vec::new();
        let mut batch = self.drain_into(&mut quotes);
        batch.quotes = quotes;
        batch
    }

    /// [`Self::drain`] with the quotes appended to `quotes` (the sweep's
    /// reused buffer: no allocation per frame) instead of `Batch::quotes`.
    pub fn drain_into(&mut self, quotes: &mut Vec<Arc<Encoded>>) -> Batch {
        // The promise first, then where to read: see `Hub::position`.
        let Some(client) = self.client() else {
            return Batch::default();
        };
        let (fanned, at) = self.hub.position(&client);
        let mut marks = MARKS.take();
        marks.clear();
        let (every, overflow, reset) = client.take_into(&mut marks);
        let mut batch = Batch {
            seq: fanned,
            overflow,
            reset,
            quotes: Vec::new(),
            books: Vec::new(),
            charts: Vec::new(),
            lagged: None,
        };
        let start = quotes.len();
        if let Some(session) = reset {
            // Sequences restart: forget what was sent, resend current state.
            tracing::debug!(session = %session, "client sees a new feed session");
            for sub in self.subs.subs.iter_mut() {
                sub.last_seq = 0;
                sub.last = None;
                if let Some(t) = &mut sub.throttle {
                    t.last_at = None;
                }
            }
            self.promised = 0;
            self.floor = 0;
            self.books.resync(self.hub.table(), &mut batch.books);
            if let Some(c) = self.charts.as_mut() {
                c.resync(self.hub.table());
            }
        }
        if overflow {
            MARKS.set(marks);
            return batch;
        }
        // The clock is read only for a throttle or a batch window.
        let mut now = None;
        let table: &Table = self.hub.table();
        let mut promise = fanned.max(self.floor);
        self.next_due = None;
        for enc in every {
            self.books.changed(enc.locate, table, &mut batch.books);
            let Some(i) = self.subs.find(enc.locate, &enc.quote.symbol, table) else {
                continue;
            };
            let sub = &mut self.subs.subs[i];
            if enc.quote.seq > sub.last_seq {
                sub.last_seq = enc.quote.seq;
                quotes.push(sub.diff(&self.hub, enc));
            }
        }
        marks.iter().for_each(|&l| self.subs.touch(l));
        for &locate in &marks {
            self.books.changed(locate, table, &mut batch.books);
            let Some(enc) = self.hub.current_at(locate, at) else {
                continue;
            };
            let i = match self.subs.find(locate, &enc.quote.symbol, table) {
                Some(i) => i,
                None => match self.wildcard.as_deref() {
                    Some(&opts) => self
                        .subs
                        .insert(locate, Sub::new(enc.quote.symbol.clone(), opts)),
                    None => continue,
                },
            };
            let sub = &mut self.subs.subs[i];
            if enc.quote.seq <= sub.last_seq {
                continue;
            }
            if let Some((min, at)) = sub
                .throttle
                .as_ref()
                .and_then(|t| Some((t.min, t.last_at?)))
            {
                let due = at + min;
                if due > *now.get_or_insert_with(Instant::now) {
                    // Not yet: keep it pending, promise no further than what
                    // this symbol has been sent, or than the last promise
                    // (every change up to it was delivered, and a held change
                    // is always newer), so the envelope seq never steps back.
                    client.remark(locate);
                    promise = promise.min(sub.last_seq.max(self.promised));
                    self.next_due = Some(self.next_due.map_or(due, |d| d.min(due)));
                    continue;
                }
            }
            sub.last_seq = enc.quote.seq;
            if let Some(t) = &mut sub.throttle {
                t.last_at = Some(*now.get_or_insert_with(Instant::now));
            }
            quotes.push(sub.diff(&self.hub, enc));
        }
        MARKS.set(marks);
        let chart_at = (self.hub.until_at(at), fanned);
        if let Some(charts) = self.charts.as_mut().filter(|c| !c.is_empty())
            && let Err(reason) = charts.drain(table, chart_at, &mut batch.charts)
        {
            batch.overflow = true;
            batch.lagged = Some(reason);
        }
        batch.seq = promise;
        self.promised = promise;
        if quotes.len() > start
            && let Some(b) = self.batch.as_mut()
        {
            b.last = Some(*now.get_or_insert_with(Instant::now));
        }
        batch
    }

    /// Records a written frame in the transport's metrics.
    pub fn count(counters: &TransportCounters, batch: &Batch, bytes: usize) {
        Self::count_quotes(counters, &batch.quotes, bytes)
    }

    /// Records a written frame of `quotes` in the transport's metrics.
    pub fn count_quotes(counters: &TransportCounters, quotes: &[Arc<Encoded>], bytes: usize) {
        counters.messages.inc();
        counters.quotes.inc_by(quotes.len() as u64);
        counters.bytes.inc_by(bytes as u64);
        if let Some(oldest) = quotes.iter().map(|q| q.quote.ts).filter(|&t| t > 0).min() {
            let lag = now_ns().saturating_sub(oldest);
            counters.latency.observe(lag as f64 / 1e9);
        }
    }

    /// Every subscribed symbol name.
    pub fn symbols(&self) -> Vec<Arc<str>> {
        self.subs.subs.iter().map(|s| s.name.clone()).collect()
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl Subscriptions {
    /// Ends every subscription and takes the client out of the hub, which
    /// then holds it no more. Done when the subscriptions are dropped; a
    /// connection whose subscriptions live in its client (its write side)
    /// calls it when it ends, since the hub's hold keeps that client alive.
    pub fn unregister(&mut self) {
        let mut symbols = self.symbols();
        symbols.extend(self.books.names());
        symbols.extend(self.charts().names());
        symbols.sort();
        symbols.dedup();
        if let Some(client) = self.client() {
            self.hub.unregister(&client, &symbols);
        }
    }
}

/// `Subscriptions::drain`: the promise, conflation, `every`, `max_hz` and
/// `batch_ms`. A real hub and table; the fan-out runs as a task on the
/// test's runtime. Time enters drain as `Instant::now()`, so a throttle
/// window is "passed" by moving a symbol's `last_at` back, never by sleeping.
#[cfg(test)]
mod drain_tests;
