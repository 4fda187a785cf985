//! The fan-out hot path, one core, no sockets: one change fanned to S
//! subscribers (S = 1, 100, 10,000), and the encodings every subscriber shares.
//!
//! - `hub_mark/S`: a quote changes, the ingest side hands it to the hub
//!   (`HubListener::changed` + `batch_done`, the public path the feed uses),
//!   and the real `Hub::run` task marks it pending for each of S conflating
//!   subscribers. The hub task runs on a current-thread runtime in this
//!   thread, so no cross-core wake-up is in the number. Pending marks are
//!   taken between iterations, outside the timing, so every iteration does
//!   the full work (no conflation short-cut).
//! - `hub_deliver/S`: the same with S writer tasks parked on
//!   `Client::wait`, as the WebSocket and SSE writers are: each is woken,
//!   takes its marks and reads the shared encoded quote (`Hub::current`,
//!   which encodes once per change) — everything up to building the frame and
//!   writing the socket.
//! - `encode/*`: `Encoded::new` (JSON) and `Encoded::msgpack` of one quote,
//!   paid once per change whatever S is.
//! - `envelope/*`: a `ticks` frame of N shared quotes, paid once per client
//!   frame.
//!
//! Throughput is in elements: subscribers reached per second for the hub
//! benches (deliveries/s at the hub), quotes per second for encoding.
//!
//! Run: `cargo bench --bench fanout`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use tickrelay::fanout::{Client, Encoded, Hub, HubListener, envelope};
use tickrelay::metrics::Metrics;
use tickrelay::price::Price;
use tickrelay::table::ChangeListener;
use tickrelay::table::Table;
use tickrelay::transport::kind::Transport;
use tickrelay::wire::{Locate, Message};
use tokio_util::sync::CancellationToken;

const SYMBOLS: &[&str] = &[
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AVGO",
];

struct Rig {
    rt: tokio::runtime::Runtime,
    table: Arc<Table>,
    hub: Arc<Hub>,
    listener: HubListener,
    clients: Vec<Arc<Client>>,
    seq: u64,
    cancel: CancellationToken,
}

impl Rig {
    /// A hub over a listed table, its fan-out task running, and `s`
    /// conflating subscribers of AAPL.
    fn new(s: usize) -> Self {
        let table = Arc::new(Table::new());
        for (i, sym) in SYMBOLS.iter().enumerate() {
            table.apply(
                i as u64 + 1,
                &Message::Directory {
                    locate: i as Locate,
                    ts: 1,
                    symbol: sym,
                    name: sym,
                    prev_close: Price(100_0000),
                },
            );
        }
        let seq = SYMBOLS.len() as u64;
        table.set_last_seq(seq);
        let metrics = Metrics::new();
        let hub = Hub::new(table.clone(), metrics.stream.clone());
        let listener = hub.listener();
        let aapl: Arc<str> = Arc::from("AAPL");
        let clients: Vec<Arc<Client>> = (0..s)
            .map(|_| {
                let c = hub.register(Transport::Ws, 16);
                hub.subscribe(&c, &aapl, false);
                c
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cancel = CancellationToken::new();
        rt.spawn(hub.clone().run(cancel.clone()));
        Rig {
            rt,
            table,
            hub,
            listener,
            clients,
            seq,
            cancel,
        }
    }

    /// A new quote for AAPL in the table (what ingest does before telling the hub).
    fn change(&mut self) -> u64 {
        self.seq += 1;
        let bid = 189_0000 + (self.seq % 1000) as i64 * 100;
        self.table.apply(
            self.seq,
            &Message::Quote {
                locate: 0,
                ts: self.seq,
                bid: Price(bid),
                ask: Price(bid + 200),
                bid_size: 300,
                ask_size: 200,
            },
        );
        self.table.set_last_seq(self.seq);
        self.seq
    }

    /// Hands the change to the hub and runs the fan-out task until it has
    /// marked every subscriber.
    fn fan_out(&mut self, seq: u64) {
        self.listener.changed(0, seq);
        self.listener.batch_done(seq);
        let hub = &self.hub;
        self.rt.block_on(async {
            while hub.fanned_seq() < seq {
                tokio::task::yield_now().await;
            }
        });
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn hub_mark(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_mark");
    for s in [1usize, 100, 10_000] {
        let mut rig = Rig::new(s);
        group.throughput(Throughput::Elements(s as u64));
        if s >= 10_000 {
            group.sample_size(20);
        }
        group.bench_function(BenchmarkId::from_parameter(s), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let seq = rig.change();
                    let start = Instant::now();
                    rig.fan_out(seq);
                    total += start.elapsed();
                    for c in &rig.clients {
                        black_box(c.take());
                    }
                }
                total
            })
        });
    }
    group.finish();
}

fn hub_deliver(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_deliver");
    for s in [1usize, 100, 10_000] {
        let mut rig = Rig::new(s);
        let delivered = Arc::new(AtomicU64::new(0));
        // Writers parked as the transports park them: wait, take, read the
        // shared encoding of each marked symbol.
        for client in &rig.clients {
            let (client, hub, delivered) = (client.clone(), rig.hub.clone(), delivered.clone());
            rig.rt.spawn(async move {
                loop {
                    client.wait().await;
                    let (marks, ..) = client.take().into_parts();
                    for l in marks {
                        black_box(hub.current(l).map(|e| e.json.len()));
                    }
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        group.throughput(Throughput::Elements(s as u64));
        if s >= 10_000 {
            group.sample_size(20);
        }
        group.bench_function(BenchmarkId::from_parameter(s), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let seq = rig.change();
                    let target = delivered.load(Ordering::Relaxed) + s as u64;
                    let start = Instant::now();
                    rig.fan_out(seq);
                    let d = &delivered;
                    rig.rt.block_on(async {
                        while d.load(Ordering::Relaxed) < target {
                            tokio::task::yield_now().await;
                        }
                    });
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut rig = Rig::new(0);
    rig.change();
    let quote = rig.table.quote(0).expect("listed");
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json", |b| {
        b.iter(|| black_box(Encoded::new(1, black_box(quote.clone()), 1)))
    });
    group.bench_function("msgpack", |b| {
        b.iter_batched(
            || Encoded::new(1, quote.clone(), 1),
            |e| black_box(e.msgpack().len()),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let quotes: Vec<Arc<Encoded>> = (0..10)
        .map(|_| {
            let q = Arc::new(Encoded::new(1, quote.clone(), 1));
            q.msgpack();
            q
        })
        .collect();
    let mut group = c.benchmark_group("envelope");
    for n in [1usize, 10] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("ws_ticks_json", n), |b| {
            b.iter(|| black_box(envelope::ws_ticks_json(42, &quotes[..n])))
        });
        group.bench_function(BenchmarkId::new("ws_ticks_msgpack", n), |b| {
            b.iter(|| black_box(envelope::ws_ticks_msgpack(42, &quotes[..n])))
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    hub_mark(&mut c);
    hub_deliver(&mut c);
    encode(&mut c);
    c.final_summary();
}
