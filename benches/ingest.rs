//! The ingest hot path, one core, no sockets: what a message costs from the
//! datagram to the table.
//!
//! - `decode`: `Packet::parse` and `decode_message` of every message;
//! - `sequence_apply`: parse, sequence, decode and apply to the table through
//!   a `Sink` shaped like the relay's own (per-line counters included);
//! - `sequence_apply_ab`: the same with every packet arriving twice, as on
//!   the A and B lines (throughput counts each message once);
//! - `encode_pack`: the simulator's side, encoding and packing messages into
//!   packets with `PacketBuilder` (no sockets).
//!
//! Packets hold a realistic mix: 80% quotes, 20% trades, over 1,000 symbols,
//! packed to the 1,400-byte limit as the simulator packs them at high rates.
//! Criterion reports `elem/s`, which here is messages/s; after the criterion
//! run a one-line summary per bench prints plain messages/s.
//!
//! Run: `cargo bench --bench ingest` (scripts/bench-ingest.sh runs it too).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tickrelay::feed::sequencer::{Sequencer, SequencerConfig, Sink};
use tickrelay::metrics::{LineCounters, Metrics};
use tickrelay::price::Price;
use tickrelay::table::{Applied, Table};
use tickrelay::wire::{Locate, Message, Packet, PacketBuilder, Session, decode_message};

const SYMBOLS: u16 = 1_000;
const MESSAGES: usize = 100_000;

/// An owned market event, so a message list can outlive its generator.
#[derive(Clone, Copy)]
enum Event {
    Quote(Locate, u64, i64, i64, u32, u32),
    Trade(Locate, u64, i64, u32, u64),
}

impl Event {
    fn message(&self) -> Message<'static> {
        match *self {
            Event::Quote(locate, ts, bid, ask, bid_size, ask_size) => Message::Quote {
                locate,
                ts,
                bid: Price(bid),
                ask: Price(ask),
                bid_size,
                ask_size,
            },
            Event::Trade(locate, ts, price, size, volume) => Message::Trade {
                locate,
                ts,
                price: Price(price),
                size,
                volume,
            },
        }
    }
}

/// Quotes and trades as the simulator makes them: cent prices from $5 to
/// $600, round-lot sizes, nanosecond timestamps of today.
fn events(n: usize) -> Vec<Event> {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut mids: Vec<i64> = (0..SYMBOLS).map(|_| rng.gen_range(500..60_000)).collect();
    let mut volume = vec![0u64; usize::from(SYMBOLS)];
    let mut ts = 1_764_300_000_000_000_000u64;
    (0..n)
        .map(|_| {
            let locate = rng.gen_range(0..SYMBOLS);
            let i = usize::from(locate);
            ts += rng.gen_range(100..2_000);
            mids[i] = (mids[i] + rng.gen_range(-3..=3)).max(100);
            if rng.gen_ratio(1, 5) {
                let size = 100 * rng.gen_range(1..=10u32);
                volume[i] += u64::from(size);
                Event::Trade(locate, ts, mids[i] * 100, size, volume[i])
            } else {
                Event::Quote(
                    locate,
                    ts,
                    mids[i] * 100,
                    (mids[i] + 1) * 100,
                    100 * rng.gen_range(1..=50u32),
                    100 * rng.gen_range(1..=50u32),
                )
            }
        })
        .collect()
}

fn packets(events: &[Event]) -> Vec<Vec<u8>> {
    let mut b = PacketBuilder::new(Session::new("BENCH"), 1);
    let mut out = Vec::new();
    for e in events {
        b.push(&e.message(), &mut |p| out.push(p.to_vec()));
    }
    b.flush(&mut |p| out.push(p.to_vec()));
    out
}

/// A table with the directory of every benched symbol.
fn listed_table() -> Table {
    let table = Table::new();
    for locate in 0..SYMBOLS {
        let symbol = format!("S{locate:04}");
        table.apply(
            u64::from(locate),
            &Message::Directory {
                locate,
                ts: 1,
                symbol: &symbol,
                name: "Bench Corp.",
                prev_close: Price(100_0000),
            },
        );
    }
    table
}

/// The relay's sink in miniature: decode, apply, publish the sequence.
struct Apply<'t> {
    table: &'t Table,
    applied: u64,
    rejected: u64,
}

