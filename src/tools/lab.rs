//! The lab behind `tickrelay lab`: the same watchlists over each transport
//! in turn against a running relay — short poll (1 s), long poll, SSE,
//! WebSocket JSON, WebSocket MessagePack, WebSocket with `batch_ms` 16, and
//! both WebSocket encodings with deltas — and one table of what each costs
//! and gives (README, "Which transport?").
//!
//! Each row is a [`crate::tools::load`] run with a [`Tap`]: the load clients count
//! the bytes that cross their sockets both ways (headers and framing
//! included) and note every quote's `(symbol, seq)` as it arrives. Beside
//! the rows, a reference client subscribes to the union of the watchlists
//! in `every` mode and records each change's `seq` and exchange timestamp:
//! the truth. Staleness is sampled after the run, every 10 ms of each
//! window, for every client and symbol: zero when the client's view holds
//! the symbol's newest change, else how long ago (exchange time) the first
//! change it is missing happened.
//!
//! Server CPU per update comes from /proc with `--server-pid`, less the
//! relay's rate before any row ran (ingest and the reference client), so a
//! row is charged only for serving its clients. Memory per client is the
//! growth of the relay's resident memory while a row's clients connect and
//! subscribe, less its growth rate before the rows; memory a previous row
//! freed may be reused, so read it as an estimate.

mod html;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::procfs::{self, Pid};
use crate::tools::load::{self, LoadArgs, LoadTransport, SymbolChoice};
use crate::tools::tap::Tap;
use crate::tools::zipf::Zipf;

/// `tickrelay lab` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LabArgs {
    /// Base URL of the relay.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Clients per transport.
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
    /// Symbols per client (drawn like the feed's activity, the same for every transport).
    #[arg(long, default_value_t = 10)]
    pub symbols_per_client: usize,
    /// Seconds measured per transport.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The relay's process id: its CPU time and memory, from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Short-polling interval, ms.
    #[arg(long, default_value_t = 1_000)]
    pub poll_interval_ms: u64,
    /// Only these rows (comma-separated): short-poll, long-poll, sse, ws,
    /// ws-msgpack, ws-batch16, ws-delta, ws-msgpack-delta, ws-deflate,
    /// ws-delta-deflate, ws-msgpack-deflate, ws-msgpack-delta-deflate. One row on a fresh relay measures its memory
    /// per client best: a relay reuses memory earlier rows freed.
    #[arg(long, value_delimiter = ',')]
    pub transports: Vec<String>,
    /// Seed of the watchlists.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the table as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the table and its plots (inline SVG) to this HTML file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

/// One transport's row of the table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    /// Transport id: `short-poll`, `long-poll`, `sse`, `ws`, `ws-msgpack`,
    /// `ws-batch16`, `ws-delta`, `ws-msgpack-delta`, and each of `ws`,
    /// `ws-delta`, `ws-msgpack`, `ws-msgpack-delta` with `-deflate`.
    pub transport: String,
    /// Its name in the table.
    pub label: String,
    /// Updates delivered per second per client.
    pub deliveries_per_s: f64,
    /// Median staleness of a client's view of a symbol, ms.
    pub staleness_p50_ms: f64,
    /// 99th percentile of that staleness, ms.
    pub staleness_p99_ms: f64,
    /// Bytes on the clients' sockets (both ways) per delivered update.
    pub bytes_per_update: Option<f64>,
    /// Requests per minute per client (HTTP requests, WebSocket operations).
    pub requests_per_min: f64,
    /// Server CPU µs per delivered update, above the idle baseline.
    pub cpu_us_per_update: Option<f64>,
    /// Growth of the server's resident memory per open client, bytes.
    pub memory_per_client_bytes: Option<f64>,
    /// Clients connected and subscribed in the window.
    pub clients: usize,
    /// Length of the window, seconds.
    pub seconds: f64,
    /// Updates delivered in the window.
    pub deliveries: u64,
    /// Bytes the clients read in the window.
    pub rx_bytes: u64,
    /// Bytes the clients wrote in the window.
    pub tx_bytes: u64,
    /// Requests sent in the window.
    pub requests: u64,
    /// Staleness samples taken.
    pub staleness_samples: usize,
    /// Failed connections and requests, by kind.
    pub errors: BTreeMap<String, u64>,
}

