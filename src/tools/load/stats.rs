//! The counters and latency histograms the clients write, and the state
//! every client of a run shares. Counters and histograms live in shards, so
//! a frame costs one uncontended lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::args::LoadArgs;
use super::conn::Target;
use super::scan::{Kind, json_bars, json_timestamps, msgpack_envelope};
use crate::clock::now_ns;
use crate::tools::tap::Tap;

/// Shards of counters and histograms: a frame locks one, chosen by client.
pub(super) const SHARDS: usize = 32;
/// Longest latency recorded, µs (an hour): anything longer saturates.
pub(super) const MAX_LATENCY_US: u64 = 3_600_000_000;

pub(super) struct Shard {
    pub(super) hist: Histogram<u64>,
    pub(super) quotes: u64,
    pub(super) frames: u64,
    pub(super) bytes: u64,
    pub(super) snapshot_quotes: u64,
    pub(super) requests: u64,
    pub(super) book_frames: u64,
}

impl Shard {
    pub(super) fn new() -> Self {
        Shard {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            quotes: 0,
            frames: 0,
            bytes: 0,
            snapshot_quotes: 0,
            book_frames: 0,
            requests: 0,
        }
    }

    pub(super) fn reset(&mut self) {
        self.hist.reset();
        self.quotes = 0;
        self.frames = 0;
        self.bytes = 0;
        self.snapshot_quotes = 0;
        self.book_frames = 0;
        self.requests = 0;
    }

    fn tick(&mut self, now: u64, ts: u64) {
        self.quotes += 1;
        if ts > 0 {
            self.hist.saturating_record(now.saturating_sub(ts) / 1_000);
        }
    }
}

pub(super) struct Shared {
    pub(super) args: LoadArgs,
    pub(super) target: Target,
    pub(super) shards: Box<[Mutex<Shard>]>,
    pub(super) errors: Mutex<BTreeMap<String, u64>>,
    pub(super) closes: Mutex<BTreeMap<String, u64>>,
    /// Clients whose connection is open.
    pub(super) open: AtomicUsize,
    /// Clients connected and subscribed.
    pub(super) ready: AtomicUsize,
    /// Clients done with setup, subscribed or failed.
    pub(super) settled: AtomicUsize,
    pub(super) cancel: CancellationToken,
    /// The lab's view of each client, when the lab runs this load.
    pub(super) tap: Option<Arc<Tap>>,
}

impl Shared {
    pub(super) fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().entry(kind.into()).or_default() += 1;
    }

    pub(super) fn closed(&self, kind: impl Into<String>) {
        *self.closes.lock().entry(kind.into()).or_default() += 1;
    }

    /// Counts one request sent (HTTP request, WebSocket operation).
    pub(super) fn request(&self, id: usize) {
        self.shard(id).requests += 1;
    }

    fn shard(&self, id: usize) -> parking_lot::MutexGuard<'_, Shard> {
        self.shards[id % SHARDS].lock()
    }

    /// Counts one JSON frame (a WebSocket text message or SSE event data).
    pub(super) fn json_frame(&self, id: usize, len: usize, body: &[u8], kind: Kind) {
        if self.args.idle {
            return;
        }
        let mut shard = self.shard(id);
        shard.frames += 1;
        shard.bytes += len as u64;
        match kind {
            Kind::Ticks => {
                let now = now_ns();
                for ts in json_timestamps(body) {
                    shard.tick(now, ts);
                }
            }
            Kind::Snapshot => shard.snapshot_quotes += json_timestamps(body).count() as u64,
            Kind::Bars => {
                for _ in 0..json_bars(body) {
                    shard.tick(0, 0);
                }
            }
            Kind::Book => shard.book_frames += 1,
            Kind::Control => {}
        }
    }

    /// Counts one MessagePack frame.
    pub(super) fn msgpack_frame(
        &self,
        id: usize,
        body: &[u8],
        scratch: &mut Vec<u64>,
    ) -> Option<String> {
        if self.args.idle {
            return None;
        }
        scratch.clear();
        let kind = msgpack_envelope(body, scratch);
        let mut shard = self.shard(id);
        shard.frames += 1;
        shard.bytes += body.len() as u64;
        match kind.as_deref() {
            Some("ticks") => {
                let now = now_ns();
                for &ts in scratch.iter() {
                    shard.tick(now, ts);
                }
                None
            }
            Some("snapshot") => {
                shard.snapshot_quotes += scratch.len() as u64;
                None
            }
            Some("book") => {
                shard.book_frames += 1;
                kind
            }
            _ => kind,
        }
    }

    /// Counts a decoded HTTP answer (poll, snapshot): `fresh` quotes are
    /// changes, the rest initial state.
    pub(super) fn answer(&self, id: usize, len: usize, fresh: &[u64], initial: usize) {
        if self.args.idle {
            return;
        }
        let mut shard = self.shard(id);
        shard.frames += 1;
        shard.bytes += len as u64;
        shard.snapshot_quotes += initial as u64;
        let now = now_ns();
        for &ts in fresh {
            shard.tick(now, ts);
        }
    }

    pub(super) fn totals(&self) -> (u64, u64, u64) {
        self.shards.iter().fold((0, 0, 0), |(q, f, b), s| {
            let s = s.lock();
            (q + s.quotes, f + s.frames, b + s.bytes)
        })
    }
}