impl Sink for Apply<'_> {
    fn message(&mut self, seq: u64, payload: &[u8]) {
        match decode_message(payload) {
            Ok(msg) => match self.table.apply(seq, &msg) {
                Applied::UnknownLocate => self.rejected += 1,
                _ => self.applied += 1,
            },
            Err(_) => self.rejected += 1,
        }
        self.table.set_last_seq(seq);
    }

    // The table is listed once up front; a bench session must not reset it.
    fn new_session(&mut self, _: Session, _: u64) {}
}

/// What the relay does per datagram: count it, parse it, sequence it.
fn ingest(
    seq: &mut Sequencer,
    sink: &mut Apply<'_>,
    line: &LineCounters,
    raw: &[u8],
    now: Instant,
) {
    line.packets.inc();
    line.bytes.inc_by(raw.len() as u64);
    if let Ok(p) = Packet::parse(raw) {
        line.messages.inc_by(u64::from(p.count));
        seq.on_packet(&p, raw, now, sink);
    }
}

fn decode_all(packets: &[Vec<u8>]) -> u64 {
    let mut n = 0u64;
    for raw in packets {
        let p = Packet::parse(raw).expect("valid packet");
        for m in p.messages() {
            if let Ok(msg) = decode_message(m) {
                n += u64::from(black_box(msg).locate() != u16::MAX);
            }
        }
    }
    n
}

fn sequence_apply(table: &Table, line: &LineCounters, packets: &[Vec<u8>], copies: usize) -> u64 {
    let mut seq = Sequencer::new(SequencerConfig::default());
    let mut sink = Apply {
        table,
        applied: 0,
        rejected: 0,
    };
    let now = Instant::now();
    for raw in packets {
        for _ in 0..copies {
            ingest(&mut seq, &mut sink, line, raw, now);
        }
    }
    assert_eq!(sink.rejected, 0);
    sink.applied
}

fn encode_pack(events: &[Event]) -> usize {
    let mut b = PacketBuilder::new(Session::new("BENCH"), 1);
    let mut bytes = 0usize;
    for e in events {
        b.push(&e.message(), &mut |p| bytes += black_box(p).len());
    }
    b.flush(&mut |p| bytes += p.len());
    bytes
}

struct Fixture {
    events: Vec<Event>,
    packets: Vec<Vec<u8>>,
    table: Table,
    line: LineCounters,
    _metrics: Metrics,
}

fn fixture() -> Fixture {
    let events = events(MESSAGES);
    let packets = packets(&events);
    let metrics = Metrics::new();
    Fixture {
        line: metrics.feed.line("a"),
        _metrics: metrics,
        table: listed_table(),
        packets,
        events,
    }
}

fn benches(c: &mut Criterion, f: &Fixture) {
    let n = MESSAGES as u64;
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(n));
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("decode", |b| b.iter(|| decode_all(&f.packets)));
    g.bench_function("sequence_apply", |b| {
        b.iter(|| sequence_apply(&f.table, &f.line, &f.packets, 1))
    });
    g.bench_function("sequence_apply_ab", |b| {
        b.iter(|| sequence_apply(&f.table, &f.line, &f.packets, 2))
    });
    g.bench_function("encode_pack", |b| b.iter(|| encode_pack(&f.events)));
    g.finish();
}

/// Plain messages/s per bench: the best of a few one-second runs.
fn summary(f: &Fixture, filter: Option<&str>) {
    let runs: [(&str, &dyn Fn() -> u64); 4] = [
        ("decode", &|| decode_all(&f.packets)),
        ("sequence_apply", &|| {
            sequence_apply(&f.table, &f.line, &f.packets, 1)
        }),
        ("sequence_apply_ab", &|| {
            sequence_apply(&f.table, &f.line, &f.packets, 2)
        }),
        ("encode_pack", &|| encode_pack(&f.events) as u64),
    ];
    println!(
        "\nsummary (one core, {} messages in {} packets):",
        MESSAGES,
        f.packets.len()
    );
    for (name, run) in runs {
        if filter.is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        let mut best = 0.0f64;
        for _ in 0..3 {
            let start = Instant::now();
            let mut iters = 0u64;
            while start.elapsed() < Duration::from_millis(700) {
                black_box(run());
                iters += 1;
            }
            best = best.max((iters * MESSAGES as u64) as f64 / start.elapsed().as_secs_f64());
        }
        println!("  ingest/{name:<18} {:>14.0} messages/s", best);
    }
}

fn main() {
    let f = fixture();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let testing = args.iter().any(|a| a == "--test" || a == "--list");
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &f);
    c.final_summary();
    if !testing {
        let filter = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .map(String::as_str);
        summary(&f, filter);
    }
}