/// The lab's result.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabReport {
    /// Relay URL.
    pub url: String,
    /// Clients per transport.
    pub clients: usize,
    /// Symbols per client.
    pub symbols_per_client: usize,
    /// Seconds measured per transport.
    pub duration_s: f64,
    /// Short-polling interval, ms.
    pub poll_interval_ms: u64,
    /// The relay's CPU seconds per second before any row (ingest and the
    /// reference client), with `--server-pid`.
    pub baseline_cpu_per_s: Option<f64>,
    /// One row per transport.
    pub rows: Vec<Row>,
}

/// The rows, in order: id, transport, `batch_ms`, deltas, permessage-deflate.
const PLAN: [(&str, LoadTransport, Option<u64>, bool, bool); 12] = [
    ("short-poll", LoadTransport::Snapshot, None, false, false),
    ("long-poll", LoadTransport::Poll, None, false, false),
    ("sse", LoadTransport::Sse, None, false, false),
    ("ws", LoadTransport::Ws, None, false, false),
    ("ws-msgpack", LoadTransport::WsMsgpack, None, false, false),
    ("ws-batch16", LoadTransport::Ws, Some(16), false, false),
    ("ws-delta", LoadTransport::Ws, None, true, false),
    (
        "ws-msgpack-delta",
        LoadTransport::WsMsgpack,
        None,
        true,
        false,
    ),
    ("ws-deflate", LoadTransport::Ws, None, false, true),
    ("ws-delta-deflate", LoadTransport::Ws, None, true, true),
    (
        "ws-msgpack-deflate",
        LoadTransport::WsMsgpack,
        None,
        false,
        true,
    ),
    (
        "ws-msgpack-delta-deflate",
        LoadTransport::WsMsgpack,
        None,
        true,
        true,
    ),
];

fn label(id: &str, poll_interval_ms: u64) -> String {
    match id {
        "short-poll" => format!("short poll ({})", secs(poll_interval_ms)),
        "long-poll" => "long poll".into(),
        "sse" => "SSE".into(),
        "ws" => "WebSocket JSON".into(),
        "ws-msgpack" => "WebSocket MessagePack".into(),
        "ws-batch16" => "WebSocket batch_ms 16".into(),
        "ws-delta" => "WebSocket JSON + delta".into(),
        "ws-msgpack-delta" => "WebSocket MessagePack + delta".into(),
        "ws-deflate" => "WebSocket JSON + deflate".into(),
        "ws-delta-deflate" => "WebSocket JSON + delta + deflate".into(),
        "ws-msgpack-deflate" => "WebSocket MessagePack + deflate".into(),
        "ws-msgpack-delta-deflate" => "WebSocket MessagePack + delta + deflate".into(),
        other => other.into(),
    }
}

fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// Step between staleness samples.
const SAMPLE_NS: u64 = 10_000_000;

/// Runs the lab and prints the table (text, or JSON with `--json`; HTML to
/// `--html`). Fails when a row connects no client.
pub fn run(args: LabArgs) -> anyhow::Result<LabReport> {
    if args.clients == 0 || args.symbols_per_client == 0 {
        bail!("--clients and --symbols-per-client must be at least 1");
    }
    for t in &args.transports {
        if !PLAN.iter().any(|(id, ..)| id == t) {
            let ids: Vec<&str> = PLAN.iter().map(|(id, ..)| *id).collect();
            bail!("--transports {t}: not one of {}", ids.join(", "));
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("lab")
        .enable_all()
        .build()?;
    let report = rt.block_on(drive(&args))?;
    rt.shutdown_timeout(Duration::from_secs(2));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text_table(&report));
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::page(&report))
            .with_context(|| format!("cannot write --html {}", path.display()))?;
        if !args.json {
            println!("plots: {}", path.display());
        }
    }
    Ok(report)
}

fn load_args(args: &LabArgs) -> LoadArgs {
    LoadArgs {
        url: args.url.clone(),
        transport: LoadTransport::Ws,
        clients: args.clients,
        symbols_per_client: args.symbols_per_client,
        symbols: SymbolChoice::Zipf,
        zipf: 1.0,
        directory: None,
        ramp: 5_000.0,
        duration: args.duration,
        warmup: 1.0,
        source_ips: 1,
        idle: false,
        mode: None,
        max_hz: None,
        batch_ms: None,
        delta: false,
        deflate: false,
        chart: false,
        books: 0,
        depth: 10,
        books_only: false,
        poll_interval_ms: args.poll_interval_ms,
        poll_timeout_ms: 10_000,
        threads: None,
        server_pid: args.server_pid.into_iter().collect(),
        nchan_path: "/sub/".into(),
        seed: args.seed,
        token: None,
        json: true,
        no_progress: true,
    }
}

