//! Delayed clients in the fan-out: the hub's side of the delayed view
//! (`table::delayed`).
//!
//! A delayed client is a client like any other — marks, sweep, frames —
//! except for who marks it and what its writer reads. Live changes pass it
//! by. Instead each shard keeps its delayed clients grouped by delay, and
//! a timer per resolution step moves each group's cutoff: the symbols that
//! changed in the steps that just became visible are marked for the group's
//! subscribers, exactly as a live batch marks live ones. Its writer then
//! reads each quote from the view at its cutoff, and promises the view's
//! `seq` there, so a frame never carries or promises anything fresher.
//! Its trades and bars are read from the chart as of the cutoff's start
//! ([`Hub::until_at`]); a client with any of them is woken at every move of
//! the cutoff, as trades become visible with time alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::shard::{Shard, sweep_touched};
use super::{Client, Encoded, Hub};
use crate::clock::now_ns;
use crate::table::chart::LIVE;
use crate::wire::Locate;

/// A shard's delayed clients of one delay, and where they read.
pub(crate) struct Group {
    clients: Vec<Arc<Client>>,
    position: Arc<Position>,
}

/// Where a shard's delayed clients of one delay read the view, shared by
/// them (a real-time client pays one empty pointer for it).
#[derive(Debug)]
pub(crate) struct Position {
    pub(super) delay_ms: u64,
    /// The view's cutoff they read at, then the promise that cutoff makes
    /// (stored in that order by the tick, read in the other by writers).
    cutoff: AtomicU64,
    view_seq: AtomicU64,
}

impl Position {
    /// The session started again: nothing of the view is promised.
    pub(super) fn reset(&self) {
        self.view_seq.store(0, Ordering::Release);
    }
}

/// Where a client reads the market: the live table, or the delayed view at
/// a cutoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The table, now.
    Live,
    /// The delayed view, at this cutoff (`DelayedView::cutoff`).
    Cutoff(u64),
}

