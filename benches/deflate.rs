//! What permessage-deflate costs a connection per message, and what it
//! saves: a stream of quote frames (one symbol of ten a frame, the relay's
//! JSON with deltas as `{"delta":true}` subscribers get them, and whole
//! quotes) compressed message after message by
//!
//! - `context`: the 32 KiB-window compressor a connection keeps under
//!   `deflate = context` (flate2's miniz_oxide, level 1, a sync flush each);
//! - `small_context`: the small-window compressor (`SmallDeflater`, 2 KiB)
//!   a connection keeps under `deflate = small_context`;
//! - `no_context`: each message on its own with the thread's compressor
//!   (`compress_alone`; the cache of the last message never hits here).
//!
//! Run: `cargo bench --bench deflate`. Prints ns and compressed bytes per
//! message for each, after the criterion run.

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use tickrelay::deflate::{Deflater, SMALL_WINDOW_BITS, SmallDeflater, compress_alone};

/// Frames of a random walk over ten symbols: with `delta`, only the fields
/// that changed (as the relay's deltas), else the whole quote.
fn frames(delta: bool, n: usize) -> Vec<Vec<u8>> {
    let symbols = [
        "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AVGO", "JPM", "V",
    ];
    let mut bids: Vec<i64> = (0..10).map(|k| 1_000_000 + k * 377_123).collect();
    let mut r = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |m: u64| {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        r % m
    };
    (0..n)
        .map(|i| {
            let k = rand(10) as usize;
            bids[k] += rand(9) as i64 - 4;
            let (bid, ask) = (bids[k], bids[k] + 1 + rand(6) as i64);
            let seq = 50_000 + i * 3;
            let ts = 1_796_664_714_000_000_000 + i as u64 * 500_000 + rand(100_000);
            let price = |p: i64| format!("{}.{:04}", p / 10_000, p % 10_000);
            let fields = if delta {
                format!(
                    r#""bid":"{}","ask":"{}","bid_size":{}"#,
                    price(bid),
                    price(ask),
                    100 * (1 + rand(20))
                )
            } else {
                format!(
                    r#""bid":"{}","ask":"{}","bid_size":{},"ask_size":{},"last":"{}","last_size":100,"volume":{},"prev_close":"{}""#,
                    price(bid),
                    price(ask),
                    100 * (1 + rand(20)),
                    100 * (1 + rand(20)),
                    price(bid + rand(3) as i64),
                    90_000 + i * 100,
                    price(1_000_000 + k as i64 * 377_123),
                )
            };
            format!(
                r#"{{"type":"ticks","seq":{seq},"quotes":[{{"symbol":"{}","seq":{seq},{fields},"ts":{ts}}}]}}"#,
                symbols[k]
            )
            .into_bytes()
        })
        .collect()
}

/// One way of compressing a connection's next message into `out`.
type Compressor = Box<dyn FnMut(&[u8], &mut Vec<u8>)>;

fn compressors() -> Vec<(&'static str, Compressor)> {
    let mut context = Deflater::default();
    let mut small = SmallDeflater::new(SMALL_WINDOW_BITS);
    let mut alone_32k = Deflater::default();
    vec![
        (
            "context",
            Box::new(move |m: &[u8], out: &mut Vec<u8>| context.message(m, out, true)),
        ),
        (
            "small_context",
            Box::new(move |m: &[u8], out: &mut Vec<u8>| small.message(m, out, true)),
        ),
        (
            "no_context",
            Box::new(|m: &[u8], out: &mut Vec<u8>| {
                compress_alone(m, out, None);
            }),
        ),
        // What `no_context` did before it took the small compressor: the
        // 32 KiB-window one, reset for each message.
        (
            "no_context_32k",
            Box::new(move |m: &[u8], out: &mut Vec<u8>| alone_32k.message(m, out, false)),
        ),
    ]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut summary = Vec::new();
    for (kind, delta) in [("delta", true), ("whole", false)] {
        let msgs = frames(delta, 4_096);
        let raw: usize = msgs.iter().map(Vec::len).sum();
        let mut g = c.benchmark_group(format!("deflate_{kind}"));
        for (name, mut compress) in compressors() {
            let mut out = Vec::with_capacity(1 << 16);
            let mut i = 0;
            g.bench_function(name, |b| {
                b.iter(|| {
                    out.clear();
                    compress(&msgs[i % msgs.len()], &mut out);
                    i += 1;
                    black_box(out.len())
                })
            });
        }
        g.finish();
        // The plain summary: one pass over the stream, a fresh compressor.
        for (name, mut compress) in compressors() {
            let mut out = Vec::with_capacity(1 << 16);
            let t = Instant::now();
            let mut bytes = 0;
            for m in &msgs {
                out.clear();
                compress(m, &mut out);
                bytes += out.len();
            }
            let ns = t.elapsed().as_nanos() as f64 / msgs.len() as f64;
            summary.push(format!(
                "{kind:5} {name:13} {ns:7.0} ns/message  {:6.1} B/message ({:.2} of {:.1} B)",
                bytes as f64 / msgs.len() as f64,
                bytes as f64 / raw as f64,
                raw as f64 / msgs.len() as f64,
            ));
        }
    }
    c.final_summary();
    println!();
    for line in summary {
        println!("{line}");
    }
}