/// The relay's CPU seconds so far; 0 where /proc cannot tell.
fn cpu_seconds(pid: u32) -> f64 {
    procfs::cpu_seconds(Pid::Id(pid)).unwrap_or(0.0)
}

/// The relay's resident memory, KiB; 0 where /proc cannot tell.
fn rss_kib(pid: u32) -> u64 {
    procfs::resident_bytes(Pid::Id(pid)).unwrap_or(0) / 1024
}

async fn drive(args: &LabArgs) -> anyhow::Result<LabReport> {
    let template = load_args(args);
    let target = load::target(&args.url)?;
    let dir = load::directory(&template, &target).await?;
    let zipf = Zipf::new(dir.len(), template.zipf);
    let union: BTreeSet<String> = (0..args.clients)
        .flat_map(|id| load::pick(&template, &dir, Some(&zipf), id))
        .collect();
    let say = |msg: String| {
        if !args.no_progress {
            eprintln!("lab: {msg}");
        }
    };

    // The truth: every change to the watched symbols, from one `every` client.
    let truth = Arc::new(Reference::default());
    let cancel = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let reference = tokio::spawn(record(
        target.authority.clone(),
        union.iter().cloned().collect(),
        truth.clone(),
        ready_tx,
        cancel.clone(),
    ));
    match tokio::time::timeout(Duration::from_secs(15), ready_rx).await {
        Ok(Ok(())) => {}
        _ => {
            cancel.cancel();
            let why = truth.failed().unwrap_or_else(|| "no snapshot".into());
            bail!("the lab's reference client could not subscribe: {why}");
        }
    }

    // The relay's CPU and memory growth with only the reference client (its
    // ingest, and in a demo the simulator's history): charged to no row.
    let baseline = match args.server_pid {
        Some(pid) => {
            let t0 = Instant::now();
            let (cpu0, rss0) = (cpu_seconds(pid), rss_kib(pid));
            tokio::time::sleep(Duration::from_secs_f64(args.duration.clamp(1.0, 3.0))).await;
            let dt = t0.elapsed().as_secs_f64();
            Some(Baseline {
                cpu_per_s: (cpu_seconds(pid) - cpu0) / dt,
                rss_kib_per_s: (rss_kib(pid) as f64 - rss0 as f64).max(0.0) / dt,
            })
        }
        None => None,
    };

    let mut runs = Vec::new();
    for (id, transport, batch_ms, delta, deflate) in PLAN {
        if !args.transports.is_empty() && !args.transports.iter().any(|t| t == id) {
            continue;
        }
        let name = label(id, args.poll_interval_ms);
        say(format!(
            "{name}: {} clients x {} symbols for {} s",
            args.clients, args.symbols_per_client, args.duration
        ));
        let tap = Arc::new(Tap::new(args.clients));
        let mut la = template.clone();
        la.transport = transport;
        la.batch_ms = batch_ms;
        la.delta = delta;
        la.deflate = deflate;
        if transport == LoadTransport::Snapshot {
            // A short-poll client polls once at connect and then at its own
            // phase of the interval: the gap between its first two polls is
            // up to two intervals. Measure the steady state after it.
            la.warmup = la.warmup.max(2.0 * args.poll_interval_ms as f64 / 1000.0);
        }
        // Memory: the relay's growth from before the ramp to the start of the
        // window (every client connected and subscribed), less its baseline
        // growth over that time.
        let memory = args.server_pid.map(|pid| {
            let (tap, t0, rss0) = (tap.clone(), Instant::now(), rss_kib(pid));
            tokio::spawn(async move {
                while tap.window().0 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let rss1 = rss_kib(pid);
                (rss1 as f64 - rss0 as f64, t0.elapsed().as_secs_f64())
            })
        });
        let report = load::drive_tapped(la, Some(tap.clone())).await?;
        let memory = match memory {
            Some(task) => task.await.ok(),
            None => None,
        };
        if report.connected == 0 {
            bail!("{name}: no client connected: {:?}", report.errors);
        }
        if let Some(why) = truth.failed() {
            bail!("the lab's reference client failed during {name}: {why}");
        }
        runs.push((id, name, tap, report, memory));
        // Let the relay close the row's connections before the next row's
        // memory baseline.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cancel.cancel();
    let _ = reference.await;

    let truth = truth.sorted();
    let rows = runs
        .into_iter()
        .map(|(id, name, tap, r, memory)| {
            let mut stale = staleness(&tap, &truth);
            stale.sort_unstable();
            let clients = r.connected;
            let (rx, tx) = tap.clients().iter().fold((0, 0), |(rx, tx), c| {
                (
                    rx + c.rx.load(std::sync::atomic::Ordering::Relaxed),
                    tx + c.tx.load(std::sync::atomic::Ordering::Relaxed),
                )
            });
            let per_client_s = r.seconds * clients as f64;
            let server = r.server.as_ref();
            Row {
                transport: id.into(),
                label: name,
                deliveries_per_s: r.quotes as f64 / per_client_s,
                staleness_p50_ms: percentile(&stale, 0.50) as f64 / 1000.0,
                staleness_p99_ms: percentile(&stale, 0.99) as f64 / 1000.0,
                bytes_per_update: (r.quotes > 0).then(|| (rx + tx) as f64 / r.quotes as f64),
                requests_per_min: r.requests as f64 * 60.0 / per_client_s,
                cpu_us_per_update: match (server, &baseline) {
                    (Some(s), Some(base)) if r.quotes > 0 => Some(
                        (s.cpu_s - base.cpu_per_s * r.seconds).max(0.0) * 1e6 / r.quotes as f64,
                    ),
                    _ => None,
                },
                memory_per_client_bytes: match (memory, &baseline) {
                    (Some((grew_kib, secs)), Some(base)) if clients > 0 => Some(
                        (grew_kib - base.rss_kib_per_s * secs).max(0.0) * 1024.0 / clients as f64,
                    ),
                    _ => None,
                },
                clients,
                seconds: r.seconds,
                deliveries: r.quotes,
                rx_bytes: rx,
                tx_bytes: tx,
                requests: r.requests,
                staleness_samples: stale.len(),
                errors: r.errors,
            }
        })
        .collect();
    Ok(LabReport {
        url: args.url.clone(),
        clients: args.clients,
        symbols_per_client: args.symbols_per_client,
        duration_s: args.duration,
        poll_interval_ms: args.poll_interval_ms,
        baseline_cpu_per_s: baseline.as_ref().map(|b| b.cpu_per_s),
        rows,
    })
}

/// The relay before any row ran.
struct Baseline {
    cpu_per_s: f64,
    rss_kib_per_s: f64,
}

/// Nearest-rank percentile of sorted samples (0 when there are none).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Every change the reference client saw: per symbol, `(seq, exchange ts)`.
#[derive(Default)]
struct Reference {
    changes: Mutex<HashMap<String, Vec<(u64, u64)>>>,
    failed: Mutex<Option<String>>,
}

impl Reference {
    fn failed(&self) -> Option<String> {
        self.failed.lock().clone()
    }

    fn sorted(&self) -> HashMap<String, Vec<(u64, u64)>> {
        let mut all = std::mem::take(&mut *self.changes.lock());
        for v in all.values_mut() {
            v.sort_unstable();
            v.dedup_by_key(|c| c.0);
        }
        all
    }
}

#[derive(Deserialize)]
struct RefFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    quotes: Vec<RefQuote>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct RefQuote {
    symbol: String,
    seq: u64,
    ts: u64,
}

/// The reference client: one WebSocket in `every` mode on the union of the
/// watchlists, recording each change until cancelled.
async fn record(
    authority: String,
    symbols: Vec<String>,
    truth: Arc<Reference>,
    ready: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
) {
    let fail = |why: String| *truth.failed.lock() = Some(why);
    let (mut ws, _) =
        match tokio_tungstenite::connect_async(format!("ws://{authority}/v1/ws")).await {
            Ok(c) => c,
            Err(e) => return fail(format!("connect: {e}")),
        };
    let op = serde_json::json!({"op": "subscribe", "symbols": symbols, "mode": "every"});
    if let Err(e) = ws.send(Message::text(op.to_string())).await {
        return fail(format!("subscribe: {e}"));
    }
    let mut ready = Some(ready);
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                return fail(format!("closed: {}", f.map_or(1005, |f| u16::from(f.code))));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return fail(e.to_string()),
            None => return fail("closed".into()),
        };
        let Ok(frame) = serde_json::from_str::<RefFrame>(&text) else {
            continue;
        };
        if frame.kind == "error" {
            return fail(format!("error frame {}", frame.code.unwrap_or_default()));
        }
        {
            let mut changes = truth.changes.lock();
            for q in frame.quotes {
                changes.entry(q.symbol).or_default().push((q.seq, q.ts));
            }
        }
        if frame.kind == "snapshot"
            && let Some(r) = ready.take()
        {
            let _ = r.send(());
        }
    }
}

