//! The subscriber load generator behind `tickrelay load`: N real clients of
//! one transport, each subscribed to K symbols, measuring what reaches them.
//!
//! A run has three phases: the ramp (clients connect at `--ramp` per second
//! and subscribe), a warm-up, and the measured window of `--duration`
//! seconds. Over the window it counts quotes delivered (quote objects in
//! tick frames; quotes in snapshots are counted apart, they are not news),
//! frames, bytes, connection errors and closes by code, and records the
//! tick-to-client latency — now minus the quote's exchange timestamp, both on
//! this host's clock — in an HDR histogram.
//!
//! Its own cost must stay small next to the server's, so quotes are never
//! fully decoded on the streaming transports: a JSON frame is scanned for
//! `"ts":` keys (one per quote; the key cannot occur unescaped inside a JSON
//! string) and a MessagePack frame is walked without building values.
//! Counters and histograms live in shards, so a frame costs one uncontended
//! lock. The report states the generator's own CPU time per million quotes
//! beside the server's (`--server-pid`).
//!
//! WebSocket clients use tokio-tungstenite; SSE, long polling and short
//! polling use hyper's HTTP/1.1 client, one keep-alive connection each.
//! `--source-ips N` binds client sockets to 127.0.0.1 … 127.0.0.N, so one
//! machine can open 100,000 connections (each source address has its own
//! ephemeral ports and its own per-address limit on the server).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::fanout::now_ns;
use crate::tap::{Counted, Tap};

/// Which kind of client to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadTransport {
    /// WebSocket `/v1/ws`, JSON text frames.
    Ws,
    /// WebSocket `/v1/ws`, subprotocol `tickrelay.msgpack`.
    WsMsgpack,
    /// Server-Sent Events `/v1/stream`.
    Sse,
    /// Long polling `/v1/poll`.
    Poll,
    /// Short polling `/v1/snapshot` with `If-None-Match`.
    Snapshot,
    /// WebSocket at `--nchan-path` + `A,B,…` (nchan's multiplexed subscriber,
    /// or the Node baseline): one message per quote.
    NchanWs,
    /// EventSource at `--nchan-path` + `A,B,…` (nchan): one event per quote.
    NchanSse,
}

impl LoadTransport {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadTransport::Ws => "ws",
            LoadTransport::WsMsgpack => "ws-msgpack",
            LoadTransport::Sse => "sse",
            LoadTransport::Poll => "poll",
            LoadTransport::Snapshot => "snapshot",
            LoadTransport::NchanWs => "nchan-ws",
            LoadTransport::NchanSse => "nchan-sse",
        }
    }

    fn is_nchan(self) -> bool {
        matches!(self, LoadTransport::NchanWs | LoadTransport::NchanSse)
    }
}

/// How each client picks its symbols.
#[derive(Clone, Debug, PartialEq)]
pub enum SymbolChoice {
    /// K distinct symbols drawn with Zipf weights over the directory order,
    /// which is the simulator's activity order: busy symbols are popular.
    Zipf,
    /// K distinct symbols drawn uniformly.
    Random,
    /// Every client takes this list.
    Fixed(Vec<String>),
    /// The `*` subscription (every symbol; WebSocket and SSE only).
    All,
}

fn parse_choice(s: &str) -> Result<SymbolChoice, String> {
    match s.trim() {
        "zipf" => Ok(SymbolChoice::Zipf),
        "random" => Ok(SymbolChoice::Random),
        "*" | "all" => Ok(SymbolChoice::All),
        "" => Err("empty symbol list".into()),
        list => Ok(SymbolChoice::Fixed(
            list.split(',')
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect(),
        )),
    }
}

/// `tickrelay load` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Base URL of the server under load.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Client kind.
    #[arg(long, value_enum, default_value_t = LoadTransport::Ws)]
    pub transport: LoadTransport,
    /// Number of clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Symbols per client (0 with ws: connect only, subscribe to nothing).
    #[arg(long, default_value_t = 10)]
    pub symbols_per_client: usize,
    /// Which symbols: `zipf` (weighted like the feed's activity), `random`
    /// (uniform), `*` (every symbol), or a comma-separated list every client takes.
    #[arg(long, default_value = "zipf", value_parser = parse_choice)]
    pub symbols: SymbolChoice,
    /// Zipf exponent of `--symbols zipf`.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Symbol directory: the server's `/v1/symbols` (default), or `sim:N` for
    /// the simulator's first N tickers (servers without a directory, like nchan).
    #[arg(long)]
    pub directory: Option<String>,
    /// New connections per second during the ramp (0: all at once).
    #[arg(long, default_value_t = 5_000.0)]
    pub ramp: f64,
    /// Seconds to measure, after the ramp and the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds between the end of the ramp and the start of measurement.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Spread client sockets over this many source addresses 127.0.0.1,
    /// 127.0.0.2, … (each has its own ephemeral ports and per-address limit).
    #[arg(long, default_value_t = 1)]
    pub source_ips: u32,
    /// Connect and subscribe, then only drain the sockets: no decoding, no
    /// latency. For memory tests.
    #[arg(long)]
    pub idle: bool,
    /// Delivery mode asked of the relay: `conflate` or `every`.
    #[arg(long)]
    pub mode: Option<String>,
    /// Most updates per second per symbol asked of the relay.
    #[arg(long)]
    pub max_hz: Option<f64>,
    /// `batch_ms` asked of the relay (ws, sse, poll): changes gathered for
    /// up to this long into one frame.
    #[arg(long)]
    pub batch_ms: Option<u64>,
    /// Short-polling interval per client (`snapshot`), ms.
    #[arg(long, default_value_t = 1_000)]
    pub poll_interval_ms: u64,
    /// Long-poll hold time asked of the server (`poll`), ms.
    #[arg(long, default_value_t = 10_000)]
    pub poll_timeout_ms: u64,
    /// Worker threads (default: one per core this process may run on).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Server process ids (comma-separated) whose CPU time and RSS to report.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Path prefix of nchan's subscriber location.
    #[arg(long, default_value = "/sub/")]
    pub nchan_path: String,
    /// Seed of the symbol choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

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

