//! Lock-free metric primitives for what every client writer touches per
//! frame: [`ShardedCounter`] and [`AtomicHistogram`], sharded per thread so
//! writers on different cores never share a cache line or a lock
//! (`benches/metrics.rs` measures them against prometheus-client's own).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Most bucket bounds an [`AtomicHistogram`] takes (`+Inf` not counted).
const MAX_BOUNDS: usize = 24;

/// Shards per sharded metric: enough that the worker threads of a busy
/// relay rarely share one; each shard is its own cache lines.
const SHARDS: usize = 8;

/// The shard of the calling thread: threads take shards round-robin, once.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        let mut v = i.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            i.set(v);
        }
        v
    })
}

/// A `u64` alone on its cache lines (128 bytes: adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A counter that many threads add to without sharing a cache line: each
/// thread adds to its own shard; a scrape sums them. Same methods as
/// prometheus-client's `Counter` for the hot path (`inc`, `inc_by`, `get`).
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter {
    shards: Arc<[Padded; SHARDS]>,
}

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `v`.
    pub fn inc_by(&self, v: u64) {
        self.shards[shard_index()].0.fetch_add(v, Ordering::Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's slice of a histogram.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// Observations per bucket (not cumulative); index `len` is `+Inf`.
    counts: [AtomicU64; MAX_BOUNDS + 1],
    /// Sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, padded with `+∞` to the fixed length.
    bounds: [f64; MAX_BOUNDS],
    /// Real bounds in `bounds`.
    len: usize,
    shards: [Shard; SHARDS],
}

/// A Prometheus histogram that many threads observe into without a lock or
/// a shared cache line.
///
/// prometheus-client's `Histogram` takes a write lock per observation; with
/// a frame per client per batch, every writer thread of a transport would
/// bounce that lock between cores. Here an observation is two relaxed
/// atomic ops on the calling thread's own shard (the same cost as the lock
/// when uncontended; `benches/metrics.rs`), and a scrape adds the shards
/// up. The count is the sum of the buckets, so `_count` always equals the
/// `+Inf` bucket.
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (ascending, finite; `+Inf` is
    /// added; at most 24 are kept).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut padded = [f64::INFINITY; MAX_BOUNDS];
        let mut len = 0;
        for b in bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .take(MAX_BOUNDS)
        {
            padded[len] = b;
            len += 1;
        }
        AtomicHistogram {
            inner: Arc::new(HistogramInner {
                bounds: padded,
                len,
                shards: std::array::from_fn(|_| Shard::default()),
            }),
        }
    }

    /// Records one observation of `v`.
    pub fn observe(&self, v: f64) {
        let inner = &*self.inner;
        // The first bound >= v, or `len` (+Inf) past the last; a linear
        // scan beats a binary search here (latencies sit in the low
        // buckets, and its exit branch predicts well). NaN counts as +Inf.
        let i = inner
            .bounds
            .iter()
            .position(|&b| b >= v)
            .unwrap_or(inner.len)
            .min(inner.len);
        let shard = &inner.shards[shard_index()];
        shard.counts[i].fetch_add(1, Ordering::Relaxed);
        if v.is_finite() {
            // Uncontended in practice: the shard belongs to this thread.
            let _ = shard
                .sum
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    Some((f64::from_bits(bits) + v).to_bits())
                });
        }
    }

    /// `(sum, count, per-bucket counts)` over every shard; the buckets are
    /// `(upper bound, count)`, not cumulative, the last bound `f64::MAX`
    /// (`+Inf` to the encoder).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let n = inner.len + 1;
        let mut counts = vec![0u64; n];
        let mut sum = 0.0;
        for shard in &inner.shards {
            for (c, a) in counts.iter_mut().zip(&shard.counts[..n]) {
                *c += a.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
        }
        let count = counts.iter().sum();
        let buckets = inner.bounds[..inner.len]
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(counts)
            .collect();
        (sum, count, buckets)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(
            sum,
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::latency_buckets;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn atomic_histogram_encodes_like_the_locked_one() {
        let ours = AtomicHistogram::new(latency_buckets());
        let theirs = Histogram::new(latency_buckets());
        let values = [0.0, 0.000_01, 0.000_011, 0.003, 0.5, 1.31072, 2.0, 1e9];
        std::thread::scope(|s| {
            for chunk in values.chunks(2) {
                let (ours, theirs) = (&ours, &theirs);
                s.spawn(move || {
                    for &v in chunk {
                        ours.observe(v);
                        theirs.observe(v);
                    }
                });
            }
        });
        let mut a = Registry::default();
        a.register("lat_seconds", "h", ours.clone());
        let mut b = Registry::default();
        b.register("lat_seconds", "h", theirs);
        assert_eq!(encode(&a), encode(&b));
        let (sum, count, buckets) = ours.snapshot();
        assert_eq!(count, values.len() as u64);
        assert_eq!(sum, values.iter().sum::<f64>());
        assert_eq!(buckets.len(), 19);
        assert_eq!(buckets[0], (0.000_01, 2), "<= 10 µs");
        assert_eq!(buckets[18], (f64::MAX, 2), "+Inf");
    }

    #[test]
    fn nan_counts_as_infinite_and_stays_out_of_the_sum() {
        let h = AtomicHistogram::new([1.0, 2.0]);
        h.observe(f64::NAN);
        h.observe(1.5);
        h.observe(f64::INFINITY);
        h.observe(-1.0);
        let (sum, count, buckets) = h.snapshot();
        assert_eq!((sum, count), (0.5, 4));
        assert_eq!(buckets, vec![(1.0, 1), (2.0, 1), (f64::MAX, 2)]);
    }

    #[test]
    fn sharded_counter_adds_up_across_threads_and_encodes_as_a_counter() {
        let c = ShardedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..12 {
                let c = c.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                    c.inc_by(5);
                });
            }
        });
        assert_eq!(c.get(), 12 * 1005);
        let mut r = Registry::default();
        r.register("frames", "h", c);
        let text = encode(&r);
        assert!(
            text.contains("# TYPE frames counter\nframes_total 12060\n"),
            "{text}"
        );
    }
}