/// Staleness samples, µs: every [`SAMPLE_NS`] of the window, for every
/// client and each symbol it has a view of.
fn staleness(tap: &Tap, truth: &HashMap<String, Vec<(u64, u64)>>) -> Vec<u64> {
    let (start, end) = tap.window();
    let mut out = Vec::new();
    for client in tap.clients() {
        let seen = client.seen.lock();
        let mut series: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for s in seen.iter() {
            series
                .entry(s.symbol.as_str())
                .or_default()
                .push((s.at_ns, s.seq));
        }
        for (symbol, views) in series {
            let Some(changes) = truth.get(symbol) else {
                continue;
            };
            let mut i = 0;
            let mut view: Option<u64> = None;
            let mut t = start + SAMPLE_NS / 2;
            while t < end {
                while i < views.len() && views[i].0 <= t {
                    view = Some(view.map_or(views[i].1, |v| v.max(views[i].1)));
                    i += 1;
                }
                if let Some(v) = view {
                    let next = changes.partition_point(|&(seq, _)| seq <= v);
                    let stale = match changes.get(next) {
                        Some(&(_, ts)) if ts <= t => t - ts,
                        _ => 0,
                    };
                    out.push(stale / 1_000);
                }
                t += SAMPLE_NS;
            }
        }
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// The table as text.
pub fn text_table(r: &LabReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tickrelay lab: {} clients x {} symbols, {} s per transport, against {}",
        r.clients, r.symbols_per_client, r.duration_s, r.url
    );
    let _ = writeln!(
        s,
        "{:<39} {:>12} {:>11} {:>11} {:>10} {:>10} {:>10} {:>11}",
        "transport",
        "upd/s/client",
        "stale p50",
        "stale p99",
        "B/update",
        "req/min",
        "CPU µs/upd",
        "mem/client"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:<39} {:>12.1} {:>8.1} ms {:>8.1} ms {:>10} {:>10.1} {:>10} {:>11}",
            row.label,
            row.deliveries_per_s,
            row.staleness_p50_ms,
            row.staleness_p99_ms,
            opt(row.bytes_per_update, 0),
            row.requests_per_min,
            opt(row.cpu_us_per_update, 1),
            row.memory_per_client_bytes
                .map_or_else(|| "–".into(), |b| format!("{:.1} KiB", b / 1024.0)),
        );
    }
    let _ = writeln!(
        s,
        "upd/s: updates delivered per client; stale: how old a client's view of a symbol is, \
         sampled every 10 ms; B/update: bytes on the client's socket both ways, headers and \
         framing included; req/min: requests per client after connecting; CPU and memory: the \
         relay's, with --server-pid, above its rate before the rows (memory a row freed may be \
         reused by the next: one row per fresh relay, --transports, measures it best)"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_is_time_since_the_first_missed_change() {
        let tap = Tap::new(1);
        let c = tap.client(0);
        // The client saw seq 10 at t=100 ms and seq 30 at t=500 ms.
        c.seen.lock().extend([
            crate::tools::tap::Seen {
                at_ns: 100_000_000,
                symbol: "A".into(),
                seq: 10,
            },
            crate::tools::tap::Seen {
                at_ns: 500_000_000,
                symbol: "A".into(),
                seq: 30,
            },
        ]);
        tap.set_window(0, 600_000_000);
        // Changes: 20 happened at 200 ms, 30 at 300 ms.
        let truth = HashMap::from([(
            "A".to_owned(),
            vec![(10, 50_000_000), (20, 200_000_000), (30, 300_000_000)],
        )]);
        let s = staleness(&tap, &truth);
        // Samples at 5, 15, … 595 ms; none before the first view (100 ms).
        assert_eq!(s.len(), 50);
        // Before 200 ms the view is current; from 200 ms to 500 ms it misses seq 20.
        assert_eq!(s[0], 0);
        assert_eq!(s[9], 0); // t = 195 ms
        assert_eq!(s[10], 5_000); // t = 205 ms: seq 20 is 5 ms old
        assert_eq!(s.iter().copied().max(), Some(295_000)); // t = 495 ms, 295 ms stale
        assert_eq!(*s.last().unwrap(), 0); // caught up at 500 ms
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
