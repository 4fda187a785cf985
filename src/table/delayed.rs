//! The delayed view: the market as it was some time ago, for users whose
//! entitlement is delayed data (docs/PROTOCOL.md, "Delayed data").
//!
//! Not a second feed: per symbol, a ring of the table's states sampled at
//! the resolution (`delay_resolution_ms`), the newest state within each
//! step; and one log of steps saying which symbols changed in each and how
//! far the feed was applied by its end. A step is a slice of the relay's
//! clock when the change was applied, which is never before the change's
//! exchange time: a reader with delay D at time `now` sees the steps that
//! ended at or before `now − D` (the cutoff [`DelayedView::cutoff`] is the
//! first step it may not see), so every state it sees has an exchange time
//! at least D ago. The steps it sees are closed — the writer is always in a
//! later one — so what a reader sees at a cutoff never changes. Everything
//! a delayed user is sent — quotes, `seq`, ETags, resume points — is read
//! at such a cutoff, so nothing reveals a fresher state.
//!
//! Written only by the ingest thread (after the table, for each change and
//! each batch); read by the fan-out shards and the HTTP handlers. A ring
//! holds at most one sample per step within `max_delay_ms` (plus the one
//! the oldest reader stands on), so a symbol's memory is bounded by its
//! activity: 72 bytes a sample, none for a symbol that does not change.

use std::collections::VecDeque;

use parking_lot::Mutex;

use super::{
    F_ASK, F_ASK_SIZE, F_BID, F_BID_SIZE, F_FLAGS, F_LAST, F_LAST_SIZE, F_SEQ, F_TS, F_VOLUME,
    HAS_QUOTE, HAS_TRADE, LOCATES, Quote, Table,
};
use crate::price::Price;
use crate::wire::Locate;

/// One symbol's state as of the end of a step: 72 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sample {
    step: u64,
    seq: u64,
    ts: u64,
    bid: i64,
    ask: i64,
    last: i64,
    volume: u64,
    bid_size: u32,
    ask_size: u32,
    last_size: u32,
    flags: u32,
}

/// One step of feed time: how far the feed was applied by its end, and
/// which symbols changed in it.
#[derive(Debug)]
struct Step {
    step: u64,
    last_seq: u64,
    locates: Vec<Locate>,
}

/// The writer's bookkeeping and the step log, behind one lock.
#[derive(Debug, Default)]
struct Log {
    steps: VecDeque<Step>,
    /// The step the writer is in: its clock's, never going back.
    step: u64,
    /// Per locate, 1 + the step in which it was last logged (0: never).
    logged: Vec<u64>,
    /// Locates with a ring, to clear on a reset.
    touched: Vec<Locate>,
}

impl Log {
    /// The writer's step at `now_ns`.
    fn now(&mut self, now_ns: u64, resolution_ns: u64) -> u64 {
        self.step = self.step.max(now_ns / resolution_ns);
        self.step
    }

    /// The entry of `step`, made if it is newer than the newest (steps only
    /// move forward: [`Log::now`]).
    fn at(&mut self, step: u64) -> &mut Step {
        let last_seq = self.steps.back().map_or(0, |s| s.last_seq);
        if self.steps.back().is_none_or(|s| s.step < step) {
            self.steps.push_back(Step {
                step,
                last_seq,
                locates: Vec::new(),
            });
        }
        self.steps.back_mut().expect("just pushed")
    }
}

/// The delayed view. See the module docs.
pub struct DelayedView {
    resolution_ns: u64,
    max_delay_ns: u64,
    rings: Box<[Mutex<VecDeque<Sample>>]>,
    log: Mutex<Log>,
}

impl std::fmt::Debug for DelayedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayedView")
            .field("resolution_ns", &self.resolution_ns)
            .field("max_delay_ns", &self.max_delay_ns)
            .finish_non_exhaustive()
    }
}

/// Bytes one sample takes in a ring.
pub const SAMPLE_BYTES: usize = std::mem::size_of::<Sample>();

impl DelayedView {
    /// A view sampled every `resolution_ms`, serving delays up to
    /// `max_delay_ms`.
    pub fn new(resolution_ms: u64, max_delay_ms: u64) -> Self {
        DelayedView {
            resolution_ns: resolution_ms.max(1) * 1_000_000,
            max_delay_ns: max_delay_ms * 1_000_000,
            rings: (0..LOCATES).map(|_| Mutex::default()).collect(),
            log: Mutex::new(Log {
                logged: vec![0; LOCATES],
                ..Log::default()
            }),
        }
    }

    /// The resolution, ms.
    pub fn resolution_ms(&self) -> u64 {
        self.resolution_ns / 1_000_000
    }

    /// The longest delay served, ms.
    pub fn max_delay_ms(&self) -> u64 {
        self.max_delay_ns / 1_000_000
    }