/// Shards of counters and histograms: a frame locks one, chosen by client.
const SHARDS: usize = 32;
/// Longest latency recorded, µs (an hour): anything longer saturates.
const MAX_LATENCY_US: u64 = 3_600_000_000;

struct Shard {
    hist: Histogram<u64>,
    quotes: u64,
    frames: u64,
    bytes: u64,
    snapshot_quotes: u64,
    requests: u64,
}

impl Shard {
    fn new() -> Self {
        Shard {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            quotes: 0,
            frames: 0,
            bytes: 0,
            snapshot_quotes: 0,
            requests: 0,
        }
    }

    fn reset(&mut self) {
        self.hist.reset();
        self.quotes = 0;
        self.frames = 0;
        self.bytes = 0;
        self.snapshot_quotes = 0;
        self.requests = 0;
    }

    fn tick(&mut self, now: u64, ts: u64) {
        self.quotes += 1;
        if ts > 0 {
            self.hist.saturating_record(now.saturating_sub(ts) / 1_000);
        }
    }
}

/// What a frame is, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ticks,
    Snapshot,
    Control,
}

/// The server's address, parsed from `--url`.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) authority: String,
}

pub(crate) fn target(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url {url}: only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest).to_owned();
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("--url {url}: cannot resolve {authority}"))?
        .find(|a| a.is_ipv4())
        .or_else(|| authority.to_socket_addrs().ok()?.next())
        .with_context(|| format!("--url {url}: no address"))?;
    Ok(Target { addr, authority })
}

struct Shared {
    args: LoadArgs,
    target: Target,
    shards: Box<[Mutex<Shard>]>,
    errors: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    /// Clients whose connection is open.
    open: AtomicUsize,
    /// Clients connected and subscribed.
    ready: AtomicUsize,
    /// Clients done with setup, subscribed or failed.
    settled: AtomicUsize,
    cancel: CancellationToken,
    /// The lab's view of each client, when the lab runs this load.
    tap: Option<Arc<Tap>>,
}

impl Shared {
    fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().entry(kind.into()).or_default() += 1;
    }

    fn closed(&self, kind: impl Into<String>) {
        *self.closes.lock().entry(kind.into()).or_default() += 1;
    }

    /// Counts one request sent (HTTP request, WebSocket operation).
    fn request(&self, id: usize) {
        self.shard(id).requests += 1;
    }

    fn shard(&self, id: usize) -> parking_lot::MutexGuard<'_, Shard> {
        self.shards[id % SHARDS].lock()
    }

    /// Counts one JSON frame (a WebSocket text message or SSE event data).
    fn json_frame(&self, id: usize, len: usize, body: &[u8], kind: Kind) {
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
            Kind::Control => {}
        }
    }

    /// Counts one MessagePack frame.
    fn msgpack_frame(&self, id: usize, body: &[u8], scratch: &mut Vec<u64>) -> Option<String> {
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
            _ => kind,
        }
    }

    /// Counts a decoded HTTP answer (poll, snapshot): `fresh` quotes are
    /// changes, the rest initial state.
    fn answer(&self, id: usize, len: usize, fresh: &[u64], initial: usize) {
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

    fn totals(&self) -> (u64, u64, u64) {
        self.shards.iter().fold((0, 0, 0), |(q, f, b), s| {
            let s = s.lock();
            (q + s.quotes, f + s.frames, b + s.bytes)
        })
    }
}

/// Every `"ts":N` in a JSON text: one per quote.
fn json_timestamps(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    let finder = FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\"ts\":"));
    finder.find_iter(body).map(move |at| {
        body[at + 5..]
            .iter()
            .skip_while(|b| b.is_ascii_whitespace())
            .take_while(|b| b.is_ascii_digit())
            .fold(0u64, |n, &d| {
                n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
            })
    })
}

/// The kind of a JSON WebSocket frame from its first bytes. A frame with no
/// `type` (a bare quote, as nchan relays it) counts as ticks.
fn json_kind(body: &[u8]) -> Kind {
    if body.starts_with(b"{\"type\":\"ticks\"") {
        Kind::Ticks
    } else if body.starts_with(b"{\"type\":\"snapshot\"") {
        Kind::Snapshot
    } else if body.starts_with(b"{\"type\":") {
        Kind::Control
    } else {
        Kind::Ticks
    }
}

