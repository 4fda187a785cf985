//! What a run measured ([`Report`]), what it cost the generator and the
//! server (CPU time and resident memory over the window, from
//! [`crate::procfs`]), and the report as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::procfs::{self, Pid};

/// Latency percentiles, microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Samples (one per delivered quote).
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

/// CPU time and memory of a process over the measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cost {
    /// Process ids.
    pub pids: Vec<u32>,
    /// CPU seconds (user + system) spent during the window.
    pub cpu_s: f64,
    /// CPU seconds per million delivered quotes.
    pub cpu_s_per_million_quotes: f64,
    /// Resident memory before the ramp, KiB.
    pub rss_kib_before: u64,
    /// Resident memory at the end of the window, KiB.
    pub rss_kib: u64,
    /// `(rss_kib - rss_kib_before) / connected`, KiB.
    pub rss_kib_per_connection: f64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Transport flag value.
    pub transport: String,
    /// Server URL.
    pub url: String,
    /// Clients asked for.
    pub clients: usize,
    /// Clients connected and subscribed when the window started.
    pub connected: usize,
    /// Clients still open when the window ended.
    pub open_at_end: usize,
    /// Symbols per client.
    pub symbols_per_client: usize,
    /// Expected deliveries per feed message if nothing were conflated: the
    /// clients' subscriptions weighted by each symbol's share of the feed's
    /// activity (Zipf with `--zipf`, in directory order, as the simulator
    /// draws). Offered deliveries/s = feed messages/s × this.
    pub offered_per_feed_message: f64,
    /// Seconds the ramp took.
    pub ramp_s: f64,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Quotes delivered in tick frames.
    pub quotes: u64,
    /// Quotes delivered per second.
    pub quotes_per_s: f64,
    /// Frames (WebSocket messages, SSE events, HTTP responses).
    pub frames: u64,
    /// Frames per second.
    pub frames_per_s: f64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Payload bytes per second.
    pub bytes_per_s: f64,
    /// Requests the clients sent in the window: HTTP requests and WebSocket
    /// operations.
    #[serde(default)]
    pub requests: u64,
    /// Quotes received in snapshots (initial state, not changes).
    pub snapshot_quotes: u64,
    /// `book` frames received in the window (`--books`), snapshots included.
    #[serde(default)]
    pub book_frames: u64,
    /// Book frames per second.
    #[serde(default)]
    pub book_frames_per_s: f64,
    /// Deliveries (quotes in tick frames plus book frames) per CPU-second
    /// of the server, with `--server-pid`.
    #[serde(default)]
    pub deliveries_per_server_cpu_s: Option<f64>,
    /// Tick-to-client latency of delivered quotes, µs.
    pub latency_us: Latency,
    /// Failed connections and requests, by kind (whole run).
    pub errors: BTreeMap<String, u64>,
    /// Connections the server ended, by close code or kind (whole run).
    pub closes: BTreeMap<String, u64>,
    /// The generator's own cost.
    pub load: Cost,
    /// The server's cost, with `--server-pid`.
    pub server: Option<Cost>,
}

pub(super) struct Probe {
    pids: Vec<u32>,
    cpu0: f64,
    rss_before: u64,
}

/// CPU seconds (user + system) of a process; 0 where it cannot be read.
fn cpu_seconds(pid: u32) -> f64 {
    procfs::cpu_seconds(Pid::Id(pid)).unwrap_or(0.0)
}

/// Resident memory of a process, KiB; 0 where it cannot be read.
fn rss_kib(pid: u32) -> u64 {
    procfs::resident_bytes(Pid::Id(pid)).unwrap_or(0) / 1024
}

impl Probe {
    pub(super) fn new(pids: Vec<u32>) -> Self {
        let rss_before = pids.iter().map(|&p| rss_kib(p)).sum();
        Probe {
            pids,
            cpu0: 0.0,
            rss_before,
        }
    }

    pub(super) fn start(&mut self) {
        self.cpu0 = self.pids.iter().map(|&p| cpu_seconds(p)).sum();
    }

    pub(super) fn finish(&self, quotes: u64, connected: usize) -> Cost {
        let cpu_s = self.pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>() - self.cpu0;
        let rss: u64 = self.pids.iter().map(|&p| rss_kib(p)).sum();
        Cost {
            pids: self.pids.clone(),
            cpu_s,
            cpu_s_per_million_quotes: if quotes > 0 {
                cpu_s / (quotes as f64 / 1e6)
            } else {
                0.0
            },
            rss_kib_before: self.rss_before,
            rss_kib: rss,
            rss_kib_per_connection: if connected > 0 {
                rss.saturating_sub(self.rss_before) as f64 / connected as f64
            } else {
                0.0
            },
        }
    }
}

pub(super) fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// The report as text for a terminal.
pub fn text_report(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tickrelay load: {} x {} ({} symbols each) against {}",
        r.clients, r.transport, r.symbols_per_client, r.url
    );
    let _ = writeln!(
        s,
        "  connected     {} ready after a {:.1} s ramp, {} open at the end",
        r.connected, r.ramp_s, r.open_at_end
    );
    let _ = writeln!(
        s,
        "  delivered     {} quotes/s, {} frames/s, {}B/s over {:.1} s ({} quotes; {} in snapshots)",
        si(r.quotes_per_s),
        si(r.frames_per_s),
        si(r.bytes_per_s),
        r.seconds,
        r.quotes,
        r.snapshot_quotes
    );
    if r.book_frames > 0 {
        let _ = writeln!(
            s,
            "  books         {} book frames/s ({} frames)",
            si(r.book_frames_per_s),
            r.book_frames
        );
    }
    if let Some(d) = r.deliveries_per_server_cpu_s {
        let _ = writeln!(
            s,
            "  per server CPU-s {} deliveries (quotes + book frames)",
            si(d)
        );
    }
    let l = &r.latency_us;
    let _ = writeln!(
        s,
        "  latency       p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (tick to client, {} samples)",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max),
        l.count
    );
    for (title, map) in [("errors", &r.errors), ("closed", &r.closes)] {
        if !map.is_empty() {
            let list: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(s, "  {title:<13} {}", list.join(", "));
        }
    }
    let cost = |c: &Cost| {
        format!(
            "{:.2} CPU-s ({:.3} per million quotes), RSS {} KiB ({:+.2} KiB per connection)",
            c.cpu_s, c.cpu_s_per_million_quotes, c.rss_kib, c.rss_kib_per_connection
        )
    };
    if let Some(server) = &r.server {
        let _ = writeln!(s, "  server        {}", cost(server));
    }
    let _ = writeln!(s, "  this process  {}", cost(&r.load));
    s
}