    /// The cutoff of a reader delayed `delay_ms` at wall-clock `now_ns`: the
    /// first step it may not see (the steps before it ended by `now − D`).
    pub fn cutoff(&self, delay_ms: u64, now_ns: u64) -> u64 {
        now_ns.saturating_sub(delay_ms.saturating_mul(1_000_000)) / self.resolution_ns
    }

    /// Where `cutoff` starts, ns of the relay's clock: a reader at it sees
    /// trades and bars made before then (`table::chart`'s `until`).
    pub fn cutoff_ns(&self, cutoff: u64) -> u64 {
        cutoff.saturating_mul(self.resolution_ns)
    }

    /// The oldest cutoff any reader may still use at `now_ns`.
    fn oldest_cutoff(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.max_delay_ns) / self.resolution_ns
    }

    /// Records `locate`'s state just written to `table`. Ingest only.
    pub fn record(&self, table: &Table, locate: Locate, now_ns: u64) {
        let f = table.slots[usize::from(locate)].read();
        let mut log = self.log.lock();
        let step = log.now(now_ns, self.resolution_ns);
        let sample = Sample {
            step,
            seq: f[F_SEQ],
            ts: f[F_TS],
            bid: f[F_BID] as i64,
            ask: f[F_ASK] as i64,
            last: f[F_LAST] as i64,
            volume: f[F_VOLUME],
            bid_size: f[F_BID_SIZE] as u32,
            ask_size: f[F_ASK_SIZE] as u32,
            last_size: f[F_LAST_SIZE] as u32,
            flags: f[F_FLAGS] as u32,
        };
        let idx = usize::from(locate);
        if log.logged[idx] != step + 1 {
            if log.logged[idx] == 0 {
                log.touched.push(locate);
            }
            log.logged[idx] = step + 1;
            log.at(step).locates.push(locate);
        }
        let oldest = self.oldest_cutoff(now_ns);
        prune_steps(&mut log.steps, oldest);
        drop(log);
        let mut ring = self.rings[idx].lock();
        match ring.back_mut() {
            // A later change in the same step replaces the step's state.
            Some(back) if back.step >= step => {
                *back = Sample {
                    step: back.step,
                    ..sample
                }
            }
            _ => ring.push_back(sample),
        }
        while ring.len() > 1 && ring[1].step < oldest {
            ring.pop_front();
        }
    }

    /// Every message up to `last_seq` is applied. Ingest only.
    pub fn batch_done(&self, last_seq: u64, now_ns: u64) {
        let mut log = self.log.lock();
        let step = log.now(now_ns, self.resolution_ns);
        log.at(step).last_seq = last_seq;
    }

    /// Forgets everything: a new session starts. Ingest only.
    pub fn reset(&self) {
        let mut log = self.log.lock();
        for l in std::mem::take(&mut log.touched) {
            self.rings[usize::from(l)].lock().clear();
            log.logged[usize::from(l)] = 0;
        }
        log.steps.clear();
    }

    /// The view's feed position at `cutoff`: every message up to it is in
    /// the states the view shows (0 before the first step ends).
    pub fn seq(&self, cutoff: u64) -> u64 {
        let log = self.log.lock();
        log.steps
            .iter()
            .rev()
            .find(|s| s.step < cutoff)
            .map_or(0, |s| s.last_seq)
    }

    /// The symbols that changed in steps `from..to` (they became visible
    /// when the cutoff moved from `from` to `to`), sorted, each once.
    pub fn changed(&self, from: u64, to: u64, out: &mut Vec<Locate>) {
        let log = self.log.lock();
        for s in log.steps.iter().filter(|s| s.step >= from && s.step < to) {
            out.extend_from_slice(&s.locates);
        }
        drop(log);
        out.sort_unstable();
        out.dedup();
    }

    fn sample(&self, locate: Locate, cutoff: u64) -> Option<Sample> {
        let ring = self.rings[usize::from(locate)].lock();
        ring.iter().rev().find(|s| s.step < cutoff).copied()
    }

    /// The `seq` of `locate`'s state at `cutoff` (0: none visible yet).
    pub fn seq_of(&self, locate: Locate, cutoff: u64) -> u64 {
        self.sample(locate, cutoff).map_or(0, |s| s.seq)
    }

    /// A key that changes whenever `locate`'s state at `cutoff` does (0:
    /// none visible yet): for caches of its encoding.
    pub fn stamp(&self, locate: Locate, cutoff: u64) -> (u64, u64) {
        self.sample(locate, cutoff)
            .map_or((0, 0), |s| (s.step + 1, s.seq))
    }

    /// `locate`'s quote at `cutoff`, if it is listed: the state of the
    /// newest step the reader may see, or an empty quote (`seq` 0, no
    /// prices) when it may see none yet.
    pub fn quote(&self, table: &Table, locate: Locate, cutoff: u64) -> Option<Quote> {
        let info = table.info(locate)?;
        let s = self.sample(locate, cutoff).unwrap_or_default();
        let flags = u64::from(s.flags);
        let quote = flags & HAS_QUOTE != 0;
        let trade = flags & HAS_TRADE != 0;
        Some(Quote {
            symbol: info.symbol.clone(),
            seq: s.seq,
            bid: quote.then_some(Price(s.bid)),
            ask: quote.then_some(Price(s.ask)),
            bid_size: s.bid_size,
            ask_size: s.ask_size,
            last: trade.then_some(Price(s.last)),
            last_size: s.last_size,
            volume: s.volume,
            prev_close: info.prev_close,
            ts: s.ts,
        })
    }

    /// Samples held over every symbol, and the step log's length: what the
    /// view costs in memory is about `samples × SAMPLE_BYTES`.
    pub fn footprint(&self) -> (usize, usize) {
        let log = self.log.lock();
        let samples = log
            .touched
            .iter()
            .map(|&l| self.rings[usize::from(l)].lock().len())
            .sum();
        (samples, log.steps.len())
    }
}