impl Hub {
    /// Builds a client with `make` given its position, and joins it to the
    /// group of `delay_ms` in `shard` (made, at the view's cutoff now, if it
    /// is the first): it reads at the group's cutoff from now on.
    pub(super) fn join_delayed<S: super::Sweep + 'static>(
        &self,
        shard: &Shard,
        delay_ms: u64,
        make: impl FnOnce(Option<Arc<Position>>) -> Arc<Client<S>>,
    ) -> Arc<Client<S>> {
        let Some(view) = self.delayed.as_ref().filter(|_| delay_ms > 0) else {
            return make(None);
        };
        let mut groups = shard.delayed.lock();
        let group = groups.entry(delay_ms).or_insert_with(|| {
            let cutoff = view.cutoff(delay_ms, now_ns());
            Group {
                clients: Vec::new(),
                position: Arc::new(Position {
                    delay_ms,
                    cutoff: AtomicU64::new(cutoff),
                    view_seq: AtomicU64::new(view.seq(cutoff)),
                }),
            }
        });
        let client = make(Some(group.position.clone()));
        group.clients.push(client.clone());
        client
    }

    /// Takes a delayed client out of its group.
    pub(super) fn leave_delayed(&self, client: &Arc<Client>) {
        let delay = client.delay_ms();
        let mut groups = self.shard(client).delayed.lock();
        if let Some(group) = groups.get_mut(&delay) {
            group.clients.retain(|c| !Arc::ptr_eq(c, client));
            if group.clients.is_empty() {
                groups.remove(&delay);
            }
        }
    }

    /// Where `client` reads, and the promise that makes: the table and its
    /// fanned sequence, or the view at the client's cutoff and its `seq`
    /// there. Read before draining (the promise first).
    pub fn position(&self, client: &Client) -> (u64, At) {
        let Some(p) = &client.delayed else {
            return (self.fanned_seq_for(client), At::Live);
        };
        let seq = p.view_seq.load(Ordering::Acquire);
        (seq, At::Cutoff(p.cutoff.load(Ordering::Acquire)))
    }

    /// [`Hub::position`] for a snapshot: the table's applied sequence
    /// (quotes read after it are at least as new) when live.
    pub fn snapshot_position(&self, client: &Client) -> (u64, At) {
        match self.position(client) {
            (_, At::Live) => (self.table.last_seq(), At::Live),
            delayed => delayed,
        }
    }

    /// Where a request from a user delayed `delay_ms` reads, now.
    pub fn at_now(&self, delay_ms: u64) -> At {
        match &self.delayed {
            Some(view) if delay_ms > 0 => At::Cutoff(view.cutoff(delay_ms, now_ns())),
            _ => At::Live,
        }
    }

    /// The feed position at `at`: the table's applied sequence, or the
    /// view's there.
    pub fn seq_at(&self, at: At) -> u64 {
        match (at, &self.delayed) {
            (At::Cutoff(c), Some(view)) => view.seq(c),
            _ => self.table.last_seq(),
        }
    }

    /// The exchange time a reader at `at` sees trades and bars before:
    /// [`LIVE`] (no bound), or where its cutoff starts.
    pub fn until_at(&self, at: At) -> u64 {
        match (at, &self.delayed) {
            (At::Cutoff(c), Some(view)) => view.cutoff_ns(c),
            _ => LIVE,
        }
    }

    /// The `seq` of `locate` at `at`.
    pub fn seq_of_at(&self, locate: Locate, at: At) -> u64 {
        match (at, &self.delayed) {
            (At::Cutoff(c), Some(view)) => view.seq_of(locate, c),
            _ => self.table.seq_of(locate),
        }
    }

    /// The quote of `locate` at `at`, if it is listed.
    pub fn quote_at(&self, locate: Locate, at: At) -> Option<crate::table::Quote> {
        match (at, &self.delayed) {
            (At::Cutoff(c), Some(view)) => view.quote(&self.table, locate, c),
            _ => self.table.quote(locate),
        }
    }

    /// The quote of `locate` at `at`, encoded once and shared.
    pub fn current_at(&self, locate: Locate, at: At) -> Option<Arc<Encoded>> {
        let (At::Cutoff(cutoff), Some(view)) = (at, &self.delayed) else {
            return self.current(locate);
        };
        let epoch = self.table.epoch();
        let (stamp, seq) = view.stamp(locate, cutoff);
        let slot = &self.delayed_cache[usize::from(locate)];
        if let Some(e) = slot.load_full()
            && e.stamp == stamp
            && e.quote.seq == seq
            && e.epoch == epoch
        {
            return Some(e);
        }
        // A visible step never changes again: the stamp read before the
        // quote names the same state.
        let quote = view.quote(&self.table, locate, cutoff)?;
        let mut enc = Encoded::new(locate, quote, epoch);
        enc.stamp = stamp;
        let enc = Arc::new(enc);
        slot.store(Some(enc.clone()));
        Some(enc)
    }

    /// Moves every delayed group's cutoff to now and marks, for its
    /// clients, the symbols that became visible; sweeps them.
    pub(super) fn tick_delayed(&self, shard: &Shard) {
        let Some(view) = &self.delayed else {
            return;
        };
        let now = now_ns();
        let mut moved = Vec::new();
        for (&delay, group) in shard.delayed.lock().iter() {
            let to = view.cutoff(delay, now);
            let from = group.position.cutoff.load(Ordering::Acquire);
            if to > from {
                moved.push((group.clients.clone(), group.position.clone(), from, to));
            }
        }
        if moved.is_empty() {
            return;
        }
        let round = shard.round.fetch_add(1, Ordering::Relaxed) + 1;
        let mut sweep = shard.sweep.lock();
        let (touched, scratch) = &mut *sweep;
        let mut locates = Vec::new();
        for (clients, position, from, to) in moved {
            // Cutoff first: a writer that drains from here on reads the
            // newly visible states, whatever it promises.
            position.cutoff.store(to, Ordering::Release);
            locates.clear();
            view.changed(from, to, &mut locates);
            self.mark_delayed(shard, &clients, &locates, round, touched);
            // Trades and bars become visible as the cutoff moves, whether
            // or not a quote changed: clients with chart subscriptions are
            // woken to read them at the new cutoff.
            for c in clients.iter().filter(|c| c.clocked.load(Ordering::Relaxed)) {
                let was_empty = c.tick();
                c.wake(was_empty, round, touched);
            }
            // The promise last: every change it covers is marked.
            position.view_seq.store(view.seq(to), Ordering::Release);
        }
        sweep_touched(shard, touched, scratch);
    }

    /// Marks `locates` for those of `clients` (one delay group) that
    /// subscribe to them.
    fn mark_delayed(
        &self,
        shard: &Shard,
        clients: &[Arc<Client>],
        locates: &[Locate],
        round: u64,
        touched: &mut Vec<Arc<Client>>,
    ) {
        let Some(first) = clients.first() else {
            return;
        };
        let delay = first.delay_ms();
        let subs = shard.subs.read();
        let wildcard = shard.wildcard.read();
        let wild: Vec<&Arc<Client>> = wildcard.iter().filter(|c| c.delay_ms() == delay).collect();
        for &locate in locates {
            let Some(info) = self.table.info(locate) else {
                continue;
            };
            if let Some(list) = subs.get(&info.symbol) {
                for s in list.iter().filter(|s| s.client.delay_ms() == delay) {
                    let was_empty = s.client.mark(locate, &self.metrics);
                    s.client.wake(was_empty, round, touched);
                }
            }
            for c in &wild {
                let was_empty = c.mark(locate, &self.metrics);
                c.wake(was_empty, round, touched);
            }
        }
    }
}
