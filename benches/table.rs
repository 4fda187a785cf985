//! Why the table is a seqlock of atomics: the same single-writer / many-reader
//! slot three ways — our seqlock (`Table`), an `ArcSwap` of an immutable quote
//! (one allocation per write), and a `parking_lot::RwLock` — writing quotes
//! while a second thread reads the same slots.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::RwLock;
use tickrelay::price::Price;
use tickrelay::table::Table;
use tickrelay::wire::Message;

const SLOTS: u16 = 1000;

#[derive(Clone, Copy, Default)]
#[allow(dead_code)] // read through black_box only
struct State {
    seq: u64,
    ts: u64,
    bid: i64,
    ask: i64,
    bid_size: u32,
    ask_size: u32,
}

#[derive(Default)]
struct BareSeqlock {
    version: std::sync::atomic::AtomicU64,
    fields: [std::sync::atomic::AtomicU64; 6],
}

impl BareSeqlock {
    fn write(&self, v: [u64; 6]) {
        let ver = self.version.load(Ordering::Relaxed);
        self.version.store(ver + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        for (f, x) in self.fields.iter().zip(v) {
            f.store(x, Ordering::Relaxed);
        }
        self.version.store(ver + 2, Ordering::Release);
    }

    fn read(&self) -> [u64; 6] {
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                continue;
            }
            let out = std::array::from_fn(|i| self.fields[i].load(Ordering::Relaxed));
            std::sync::atomic::fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) == v1 {
                return out;
            }
        }
    }
}

/// Runs `write(i)` for each of the bench's iterations while another thread
/// calls `read(i)` in a loop, as clients do.
fn with_reader<R: Fn(u16) + Send + Sync + 'static>(read: Arc<R>, body: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u16;
            while !stop.load(Ordering::Relaxed) {
                read(i % SLOTS);
                i = i.wrapping_add(7);
            }
        })
    };
    body();
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
}

fn writes_under_reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("table_write_with_concurrent_reader");
    g.throughput(Throughput::Elements(1));

    let table = Arc::new(Table::new());
    let names: Vec<String> = (0..SLOTS).map(|i| format!("S{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        table.apply(
            1,
            &Message::Directory {
                locate: i as u16,
                ts: 1,
                symbol: n,
                name: n,
                prev_close: Price(1),
            },
        );
    }
    let t = table.clone();
    with_reader(
        Arc::new(move |l| drop(std::hint::black_box(t.quote(l)))),
        || {
            let mut seq = 10u64;
            g.bench_function("seqlock", |b| {
                b.iter(|| {
                    seq += 1;
                    let l = (seq % u64::from(SLOTS)) as u16;
                    table.apply(
                        seq,
                        &Message::Quote {
                            locate: l,
                            ts: seq,
                            bid: Price(seq as i64),
                            ask: Price(seq as i64 + 1),
                            bid_size: 1,
                            ask_size: 2,
                        },
                    )
                })
            });
        },
    );

    // The same seqlock pattern on the bench's State, to compare primitives
    // rather than Table::apply's directory check.
    let bare: Arc<Vec<BareSeqlock>> =
        Arc::new((0..SLOTS).map(|_| BareSeqlock::default()).collect());
    let s = bare.clone();
    with_reader(
        Arc::new(move |l| {
            std::hint::black_box(s[usize::from(l)].read());
        }),
        || {
            let mut seq = 10u64;
            g.bench_function("seqlock_bare", |b| {
                b.iter(|| {
                    seq += 1;
                    let l = (seq % u64::from(SLOTS)) as usize;
                    bare[l].write([seq, seq, seq, seq + 1, 1, 2]);
                })
            });
        },
    );

    let slots: Arc<Vec<ArcSwap<State>>> = Arc::new(
        (0..SLOTS)
            .map(|_| ArcSwap::from_pointee(State::default()))
            .collect(),
    );
    let s = slots.clone();
    with_reader(
        Arc::new(move |l| {
            std::hint::black_box(**s[usize::from(l)].load());
        }),
        || {
            let mut seq = 10u64;
            g.bench_function("arc_swap", |b| {
                b.iter(|| {
                    seq += 1;
                    let l = (seq % u64::from(SLOTS)) as usize;
                    let prev = **slots[l].load();
                    slots[l].store(Arc::new(State {
                        seq,
                        ts: seq,
                        bid: seq as i64,
                        ask: seq as i64 + 1,
                        ..prev
                    }))
                })
            });
        },
    );

    let locks: Arc<Vec<RwLock<State>>> =
        Arc::new((0..SLOTS).map(|_| RwLock::new(State::default())).collect());
    let s = locks.clone();
    with_reader(
        Arc::new(move |l| {
            std::hint::black_box(*s[usize::from(l)].read());
        }),
        || {
            let mut seq = 10u64;
            g.bench_function("rwlock", |b| {
                b.iter(|| {
                    seq += 1;
                    let l = (seq % u64::from(SLOTS)) as usize;
                    let mut w = locks[l].write();
                    *w = State {
                        seq,
                        ts: seq,
                        bid: seq as i64,
                        ask: seq as i64 + 1,
                        ..*w
                    };
                })
            });
        },
    );
    g.finish();
}

criterion_group!(benches, writes_under_reads);
criterion_main!(benches);