/// A MessagePack reader that walks values without building them.
struct Mp<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Mp<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        let bytes = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(bytes.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x80..=0x8f => Some(usize::from(b & 0x0f)),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x90..=0x9f => Some(usize::from(b & 0x0f)),
            0xdc => Some(self.be(2)? as usize),
            0xdd => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => self.be(1).map(|v| v as i8 as u64),
            0xd1 => self.be(2).map(|v| v as i16 as u64),
            0xd2 => self.be(4).map(|v| v as i32 as u64),
            0xd3 => self.be(8),
            _ => None,
        }
    }

    /// Skips one value (depth-limited: the server's frames are shallow).
    fn skip(&mut self, depth: u8) -> Option<()> {
        if depth > 8 {
            return None;
        }
        let b = self.byte()?;
        let n = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => return self.skip_n(2 * usize::from(b & 0x0f), depth),
            0x90..=0x9f => return self.skip_n(usize::from(b & 0x0f), depth),
            0xa0..=0xbf => usize::from(b & 0x1f),
            0xc4 | 0xd9 => self.be(1)? as usize,
            0xc5 | 0xda => self.be(2)? as usize,
            0xc6 | 0xdb => self.be(4)? as usize,
            0xc7 => self.be(1)? as usize + 1,
            0xc8 => self.be(2)? as usize + 1,
            0xc9 => self.be(4)? as usize + 1,
            0xca | 0xce | 0xd2 => 4,
            0xcb | 0xcf | 0xd3 => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xdc => {
                let n = self.be(2)? as usize;
                return self.skip_n(n, depth);
            }
            0xdd => {
                let n = self.be(4)? as usize;
                return self.skip_n(n, depth);
            }
            0xde => {
                let n = self.be(2)? as usize;
                return self.skip_n(2 * n, depth);
            }
            0xdf => {
                let n = self.be(4)? as usize;
                return self.skip_n(2 * n, depth);
            }
            0xc1 => return None,
        };
        self.take(n).map(|_| ())
    }

    fn skip_n(&mut self, n: usize, depth: u8) -> Option<()> {
        for _ in 0..n {
            self.skip(depth + 1)?;
        }
        Some(())
    }
}

/// Reads a MessagePack envelope: returns its `type` and pushes each quote's
/// `ts` onto `out`.
fn msgpack_envelope(body: &[u8], out: &mut Vec<u64>) -> Option<String> {
    let mut r = Mp { buf: body, pos: 0 };
    let mut kind = None;
    for _ in 0..r.map_len()? {
        match r.str()? {
            b"type" => kind = Some(String::from_utf8_lossy(r.str()?).into_owned()),
            b"quotes" => {
                for _ in 0..r.array_len()? {
                    for _ in 0..r.map_len()? {
                        if r.str()? == b"ts" {
                            out.push(r.uint()?);
                        } else {
                            r.skip(0)?;
                        }
                    }
                }
            }
            _ => r.skip(0)?,
        }
    }
    kind
}

/// The source address of client `id` among `n`: 127.0.0.1, 127.0.0.2, …
fn source_addr(id: usize, n: u32) -> SocketAddr {
    let j = (id % n.max(1) as usize) as u32;
    let ip = Ipv4Addr::new(127, 0, (j / 254) as u8, (1 + j % 254) as u8);
    SocketAddr::new(IpAddr::V4(ip), 0)
}

fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connect: refused".into(),
        TimedOut => "connect: timeout".into(),
        AddrNotAvailable | AddrInUse => "connect: no local address or port".into(),
        ConnectionReset => "connect: reset".into(),
        _ if e.raw_os_error() == Some(24) => "connect: too many open files (ulimit -n)".into(),
        _ => format!("connect: {}", e.kind()),
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a TCP connection from this client's source address.
async fn connect(shared: &Shared, id: usize) -> Result<TcpStream, String> {
    let attempt = async {
        let socket = if shared.target.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if shared.args.source_ips > 1 {
            socket.bind(source_addr(id, shared.args.source_ips))?;
        }
        socket.set_nodelay(true)?;
        socket.connect(shared.target.addr).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(io_kind(&e)),
        Err(_) => Err("connect: timeout".into()),
    }
}

