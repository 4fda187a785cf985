//! The hub's ingest-side half: collects the batch's changes on the ingest
//! thread and hands them to every shard's outbox once per batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::wire::{Locate, Session};

/// The hub's ingest-side half: collects changes during a batch and hands
/// them over once per batch. Lives on the ingest thread.
pub struct HubListener {
    pub(super) hub: Arc<Hub>,
    pub(super) events: Vec<Event>,
    pub(super) seen: Vec<u64>,
    /// The feed second (feed time / 1 s) last handed to the shards.
    pub(super) second: u64,
}

pub(super) fn clear_bit(bits: &mut [u64], locate: Locate) {
    bits[usize::from(locate) / 64] &= !(1 << (usize::from(locate) % 64));
}

pub(super) fn test_and_set(bits: &mut [u64], locate: Locate) -> bool {
    let (w, b) = (usize::from(locate) / 64, usize::from(locate) % 64);
    let was = bits[w] & (1 << b) != 0;
    bits[w] |= 1 << b;
    was
}

impl ChangeListener for HubListener {
    fn changed(&mut self, locate: Locate, _seq: u64) {
        if let Some(view) = &self.hub.delayed {
            view.record(&self.hub.table, locate, crate::clock::now_ns());
        }
        if !test_and_set(&mut self.seen, locate) {
            self.events.push(Event::Changed(locate));
        }
        if self.hub.every_subscriptions.load(Ordering::Relaxed) > 0
            && let Some(q) = self.hub.table.quote(locate)
        {
            self.events.push(Event::Every(locate, q));
        }
    }

    fn batch_done(&mut self, last_seq: u64) {
        if let Some(view) = &self.hub.delayed {
            view.batch_done(last_seq, crate::clock::now_ns());
        }
        for event in &self.events {
            if let Event::Changed(l) = event {
                clear_bit(&mut self.seen, *l);
            }
        }
        // Feed time passed a second: bars may close without a trade.
        let second = self.hub.table.chart().feed_time() / 1_000_000_000;
        if second != self.second {
            self.second = second;
            self.events.push(Event::Clock);
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
                    Event::Clock => out.events.push(Event::Clock),
                }
            }
            out.last_seq = last_seq;
            drop(out);
            shard.wake.notify_one();
        }
    }

    fn session_reset(&mut self, session: Session) {
        if let Some(view) = &self.hub.delayed {
            view.reset();
        }
        self.seen.iter_mut().for_each(|w| *w = 0);
        // The table was reset just before: its epoch names this session.
        self.events
            .push(Event::Reset(session, self.hub.table.epoch()));
    }
}
