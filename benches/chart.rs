//! What keeping the chart and the tape costs the ingest: `Table::apply` of
//! one trade message with the default history (1,000 trades, 900 one-second
//! and 1,440 one-minute bars per symbol) against the same table keeping
//! none, and with history while another thread reads bars as a REST client
//! does (the writer may wait for one reader's copy), and while another
//! thread reads as the trades and bars streams do (each symbol's trades
//! after its position, its current bar).
//!
//! Trades go round 500 symbols with the exchange clock moving 1 ms per
//! trade, so every ring fills and then evicts: the steady state of a day.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickrelay::price::Price;
use tickrelay::table::chart::{Interval, LIVE};
use tickrelay::table::{HistoryLimits, Table};
use tickrelay::wire::Message;

const SYMBOLS: u64 = 500;
const T0: u64 = 1_800_000_000_000_000_000;

/// A table with `history` and every symbol listed.
fn listed(history: HistoryLimits) -> Arc<Table> {
    let table = Arc::new(Table::with_history(history));
    for i in 0..SYMBOLS {
        let name = format!("S{i}");
        table.apply(
            i + 1,
            &Message::Directory {
                locate: i as u16,
                ts: T0,
                symbol: &name,
                name: &name,
                prev_close: Price(100_0000),
            },
        );
    }
    table
}

/// Applies trade messages, one per iteration, each a new sequence.
fn bench_trades(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    table: &Table,
) {
    let mut seq = SYMBOLS + 1;
    g.bench_function(name, |b| {
        b.iter(|| {
            seq += 1;
            table.apply(
                seq,
                &Message::Trade {
                    locate: (seq * 7_919 % SYMBOLS) as u16,
                    ts: T0 + seq * 1_000_000,
                    price: Price(100_0000 + (seq % 400) as i64),
                    size: 100,
                    volume: seq * 100,
                },
            )
        })
    });
}

fn trades(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest_trade");
    g.throughput(Throughput::Elements(1));
    bench_trades(&mut g, "history_off", &listed(HistoryLimits::OFF));
    bench_trades(&mut g, "history_default", &listed(HistoryLimits::default()));

    // A reader taking 1-minute and 1-second bars of the symbols in turn.
    let table = listed(HistoryLimits::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (table, stop) = (table.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let locate = (i % SYMBOLS) as u16;
                let interval = if i.is_multiple_of(2) {
                    Interval::M1
                } else {
                    Interval::S1
                };
                std::hint::black_box(table.chart().bars(locate, interval, u64::MAX, 300, LIVE));
                i += 1;
            }
        })
    };
    bench_trades(&mut g, "history_default_with_reader", &table);
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();

    // A reader as the trades streams are: each symbol's trades after where
    // it last read, then its current 1-second bar, in turn.
    let table = listed(HistoryLimits::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (table, stop) = (table.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut at = vec![0u64; SYMBOLS as usize];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let locate = (i % SYMBOLS as usize) as u16;
                let read = table
                    .chart()
                    .trades_after(locate, at[usize::from(locate)], 4_096, LIVE);
                if let Some(last) = read.trades.last() {
                    at[usize::from(locate)] = last.seq;
                }
                std::hint::black_box(table.chart().bars_from(locate, Interval::S1, T0, 2, LIVE));
                i += 1;
            }
        })
    };
    bench_trades(&mut g, "history_default_with_stream_reader", &table);
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    g.finish();
}

criterion_group!(benches, trades);
criterion_main!(benches);