/// One client: connect, subscribe, read until cancelled or closed.
async fn client(shared: Arc<Shared>, id: usize, symbols: Vec<String>) {
    let stream = match connect(&shared, id).await {
        Ok(s) => s,
        Err(kind) => {
            shared.error(kind);
            shared.settled.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    shared.open.fetch_add(1, Ordering::Relaxed);
    let mut setup = Setup {
        shared: &shared,
        done: false,
    };
    let cancel = shared.cancel.clone();
    let run = async {
        match &shared.tap {
            Some(tap) => {
                let stream = Counted::new(stream, tap.client(id));
                serve(&shared, id, stream, &symbols, &mut setup).await
            }
            None => serve(&shared, id, stream, &symbols, &mut setup).await,
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        end = run => {
            if let Err(kind) = end {
                if setup.done { shared.closed(kind) } else { shared.error(kind) }
            }
        }
    }
    shared.open.fetch_sub(1, Ordering::Relaxed);
    if !setup.done {
        shared.settled.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client's connection: a plain socket, or one the lab counts bytes on.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for S {}

/// Runs the client of the chosen transport on an open connection.
async fn serve<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    match shared.args.transport {
        LoadTransport::Ws | LoadTransport::WsMsgpack | LoadTransport::NchanWs => {
            ws_client(shared, id, stream, symbols, setup).await
        }
        LoadTransport::Sse | LoadTransport::NchanSse => {
            sse_client(shared, id, stream, symbols, setup).await
        }
        LoadTransport::Poll => poll_client(shared, id, stream, symbols, setup).await,
        LoadTransport::Snapshot => snapshot_client(shared, id, stream, symbols, setup).await,
    }
}

/// Marks a client ready once, on its first data.
struct Setup<'a> {
    shared: &'a Shared,
    done: bool,
}

impl Setup<'_> {
    fn ready(&mut self) {
        if !self.done {
            self.done = true;
            self.shared.ready.fetch_add(1, Ordering::Relaxed);
            self.shared.settled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type ClientEnd = Result<(), String>;

async fn ws_client<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let args = &shared.args;
    let path = match args.transport {
        LoadTransport::NchanWs => format!("{}{}", args.nchan_path, symbols.join(",")),
        _ => "/v1/ws".to_owned(),
    };
    let url = format!("ws://{}{}", shared.target.authority, path);
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("ws: bad request: {e}"))?;
    if args.transport == LoadTransport::WsMsgpack {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            hyper::header::HeaderValue::from_static("tickrelay.msgpack"),
        );
    }
    // Small buffers: 100,000 of these must fit beside the server, and
    // tungstenite zero-fills the free part of its read buffer before every
    // read, so a big one costs a big memset per read.
    let read_buffer = if args.idle { 4 * 1024 } else { 8 * 1024 };
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                format!("ws handshake: HTTP {}", r.status().as_u16())
            }
            other => format!("ws handshake: {}", short(&other.to_string())),
        })?;
    if args.transport == LoadTransport::NchanWs || symbols.is_empty() {
        setup.ready();
    } else {
        let mut op = serde_json::json!({"op": "subscribe", "symbols": symbols});
        if let Some(mode) = &args.mode {
            op["mode"] = mode.clone().into();
        }
        if let Some(hz) = args.max_hz {
            op["max_hz"] = hz.into();
        }
        if let Some(ms) = args.batch_ms {
            op["batch_ms"] = ms.into();
        }
        ws.send(Message::text(op.to_string()))
            .await
            .map_err(|e| format!("ws subscribe: {}", short(&e.to_string())))?;
        shared.request(id);
    }
    let mut scratch = Vec::new();
    loop {
        let msg = match ws.next().await {
            None => return Err("eof".into()),
            Some(Err(e)) => return Err(format!("error: {}", short(&e.to_string()))),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(t) => {
                let body = t.as_bytes();
                if let Some(tap) = &shared.tap {
                    tap.json(id, body);
                }
                let kind = json_kind(body);
                if kind == Kind::Snapshot {
                    setup.ready();
                } else if kind == Kind::Control {
                    control_json(shared, body);
                }
                shared.json_frame(id, body.len(), body, kind);
            }
            Message::Binary(b) => {
                if let Some(tap) = &shared.tap {
                    tap.msgpack(id, &b);
                }
                if !setup.done && msgpack_is_snapshot(&b) {
                    setup.ready();
                }
                if let Some(kind) = shared.msgpack_frame(id, &b, &mut scratch) {
                    if kind == "error" || kind == "shutdown" {
                        shared.closed(format!("frame: {kind}"));
                    }
                }
            }
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return Err(format!("close {code}"));
            }
            _ => {}
        }
    }
}

fn msgpack_is_snapshot(body: &[u8]) -> bool {
    let mut r = Mp { buf: body, pos: 0 };
    r.map_len().is_some() && r.str() == Some(b"type") && r.str() == Some(b"snapshot")
}

