//! What counting costs on the hot paths, before and after.
//!
//! - `datagram_counters`: the ingest thread's per-datagram counting (packets,
//!   bytes, messages of the line: three relaxed adds), against no counting.
//! - `observe/*`: one latency observation, single-threaded, into
//!   prometheus-client's `Histogram` (a write lock per observation: the
//!   "before") and into tickrelay's lock-free, per-thread-sharded
//!   `AtomicHistogram` (the "after").
//! - `frame_count/{before,after}/N`: what a client writer does per frame
//!   (`Subscriptions::count`: frames, quotes and bytes counters plus the
//!   tick-to-write histogram), with N writer threads sharing one transport's
//!   handles as every client of a transport does. "before" is
//!   prometheus-client's shared `Counter`s and locked `Histogram`; "after"
//!   is the relay's own `TransportCounters` (`ShardedCounter`s and an
//!   `AtomicHistogram`). Time is per frame per thread: flat as N grows
//!   means no contention.
//!
//! Run: `cargo bench --bench metrics`. A plain summary in ns per operation
//! prints after the criterion run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tickrelay::metrics::{AtomicHistogram, Metrics, ShardedCounter, latency_buckets};
use tickrelay::transport::kind::Transport;

/// The two histogram implementations, behind one call.
trait Observe: Clone + Send + Sync + 'static {
    fn observe_one(&self, v: f64);
}

impl Observe for Histogram {
    fn observe_one(&self, v: f64) {
        self.observe(v);
    }
}

impl Observe for AtomicHistogram {
    fn observe_one(&self, v: f64) {
        self.observe(v);
    }
}

/// The two counter implementations, behind one call.
trait Add: Clone + Send + Sync + 'static {
    fn add(&self, v: u64);
}

impl Add for Counter {
    fn add(&self, v: u64) {
        self.inc_by(v);
    }
}

impl Add for ShardedCounter {
    fn add(&self, v: u64) {
        self.inc_by(v);
    }
}

/// Per-transport handles, as `StreamMetrics::transport` hands them out.
#[derive(Clone)]
struct Frame<C, H> {
    messages: C,
    quotes: C,
    bytes: C,
    latency: H,
}

/// Before: prometheus-client's shared counters and locked histogram.
fn before() -> Frame<Counter, Histogram> {
    Frame {
        messages: Counter::default(),
        quotes: Counter::default(),
        bytes: Counter::default(),
        latency: Histogram::new(latency_buckets()),
    }
}

/// After: the relay's own handles for one transport.
fn after() -> Frame<ShardedCounter, AtomicHistogram> {
    let t = Metrics::new().stream.transport(Transport::Ws);
    Frame {
        messages: t.messages,
        quotes: t.quotes,
        bytes: t.bytes,
        latency: t.latency,
    }
}

impl<C: Add, H: Observe> Frame<C, H> {
    fn count(&self, quotes: u64, bytes: u64, lag: f64) {
        self.messages.add(1);
        self.quotes.add(quotes);
        self.bytes.add(bytes);
        self.latency.observe_one(lag);
    }
}

/// Latencies spread over the buckets like real frames (20 µs to 5 ms).
fn lags() -> Vec<f64> {
    (0..1024)
        .map(|i| 0.000_02 * (1.0 + f64::from(i % 250)))
        .collect()
}

/// Runs `op` `iters` times on each of `threads` threads at once; the time is
/// the slowest thread's, so the result is per operation per thread.
fn parallel<F: Fn(u64) + Sync>(threads: usize, iters: u64, op: &F) -> Duration {
    let start = std::sync::Barrier::new(threads);
    let times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let t = Instant::now();
                    for i in 0..iters {
                        op(i);
                    }
                    t.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    times.into_iter().max().unwrap()
}

fn frame_bench<C: Add, H: Observe>(c: &mut Criterion, name: &str, frame: Frame<C, H>) {
    let lags = lags();
    let mut g = c.benchmark_group(format!("frame_count/{name}"));
    for threads in [1usize, 2, 4] {
        g.bench_function(threads.to_string(), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, &|i| {
                    frame.count(3, 420, black_box(lags[(i & 1023) as usize]))
                })
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let metrics = Metrics::new();
    let line = metrics.feed.line("a");
    let lags = lags();

    let mut g = c.benchmark_group("datagram_counters");
    g.bench_function("none", |b| {
        b.iter(|| {
            black_box(black_box(1_400u64) + black_box(40u64));
        })
    });
    g.bench_function("counted", |b| {
        b.iter(|| {
            line.packets.inc();
            line.bytes.inc_by(black_box(1_400));
            line.messages.inc_by(black_box(40));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("observe");
    let locked = Histogram::new(latency_buckets());
    let atomic = AtomicHistogram::new(latency_buckets());
    let mut i = 0usize;
    g.bench_function("locked", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            locked.observe(black_box(lags[i]));
        })
    });
    g.bench_function("atomic", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            atomic.observe(black_box(lags[i]));
        })
    });
    g.finish();

    frame_bench(c, "before", before());
    frame_bench(c, "after", after());
}

/// ns per operation per thread, measured plainly (criterion's numbers are
/// the same measurement with statistics).
fn summary() {
    const N: u64 = 2_000_000;
    let lags = lags();
    let ns = |d: Duration| d.as_nanos() as f64 / N as f64;
    println!("\nsummary (ns per frame per writer thread, {N} frames per thread):");
    println!("{:<10} {:>8} {:>8} {:>8}", "threads", "1", "2", "4");
    fn row<C: Add, H: Observe>(
        name: &str,
        frame: Frame<C, H>,
        lags: &[f64],
        ns: &dyn Fn(Duration) -> f64,
    ) {
        let cols: Vec<String> = [1usize, 2, 4]
            .iter()
            .map(|&t| {
                let d = parallel(t, N, &|i| {
                    frame.count(3, 420, black_box(lags[(i & 1023) as usize]))
                });
                format!("{:>8.1}", ns(d))
            })
            .collect();
        println!("{name:<10} {}", cols.join(" "));
    }
    row("before", before(), &lags, &ns);
    row("after", after(), &lags, &ns);
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    benches(&mut c);
    c.final_summary();
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        summary();
    }
}