/// Drops the steps no reader can stand on any more, keeping the newest one
/// before `oldest` (what the most delayed reader sees).
fn prune_steps(steps: &mut VecDeque<Step>, oldest: u64) {
    while steps.len() > 1 && steps[1].step < oldest {
        steps.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    const S: u64 = 1_000_000_000;

    fn listed(table: &Table) {
        table.apply(
            1,
            &Message::Directory {
                locate: 1,
                ts: 0,
                symbol: "AAPL",
                name: "Apple",
                prev_close: Price(1_000_000),
            },
        );
    }

    fn quote(table: &Table, view: &DelayedView, seq: u64, ts: u64, bid: i64) {
        table.apply(
            seq,
            &Message::Quote {
                locate: 1,
                ts,
                bid: Price(bid),
                ask: Price(bid + 100),
                bid_size: 100,
                ask_size: 200,
            },
        );
        view.record(table, 1, ts);
        table.set_last_seq(seq);
        view.batch_done(seq, ts);
    }

    #[test]
    fn a_reader_sees_the_newest_state_of_each_step_that_ended_before_its_cutoff() {
        let table = Table::new();
        listed(&table);
        let view = DelayedView::new(1000, 60_000);
        let base = 1_000 * S;
        quote(&table, &view, 2, base + S / 10, 10);
        quote(&table, &view, 3, base + S / 2, 11);
        quote(&table, &view, 4, base + S + 1, 12);
        // At base + 1.5 s, delayed 1 s: the cutoff is base's step; nothing
        // of it has ended by base + 0.5 s.
        let c = view.cutoff(1000, base + S + S / 2);
        assert_eq!(c, 1_000);
        assert_eq!(view.quote(&table, 1, c).unwrap().seq, 0);
        assert_eq!(view.seq(c), 0);
        // At base + 2 s, delayed 1 s: the first step, at its newest state.
        let c = view.cutoff(1000, base + 2 * S);
        let q = view.quote(&table, 1, c).unwrap();
        assert_eq!((q.seq, q.bid), (3, Some(Price(11))));
        assert_eq!(view.seq(c), 3);
        let mut changed = Vec::new();
        view.changed(1_000, c, &mut changed);
        assert_eq!(changed, [1]);
        // Real time moves on; the view of an older cutoff does not.
        let c2 = view.cutoff(1000, base + 3 * S);
        assert_eq!(view.quote(&table, 1, c2).unwrap().seq, 4);
        assert_eq!(view.quote(&table, 1, c).unwrap().seq, 3);
    }

    #[test]
    fn old_steps_are_pruned_but_the_most_delayed_reader_keeps_its_state() {
        let table = Table::new();
        listed(&table);
        let view = DelayedView::new(1000, 5_000);
        let base = 1_000 * S;
        for i in 0..20 {
            quote(&table, &view, 2 + i, base + i * S, 10 + i as i64);
        }
        let (samples, steps) = view.footprint();
        assert!(samples <= 7, "{samples} samples for a 5 s horizon");
        assert!(steps <= 7, "{steps} steps for a 5 s horizon");
        // Delayed 5 s at the last write's time: the state of 5 s before.
        let now = base + 19 * S;
        let c = view.cutoff(5_000, now);
        assert_eq!(view.quote(&table, 1, c).unwrap().seq, 2 + 13);
    }

    #[test]
    fn a_reset_empties_the_view() {
        let table = Table::new();
        listed(&table);
        let view = DelayedView::new(1000, 60_000);
        quote(&table, &view, 2, 5 * S, 10);
        view.reset();
        assert_eq!(view.footprint(), (0, 0));
        assert_eq!(view.seq(u64::MAX), 0);
    }
}