/// Notes error and shutdown frames: rare, so decoded in full.
fn control_json(shared: &Shared, body: &[u8]) {
    if body.starts_with(b"{\"type\":\"error\"") {
        let code = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        shared.closed(format!("frame: error {code}"));
    } else if body.starts_with(b"{\"type\":\"shutdown\"") {
        shared.closed("frame: shutdown");
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An HTTP/1.1 connection to the server, driven by its own task.
async fn http_conn<S: Conn>(stream: S) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {}", short(&e.to_string())))?;
    tokio::spawn(conn);
    Ok(sender)
}

fn get(shared: &Shared, path: &str, etag: Option<&str>) -> Request<Empty<Bytes>> {
    let mut b = Request::get(path).header(hyper::header::HOST, &shared.target.authority);
    if let Some(tag) = etag {
        b = b.header(hyper::header::IF_NONE_MATCH, tag);
    }
    b.body(Empty::new()).unwrap_or_default()
}

async fn sse_client<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let args = &shared.args;
    let path = if args.transport == LoadTransport::NchanSse {
        format!("{}{}", args.nchan_path, symbols.join(","))
    } else {
        let mut p = String::from("/v1/stream");
        let mut sep = '?';
        if !symbols.is_empty() && symbols[0] != "*" {
            let _ = write!(p, "{sep}symbols={}", symbols.join(","));
            sep = '&';
        }
        if let Some(mode) = &args.mode {
            let _ = write!(p, "{sep}mode={mode}");
            sep = '&';
        }
        if let Some(hz) = args.max_hz {
            let _ = write!(p, "{sep}max_hz={hz}");
            sep = '&';
        }
        if let Some(ms) = args.batch_ms {
            let _ = write!(p, "{sep}batch_ms={ms}");
        }
        p
    };
    let mut sender = http_conn(stream).await?;
    let mut req = get(shared, &path, None);
    req.headers_mut().insert(
        hyper::header::ACCEPT,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    shared.request(id);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sse: {}", short(&e.to_string())))?;
    if resp.status() != 200 {
        return Err(format!("sse: HTTP {}", resp.status().as_u16()));
    }
    if args.transport == LoadTransport::NchanSse {
        setup.ready();
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    let finder = memchr::memmem::Finder::new(b"\n\n");
    loop {
        let chunk = match body.frame().await {
            None => return Err("eof".into()),
            Some(Err(e)) => return Err(format!("error: {}", short(&e.to_string()))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        if shared.args.idle && setup.done {
            continue;
        }
        buf.extend_from_slice(&chunk);
        let mut ended = None;
        while let Some(end) = finder.find(&buf) {
            let event = buf.split_to(end + 2);
            if let Some(e) = sse_event(shared, id, &event, setup) {
                ended = Some(e);
            }
        }
        if let Some(e) = ended {
            return Err(e);
        }
    }
}

/// Handles one SSE event block; returns why the stream ends, if it does.
fn sse_event(shared: &Shared, id: usize, event: &[u8], setup: &mut Setup<'_>) -> Option<String> {
    let mut name: &[u8] = b"message";
    let mut has_data = false;
    for line in event.split(|&b| b == b'\n') {
        if let Some(n) = line.strip_prefix(b"event:") {
            name = n.trim_ascii();
        } else if line.starts_with(b"data:") {
            has_data = true;
        }
    }
    if !has_data {
        return None;
    }
    let kind = match name {
        b"tick" | b"message" => Kind::Ticks,
        b"snapshot" => {
            setup.ready();
            Kind::Snapshot
        }
        _ => Kind::Control,
    };
    if let Some(tap) = &shared.tap {
        tap.sse(id, event);
    }
    shared.json_frame(id, event.len(), event, kind);
    match name {
        b"error" => {
            let code = json_field_u64(event, b"\"close_code\":").unwrap_or(0);
            Some(format!("close {code}"))
        }
        b"shutdown" => Some("close shutdown".into()),
        _ => None,
    }
}

fn json_field_u64(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(body, key)? + key.len();
    let digits: Vec<u8> = body[at..]
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The envelope of a poll answer or snapshot, decoded in full (one per
/// request, so cheap next to a stream).
#[derive(Deserialize)]
struct Answer {
    seq: u64,
    session: String,
    #[serde(default)]
    quotes: Vec<AnswerQuote>,
}

#[derive(Deserialize)]
struct AnswerQuote {
    symbol: String,
    seq: u64,
    ts: u64,
}

async fn fetch(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
    what: &str,
) -> Result<(u16, Option<String>, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("{what}: {}", short(&e.to_string())))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{what}: {}", short(&e.to_string())))?;
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get(hyper::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{what}: {}", short(&e.to_string())))?
        .to_bytes();
    Ok((status, etag, body))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

async fn poll_client<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let mut sender = http_conn(stream).await?;
    let list = symbols.join(",");
    let mut since: Option<String> = None;
    loop {
        let mut path = format!(
            "/v1/poll?symbols={list}&timeout_ms={}",
            shared.args.poll_timeout_ms
        );
        if let Some(s) = &since {
            let _ = write!(path, "&since={}", percent_encode(s));
        }
        if let Some(ms) = shared.args.batch_ms {
            let _ = write!(path, "&batch_ms={ms}");
        }
        shared.request(id);
        let (status, _, body) = fetch(&mut sender, get(shared, &path, None), "poll").await?;
        if status != 200 {
            return Err(format!("poll: HTTP {status}"));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| format!("poll: bad answer: {}", short(&e.to_string())))?;
        if let Some(tap) = &shared.tap {
            tap.quotes(id, answer.quotes.iter().map(|q| (q.symbol.as_str(), q.seq)));
        }
        let ts: Vec<u64> = answer.quotes.iter().map(|q| q.ts).collect();
        if since.is_none() {
            setup.ready();
            shared.answer(id, body.len(), &[], ts.len());
        } else {
            shared.answer(id, body.len(), &ts, 0);
        }
        since = Some(format!("{}:{}", answer.session, answer.seq));
    }
}

async fn snapshot_client<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let mut sender = http_conn(stream).await?;
    let path = format!("/v1/snapshot?symbols={}", symbols.join(","));
    let period = Duration::from_millis(shared.args.poll_interval_ms.max(1));
    // Spread the clients' polls over the period.
    let phase = period.mul_f64((id as f64 * 0.618_033_988_75) % 1.0);
    let mut next = tokio::time::Instant::now() + phase;
    let mut etag: Option<String> = None;
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut fresh = Vec::new();
    loop {
        shared.request(id);
        let (status, tag, body) =
            fetch(&mut sender, get(shared, &path, etag.as_deref()), "snapshot").await?;
        match status {
            304 => shared.answer(id, body.len(), &[], 0),
            200 => {
                let answer: Answer = serde_json::from_slice(&body)
                    .map_err(|e| format!("snapshot: bad answer: {}", short(&e.to_string())))?;
                if let Some(tap) = &shared.tap {
                    tap.quotes(id, answer.quotes.iter().map(|q| (q.symbol.as_str(), q.seq)));
                }
                fresh.clear();
                let mut initial = 0;
                for q in &answer.quotes {
                    match seen.get_mut(&q.symbol) {
                        Some(last) if *last < q.seq => {
                            *last = q.seq;
                            fresh.push(q.ts);
                        }
                        Some(_) => {}
                        None => {
                            seen.insert(q.symbol.clone(), q.seq);
                            initial += 1;
                        }
                    }
                }
                shared.answer(id, body.len(), &fresh, initial);
                etag = tag;
                setup.ready();
            }
            other => return Err(format!("snapshot: HTTP {other}")),
        }
        next += period;
        let now = tokio::time::Instant::now();
        if next < now {
            // Late (the server or this process is saturated): skip, don't burst.
            next = now;
        }
        tokio::time::sleep_until(next).await;
    }
}

/// A Zipf sampler over ranks `0..n`.
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut SmallRng) -> usize {
        let x: f64 = rng.r#gen();
        self.cdf.partition_point(|&c| c < x).min(self.cdf.len() - 1)
    }
}

/// Each symbol's share of the feed's messages, as the simulator draws them.
struct Activity {
    share: HashMap<String, f64>,
}

impl Activity {
    fn new(dir: &[String], s: f64) -> Self {
        let weights: Vec<f64> = (1..=dir.len()).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        Activity {
            share: dir
                .iter()
                .zip(weights)
                .map(|(d, w)| (d.clone(), w / total))
                .collect(),
        }
    }

    /// Expected deliveries per feed message to one client of `symbols`.
    fn share(&self, symbols: &[String]) -> f64 {
        if symbols.iter().any(|s| s == "*") {
            return 1.0;
        }
        symbols.iter().filter_map(|s| self.share.get(s)).sum()
    }
}

/// The symbols of client `id`.
pub(crate) fn pick(
    args: &LoadArgs,
    directory: &[String],
    zipf: Option<&Zipf>,
    id: usize,
) -> Vec<String> {
    let k = args.symbols_per_client.min(directory.len());
    let mut rng =
        SmallRng::seed_from_u64(args.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match &args.symbols {
        SymbolChoice::Fixed(list) => list.clone(),
        SymbolChoice::All => vec!["*".into()],
        SymbolChoice::Random => rand::seq::index::sample(&mut rng, directory.len(), k)
            .into_iter()
            .map(|i| directory[i].clone())
            .collect(),
        SymbolChoice::Zipf => {
            let zipf = zipf.expect("zipf sampler built");
            let mut chosen: Vec<usize> = Vec::with_capacity(k);
            let mut tries = 0;
            while chosen.len() < k && tries < 64 * k {
                tries += 1;
                let i = zipf.sample(&mut rng);
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
            }
            // A steep Zipf over few symbols may not find K distinct ones
            // quickly: fill with the busiest not yet chosen.
            let mut i = 0;
            while chosen.len() < k {
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
                i += 1;
            }
            chosen.into_iter().map(|i| directory[i].clone()).collect()
        }
    }
}

#[derive(Deserialize)]
struct Directory {
    symbols: Vec<DirectoryEntry>,
}

#[derive(Deserialize)]
struct DirectoryEntry {
    symbol: String,
}

/// The symbol directory, in locate order (the simulator's activity order).
pub(crate) async fn directory(args: &LoadArgs, target: &Target) -> anyhow::Result<Vec<String>> {
    if let Some(n) = args
        .directory
        .as_deref()
        .and_then(|d| d.strip_prefix("sim:"))
    {
        let n: usize = n.parse().context("--directory sim:N needs a number")?;
        return Ok(crate::sim::tickers(n).into_iter().map(|(s, _)| s).collect());
    }
    let (base, path) = match args.directory.as_deref() {
        Some(url) => {
            let t = target_of_url(url)?;
            (t.0, t.1)
        }
        None => (target.clone(), "/v1/symbols".to_owned()),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let stream = TcpStream::connect(base.addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut sender = http_conn(stream).await?;
            let req = Request::get(path.as_str())
                .header(hyper::header::HOST, &base.authority)
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let (status, _, body) = fetch(&mut sender, req, "directory").await?;
            if status != 200 {
                return Err(format!("HTTP {status}"));
            }
            serde_json::from_slice::<Directory>(&body).map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(d) if !d.symbols.is_empty() => {
                return Ok(d.symbols.into_iter().map(|e| e.symbol).collect());
            }
            Ok(_) if Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            Ok(_) => bail!("the directory at {} {path} is empty", base.authority),
            Err(e) => bail!(
                "cannot read the directory at {} {path}: {e}",
                base.authority
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn target_of_url(url: &str) -> anyhow::Result<(Target, String)> {
    let t = target(url)?;
    let rest = url.trim_start_matches("http://");
    let path = rest.find('/').map_or("/", |i| &rest[i..]).to_owned();
    Ok((t, path))
}

/// CPU seconds (user + system) of a process, from /proc.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // USER_HZ is 100 on every Linux this runs on.
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Resident memory of a process, KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Probe {
    pids: Vec<u32>,
    cpu0: f64,
    rss_before: u64,
}

impl Probe {
    fn new(pids: Vec<u32>) -> Self {
        let rss_before = pids.iter().map(|&p| rss_kib(p)).sum();
        Probe {
            pids,
            cpu0: 0.0,
            rss_before,
        }
    }

    fn start(&mut self) {
        self.cpu0 = self.pids.iter().map(|&p| cpu_seconds(p)).sum();
    }

    fn finish(&self, quotes: u64, connected: usize) -> Cost {
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

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Runs the load described by `args` and prints the report (text, or JSON
/// with `--json`). Fails when no client could connect.
pub fn run(args: LoadArgs) -> anyhow::Result<Report> {
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // One core: a current-thread runtime, no cross-thread wake-ups.
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("load")
            .enable_all()
            .build()?
    };
    let report = rt.block_on(drive(args.clone()))?;
    // Dropping the runtime closes every client socket at once.
    rt.shutdown_timeout(Duration::from_secs(2));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text_report(&report));
    }
    if report.connected == 0 {
        let why = report
            .errors
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| format!("{k} ({n})"))
            .unwrap_or_else(|| "no answer".into());
        bail!("no client connected: {why}");
    }
    Ok(report)
}

async fn drive(args: LoadArgs) -> anyhow::Result<Report> {
    drive_tapped(args, None).await
}

/// Runs one load on the current runtime; with a [`Tap`], counts each
/// client's socket bytes and notes every quote it receives (the lab).
pub(crate) async fn drive_tapped(args: LoadArgs, tap: Option<Arc<Tap>>) -> anyhow::Result<Report> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let target = target(&args.url)?;
    let needs_symbols = !matches!(args.symbols, SymbolChoice::Fixed(_) | SymbolChoice::All)
        && args.symbols_per_client > 0;
    if args.symbols_per_client == 0
        && !matches!(args.transport, LoadTransport::Ws | LoadTransport::WsMsgpack)
        && !matches!(args.symbols, SymbolChoice::Fixed(_) | SymbolChoice::All)
    {
        bail!("--symbols-per-client 0 (connect only) works with ws and ws-msgpack only");
    }
    if matches!(args.symbols, SymbolChoice::All)
        && !matches!(
            args.transport,
            LoadTransport::Ws | LoadTransport::WsMsgpack | LoadTransport::Sse
        )
    {
        bail!("--symbols '*' works with ws, ws-msgpack and sse only");
    }
    if args.transport.is_nchan() && args.symbols_per_client > 255 {
        bail!("nchan multiplexes at most 255 channels per subscriber");
    }
    let dir = if needs_symbols || args.directory.is_some() {
        directory(&args, &target).await?
    } else {
        Vec::new()
    };
    let zipf = matches!(args.symbols, SymbolChoice::Zipf).then(|| Zipf::new(dir.len(), args.zipf));
    let activity = Activity::new(&dir, args.zipf);
    let mut offered = 0.0;
    let shared = Arc::new(Shared {
        target,
        shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
        errors: Mutex::new(BTreeMap::new()),
        closes: Mutex::new(BTreeMap::new()),
        open: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        settled: AtomicUsize::new(0),
        cancel: CancellationToken::new(),
        args: args.clone(),
        tap: tap.clone(),
    });
    let mut server = (!args.server_pid.is_empty()).then(|| Probe::new(args.server_pid.clone()));
    let mut own = Probe::new(vec![std::process::id()]);

    let tty = std::io::stderr().is_terminal();
    let bar = if tty && !args.no_progress {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let plain = !tty && !args.no_progress && !args.json;
    let status = |phase: &str, rate: Option<(f64, f64)>| {
        let s = &shared;
        let mut msg = format!(
            "{phase}: {}/{} clients ready, {} open",
            s.ready.load(Ordering::Relaxed),
            args.clients,
            s.open.load(Ordering::Relaxed)
        );
        if let Some((q, f)) = rate {
            let _ = write!(msg, " | {} quotes/s, {} frames/s", si(q), si(f));
        }
        let errors: u64 = s.errors.lock().values().sum();
        let closes: u64 = s.closes.lock().values().sum();
        if errors + closes > 0 {
            let _ = write!(msg, " | {errors} errors, {closes} closed");
        }
        msg
    };

    // Ramp.
    let ramp_start = Instant::now();
    let mut tick = Instant::now();
    for id in 0..args.clients {
        if args.ramp > 0.0 {
            let due = ramp_start + Duration::from_secs_f64(id as f64 / args.ramp);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let symbols = pick(&args, &dir, zipf.as_ref(), id);
        offered += activity.share(&symbols);
        tokio::spawn(client(shared.clone(), id, symbols));
        if tick.elapsed() >= Duration::from_millis(250) {
            tick = Instant::now();
            bar.set_message(status("ramp", None));
        }
    }
    // Every client settles (ready or failed) or the setup time runs out.
    let settle_by = Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(5);
    while shared.settled.load(Ordering::Relaxed) < args.clients && Instant::now() < settle_by {
        bar.set_message(status("ramp", None));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    if plain {
        eprintln!("load: {} in {ramp_s:.1} s", status("ramp done", None));
    }
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup.max(0.0));
    while Instant::now() < warmup_end {
        bar.set_message(status("warm-up", None));
        tokio::time::sleep(Duration::from_millis(100).min(warmup_end - Instant::now())).await;
    }

    // The measured window.
    for s in shared.shards.iter() {
        s.lock().reset();
    }
    let connected = shared.ready.load(Ordering::Relaxed);
    if let Some(p) = &mut server {
        p.start();
    }
    own.start();
    if let Some(tap) = &tap {
        tap.start_window();
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration.max(0.0));
    let (mut last_q, mut last_f, mut last_t) = (0u64, 0u64, start);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        let (q, f, _) = shared.totals();
        let dt = last_t.elapsed().as_secs_f64().max(1e-9);
        let rate = ((q - last_q) as f64 / dt, (f - last_f) as f64 / dt);
        (last_q, last_f, last_t) = (q, f, Instant::now());
        let msg = status("measure", (!args.idle).then_some(rate));
        bar.set_message(msg.clone());
        if plain {
            eprintln!("load: {msg}");
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(tap) = &tap {
        tap.end_window();
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let (mut quotes, mut frames, mut bytes, mut snapshot_quotes, mut requests) = (0, 0, 0, 0, 0);
    for s in shared.shards.iter() {
        let s = s.lock();
        hist.add(&s.hist)?;
        quotes += s.quotes;
        frames += s.frames;
        bytes += s.bytes;
        snapshot_quotes += s.snapshot_quotes;
        requests += s.requests;
    }
    let open_at_end = shared.open.load(Ordering::Relaxed);
    let server = server.map(|p| p.finish(quotes, connected));
    let load = own.finish(quotes, connected);
    shared.cancel.cancel();
    bar.finish_and_clear();

    let latency = if hist.is_empty() {
        Latency::default()
    } else {
        Latency {
            count: hist.len(),
            mean: (hist.mean() * 10.0).round() / 10.0,
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        }
    };
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    Ok(Report {
        transport: args.transport.as_str().into(),
        url: args.url.clone(),
        clients: args.clients,
        connected,
        open_at_end,
        symbols_per_client: args.symbols_per_client,
        offered_per_feed_message: offered,
        ramp_s,
        seconds,
        quotes,
        quotes_per_s: per_s(quotes),
        frames,
        frames_per_s: per_s(frames),
        bytes,
        bytes_per_s: per_s(bytes),
        requests,
        snapshot_quotes,
        latency_us: latency,
        errors: shared.errors.lock().clone(),
        closes: shared.closes.lock().clone(),
        load,
        server,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_timestamps_find_every_quote() {
        let frame = br#"{"type":"ticks","seq":9,"quotes":[{"symbol":"A","ts":123},{"symbol":"B\"ts\":1","ts": 456}]}"#;
        assert_eq!(json_timestamps(frame).collect::<Vec<_>>(), vec![123, 456]);
        assert_eq!(json_kind(frame), Kind::Ticks);
        assert_eq!(json_kind(br#"{"type":"snapshot"}"#), Kind::Snapshot);
        assert_eq!(json_kind(br#"{"type":"pong"}"#), Kind::Control);
        assert_eq!(json_kind(br#"{"symbol":"A","ts":1}"#), Kind::Ticks);
    }

    #[test]
    fn msgpack_envelope_reads_type_and_timestamps() {
        #[derive(Serialize)]
        struct Q {
            symbol: &'static str,
            bid: Option<i64>,
            volume: u64,
            ts: u64,
        }
        #[derive(Serialize)]
        struct Env {
            r#type: &'static str,
            seq: u64,
            quotes: Vec<Q>,
        }
        let env = Env {
            r#type: "ticks",
            seq: 7,
            quotes: vec![
                Q {
                    symbol: "ts",
                    bid: None,
                    volume: 1 << 40,
                    ts: 1_764_300_000_123_456_789,
                },
                Q {
                    symbol: "B",
                    bid: Some(-5),
                    volume: 3,
                    ts: 42,
                },
            ],
        };
        let bytes = rmp_serde::to_vec_named(&env).unwrap();
        let mut out = Vec::new();
        assert_eq!(msgpack_envelope(&bytes, &mut out).as_deref(), Some("ticks"));
        assert_eq!(out, vec![1_764_300_000_123_456_789, 42]);
        assert!(msgpack_envelope(&bytes[..bytes.len() - 3], &mut Vec::new()).is_none());
    }

    #[test]
    fn source_addresses_spread_over_loopback() {
        assert_eq!(source_addr(0, 4).to_string(), "127.0.0.1:0");
        assert_eq!(source_addr(5, 4).to_string(), "127.0.0.2:0");
        assert_eq!(source_addr(300, 1000).to_string(), "127.0.1.47:0");
    }

    #[test]
    fn symbol_choices() {
        let dir: Vec<String> = (0..100).map(|i| format!("S{i}")).collect();
        let mut args = LoadArgs {
            url: "http://127.0.0.1:1".into(),
            transport: LoadTransport::Ws,
            clients: 1,
            symbols_per_client: 10,
            symbols: SymbolChoice::Zipf,
            zipf: 1.0,
            directory: None,
            ramp: 0.0,
            duration: 1.0,
            warmup: 0.0,
            source_ips: 1,
            idle: false,
            mode: None,
            max_hz: None,
            batch_ms: None,
            poll_interval_ms: 1000,
            poll_timeout_ms: 1000,
            threads: None,
            server_pid: vec![],
            nchan_path: "/sub/".into(),
            seed: 1,
            json: false,
            no_progress: true,
        };
        let z = Zipf::new(dir.len(), 1.0);
        let mut counts = vec![0usize; dir.len()];
        for id in 0..500 {
            let picked = pick(&args, &dir, Some(&z), id);
            assert_eq!(picked.len(), 10);
            let mut uniq = picked.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), 10, "distinct symbols");
            for s in picked {
                counts[s[1..].parse::<usize>().unwrap()] += 1;
            }
        }
        assert!(counts[0] > counts[99] * 2, "busy symbols are popular");
        args.symbols = SymbolChoice::Random;
        assert_eq!(pick(&args, &dir, None, 3).len(), 10);
        args.symbols = parse_choice("aapl, msft").unwrap();
        assert_eq!(pick(&args, &dir, None, 3), vec!["AAPL", "MSFT"]);
        args.symbols_per_client = 1000;
        args.symbols = SymbolChoice::Zipf;
        assert_eq!(pick(&args, &dir, Some(&z), 0).len(), 100);
    }
}
