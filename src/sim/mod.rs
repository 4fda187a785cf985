//! The market simulator engine: a synthetic (or recorded) market published as
//! the tickrelay feed, with its retransmission server and recovery loop. A
//! library, so `tickrelay demo` runs it in-process and the `feed-simulator`
//! command is only its front end.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | `market` | the price model: a driftless walk per symbol, quotes on the cent grid, trades at the touch; pure |
//! | `recovery` | the recovery loop's cursor: one `'D'` and one `'S'` per listed symbol, cycle after cycle |
//! | `record` | `--record` rows and the `--replay` reader (CSV) |
//! | `output` | feed lines with injected faults, the retransmission history, the recovery group |
//! | here | settings, the book of what was published, pacing, the run loop, fast-forward |
//!
//! Prices are integers end to end (1/10,000). Pacing is by a clock: the
//! engine sends what the target rate says is due and sleeps when ahead, so
//! the achieved rate tracks the target. The same loop runs on a virtual
//! clock without sockets ([`fast_forward`]) to simulate minutes in moments.
//! One thread makes everything — live messages and the recovery loop — so a
//! recovery state never runs ahead of the live feed.

mod market;
mod output;
mod record;
mod recovery;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use socket2::{Domain, Protocol, Socket, Type};

use crate::price::Price;
use crate::retransmit::History;
use crate::wire::{Locate, Message, PacketBuilder, Session, StateQuote, StateTrade};
use market::{Listed, Market, Tick};
use output::{Faults, Line, Output};
use record::{Recorded, RecordedEvent, Recorder};
use recovery::RecoveryLoop;

pub use output::SimCounters;
pub use record::HEADER as RECORD_HEADER;

/// The recovery loop's group when it is enabled without one.
pub const DEFAULT_RECOVERY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 3), 31003);
/// Recovery-loop messages per second unless set: a 1,000-symbol cycle
/// (2,000 messages) every 0.1 s.
pub const DEFAULT_RECOVERY_RATE: u64 = 20_000;
/// Messages the retransmission server keeps unless set.
pub const DEFAULT_HISTORY: u64 = 1_000_000;

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Line A destination (multicast group or loopback address).
    pub line_a: SocketAddrV4,
    /// Optional line B, carrying the same packets.
    pub line_b: Option<SocketAddrV4>,
    /// Interface to send multicast from.
    pub interface: Ipv4Addr,
    /// Multicast TTL (0: never leaves the host).
    pub ttl: u32,
    /// Number of symbols (ignored when replaying).
    pub symbols: usize,
    /// Target messages per second (0: heartbeats only; when replaying at
    /// speed 0, the pace, 0 meaning unpaced).
    pub rate: u64,
    /// Zipf exponent of symbol activity (0: uniform).
    pub zipf: f64,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many market messages (directory excluded).
    pub count: Option<u64>,
    /// Session id.
    pub session: String,
    /// Random seed.
    pub seed: u64,
    /// Start a burst this often.
    pub burst_every: Option<Duration>,
    /// Rate multiplier during a burst.
    pub burst_factor: u64,
    /// How long a burst lasts.
    pub burst_length: Duration,
    /// Repeat the directory this often (not when replaying: the recording's
    /// own directory rows are replayed).
    pub directory_every: Duration,
    /// Most messages per datagram.
    pub max_per_packet: u16,
    /// Per-mille of packets not sent on line A (and, independently, on B).
    pub loss_permille: u32,
    /// Per-mille of packets sent one packet late on each line.
    pub reorder_permille: u32,
    /// Per-mille of packets sent twice on each line.
    pub duplicate_permille: u32,
    /// Serve retransmission requests on this unicast address (port 0: any).
    pub retransmit: Option<SocketAddrV4>,
    /// Messages the retransmission server keeps (the newest).
    pub history: u64,
    /// Run the recovery loop on this group (never faulted).
    pub recovery: Option<SocketAddrV4>,
    /// Recovery-loop messages per second.
    pub recovery_rate: u64,
    /// Open with an auction burst: right after the directory, every symbol
    /// gets its opening quote and opening print at once.
    pub opening_auction: bool,
    /// Write every published market message to this CSV file.
    pub record: Option<PathBuf>,
    /// Publish the messages of this recorded CSV file instead of a synthetic market.
    pub replay: Option<PathBuf>,
    /// Replay pace: 1 = as recorded, N = N times faster, 0 = at `rate`.
    pub speed: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            line_a: crate::config::DEFAULT_FEED_A,
            line_b: None,
            interface: Ipv4Addr::LOCALHOST,
            ttl: 0,
            symbols: 1000,
            rate: 10_000,
            zipf: 1.0,
            duration: None,
            count: None,
            session: default_session(),
            seed: 1,
            burst_every: None,
            burst_factor: 5,
            burst_length: Duration::from_millis(200),
            directory_every: Duration::from_secs(5),
            max_per_packet: u16::MAX - 1,
            loss_permille: 0,
            reorder_permille: 0,
            duplicate_permille: 0,
            retransmit: None,
            history: DEFAULT_HISTORY,
            recovery: None,
            recovery_rate: DEFAULT_RECOVERY_RATE,
            opening_auction: false,
            record: None,
            replay: None,
            speed: 1.0,
        }
    }
}

/// A session id from the wall clock (`S` + milliseconds since the epoch in
/// base 36), so a restarted simulator starts a new session.
pub fn default_session() -> String {
    // Milliseconds in base 36 fit the 9 characters after `S` for decades, and
    // two simulators started in the same second still get different ids.
    let mut ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        % 36u64.pow(9);
    let mut digits = [b'0'; 9];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(ms % 36) as usize];
        ms /= 36;
    }
    format!("S{}", String::from_utf8_lossy(&digits))
}

/// Real-looking tickers: a few dozen well-known ones, then generated
/// three- and four-letter codes, deterministically.
pub fn tickers(n: usize) -> Vec<(String, String)> {
    const KNOWN: &[(&str, &str)] = &[
        ("AAPL", "Apple Inc."),
        ("MSFT", "Microsoft Corp."),
        ("NVDA", "NVIDIA Corp."),
        ("AMZN", "Amazon.com Inc."),
        ("GOOGL", "Alphabet Inc. Class A"),
        ("META", "Meta Platforms Inc."),
        ("TSLA", "Tesla Inc."),
        ("AVGO", "Broadcom Inc."),
        ("JPM", "JPMorgan Chase & Co."),
        ("V", "Visa Inc."),
        ("WMT", "Walmart Inc."),
        ("XOM", "Exxon Mobil Corp."),
        ("UNH", "UnitedHealth Group Inc."),
        ("MA", "Mastercard Inc."),
        ("JNJ", "Johnson & Johnson"),
        ("PG", "Procter & Gamble Co."),
        ("HD", "Home Depot Inc."),
        ("COST", "Costco Wholesale Corp."),
        ("ORCL", "Oracle Corp."),
        ("NFLX", "Netflix Inc."),
        ("AMD", "Advanced Micro Devices Inc."),
        ("KO", "Coca-Cola Co."),
        ("PEP", "PepsiCo Inc."),
        ("BAC", "Bank of America Corp."),
        ("CRM", "Salesforce Inc."),
        ("ADBE", "Adobe Inc."),
        ("INTC", "Intel Corp."),
        ("CSCO", "Cisco Systems Inc."),
        ("DIS", "Walt Disney Co."),
        ("IBM", "International Business Machines"),
        ("QCOM", "Qualcomm Inc."),
        ("TXN", "Texas Instruments Inc."),
        ("NKE", "Nike Inc."),
        ("MCD", "McDonald's Corp."),
        ("BA", "Boeing Co."),
        ("GS", "Goldman Sachs Group Inc."),
        ("CAT", "Caterpillar Inc."),
        ("UBER", "Uber Technologies Inc."),
        ("PYPL", "PayPal Holdings Inc."),
        ("SBUX", "Starbucks Corp."),
    ];
    let mut out: Vec<(String, String)> = KNOWN
        .iter()
        .take(n)
        .map(|(s, name)| (s.to_string(), name.to_string()))
        .collect();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut seen: std::collections::HashSet<String> = out.iter().map(|(s, _)| s.clone()).collect();
    while out.len() < n {
        let len = if rng.gen_bool(0.4) { 3 } else { 4 };
        let sym: String = (0..len)
            .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
            .collect();
        if seen.insert(sym.clone()) {
            let name = format!("{} Holdings Corp.", sym);
            out.push((sym, name));
        }
    }
    out
}

/// Opens the sending socket: multicast interface and TTL set.
pub fn sender(interface: Ipv4Addr, ttl: u32) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_multicast_if_v4(&interface)?;
    socket.set_multicast_ttl_v4(ttl)?;
    socket.set_multicast_loop_v4(true)?;
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(interface, 0)).into())?;
    Ok(socket.into())
}

/// The last state the simulator published for one symbol: what a correct
/// relay's snapshot must show once the feed is drained, and what the last
/// recovery cycle carries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FinalQuote {
    /// Ticker.
    pub symbol: String,
    /// Sequence of the last message about this symbol (its first directory
    /// entry when it never ticked; repeats of the directory change nothing).
    pub seq: u64,
    /// Best bid, if any quote was published.
    pub bid: Option<Price>,
    /// Best ask, if any quote was published.
    pub ask: Option<Price>,
    /// Bid size (0 before the first quote).
    pub bid_size: u32,
    /// Ask size (0 before the first quote).
    pub ask_size: u32,
    /// Last trade price, if any trade.
    pub last: Option<Price>,
    /// Last trade size (0 before the first trade).
    pub last_size: u32,
    /// Cumulative volume.
    pub volume: u64,
    /// Previous close.
    pub prev_close: Price,
    /// Locate code.
    #[serde(default)]
    pub locate: Locate,
    /// Sequence of the last quote (0: none), the `quote_seq` of its `'S'`.
    #[serde(default)]
    pub quote_seq: u64,
    /// Sequence of the last trade (0: none), the `trade_seq` of its `'S'`.
    #[serde(default)]
    pub trade_seq: u64,
    /// Exchange timestamp of its newest change (its listing's when it never
    /// ticked), the `ts` of its `'S'`.
    #[serde(default)]
    pub ts: u64,
}

/// What a finished run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SimSummary {
    /// Session id.
    pub session: String,
    /// Messages sent (directory included).
    pub messages: u64,
    /// Datagrams sent on line A.
    pub packets: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Achieved messages per second.
    pub rate: f64,
    /// Sequence one past the last message.
    pub next_seq: u64,
    /// Final state per symbol.
    pub quotes: Vec<FinalQuote>,
    /// Recovery-loop sequence one past its last message, when the loop ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_next_seq: Option<u64>,
    /// Why the recording is incomplete, if a write failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
}

/// One symbol as published so far: what the recovery loop and the final
/// state are made of.
#[derive(Clone, Debug)]
pub(crate) struct Listing {
    pub(crate) symbol: String,
    pub(crate) name: String,
    pub(crate) prev_close: Price,
    /// Sequence and time of the directory entry that listed it.
    pub(crate) listed_seq: u64,
    pub(crate) listed_ts: u64,
    /// The last quote and trade, with the sequences they had on the feed.
    pub(crate) quote: Option<StateQuote>,
    pub(crate) trade: Option<StateTrade>,
    /// Exchange time of the newest change.
    pub(crate) ts: u64,
}

impl Listing {
    fn final_quote(&self, locate: usize) -> FinalQuote {
        let quote_seq = self.quote.map_or(0, |q| q.seq);
        let trade_seq = self.trade.map_or(0, |t| t.seq);
        FinalQuote {
            symbol: self.symbol.clone(),
            seq: self.listed_seq.max(quote_seq).max(trade_seq),
            bid: self.quote.map(|q| q.bid),
            ask: self.quote.map(|q| q.ask),
            bid_size: self.quote.map_or(0, |q| q.bid_size),
            ask_size: self.quote.map_or(0, |q| q.ask_size),
            last: self.trade.map(|t| t.last),
            last_size: self.trade.map_or(0, |t| t.last_size),
            volume: self.trade.map_or(0, |t| t.volume),
            prev_close: self.prev_close,
            locate: locate as Locate,
            quote_seq,
            trade_seq,
            ts: self.ts,
        }
    }
}

/// Every listed symbol by locate.
#[derive(Default)]
pub(crate) struct Book {
    listings: Vec<Option<Listing>>,
}

impl Book {
    /// The listing of `locate`, if listed.
    pub(crate) fn get(&self, locate: usize) -> Option<&Listing> {
        self.listings.get(locate).and_then(Option::as_ref)
    }

    /// The first listed locate at or after `from`.
    pub(crate) fn next_listed(&self, from: usize) -> Option<usize> {
        (from..self.listings.len()).find(|&i| self.listings[i].is_some())
    }

    fn get_mut(&mut self, locate: usize) -> Option<&mut Listing> {
        self.listings.get_mut(locate).and_then(Option::as_mut)
    }

    fn listed(&self) -> impl Iterator<Item = (usize, &Listing)> {
        self.listings
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
    }
}

/// Feed time: the wall clock, or a virtual one that jumps instead of sleeping.
enum Clock {
    Live { start: Instant, epoch_ns: u64 },
    Virtual { now: u64, epoch_ns: u64 },
}

impl Clock {
    /// Nanoseconds since the run started.
    fn elapsed(&self) -> u64 {
        match self {
            Clock::Live { start, .. } => start.elapsed().as_nanos() as u64,
            Clock::Virtual { now, .. } => *now,
        }
    }

    /// The exchange timestamp of now: ns since the Unix epoch.
    fn ts(&self) -> u64 {
        match self {
            Clock::Live { epoch_ns, .. } | Clock::Virtual { epoch_ns, .. } => {
                epoch_ns + self.elapsed()
            }
        }
    }

    /// Waits `ns` (a live clock at most 5 ms at a time, so a stop request
    /// is seen promptly).
    fn wait(&mut self, ns: u64) {
        match self {
            Clock::Live { .. } => {
                std::thread::sleep(Duration::from_nanos(ns.clamp(1_000, 5_000_000)));
            }
            Clock::Virtual { now, .. } => *now += ns.max(1),
        }
    }

    fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual { .. })
    }
}

/// Where the messages come from.
enum Source {
    /// The synthetic market, with its symbols' static data by locate.
    Synthetic {
        market: Market,
        catalog: Vec<Listed>,
    },
    /// A recording, published row by row.
    Replay { rows: Vec<Recorded>, next: usize },
}

/// Pacing by count: `sent` messages since `base` at `rate` per second.
#[derive(Clone, Copy)]
struct Pace {
    base: u64,
    sent: u64,
    rate: u64,
}

impl Pace {
    /// Messages due by `now` and not yet sent.
    fn due(&self, now: u64) -> u64 {
        let due = u128::from(now.saturating_sub(self.base)) * u128::from(self.rate) / 1_000_000_000;
        (due as u64).saturating_sub(self.sent)
    }

    /// When the next message is due (`u64::MAX`: never).
    fn next_at(&self) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        let n = u128::from(self.sent + 1) * 1_000_000_000;
        self.base + n.div_ceil(u128::from(self.rate)) as u64
    }

    fn restart(&mut self, now: u64, rate: u64) {
        *self = Pace {
            base: now,
            sent: 0,
            rate,
        };
    }
}

const SECOND: u64 = 1_000_000_000;
/// Longest a part-filled recovery packet waits for more messages (ns).
const LOOP_FLUSH: u64 = 5_000_000;
/// Most messages made per loop turn before packets are flushed.
const BATCH: u64 = 4096;

/// The engine.
pub struct Simulator {
    config: SimConfig,
    clock: Clock,
    out: Output,
    builder: PacketBuilder,
    source: Source,
    book: Book,
    recovery: Option<RecoveryLoop>,
    recorder: Option<Recorder>,
    retransmit: Option<UdpSocket>,
    /// Market messages published (directory excluded).
    sent: u64,
    /// When the feed and the loop last sent something (clock ns).
    live_sent_at: u64,
    loop_sent_at: u64,
    /// When the loop's packet in progress was last sent out.
    loop_flushed_at: u64,
}

impl Simulator {
    /// Builds the market (or reads the recording) and opens the sockets.
    pub fn new(config: SimConfig) -> io::Result<Self> {
        Simulator::build(config, false)
    }

    fn build(config: SimConfig, fast_forward: bool) -> io::Result<Self> {
        let source = match &config.replay {
            Some(path) => Source::Replay {
                rows: record::read(path)?,
                next: 0,
            },
            None => {
                let (market, catalog) = Market::new(config.symbols, config.zipf, config.seed);
                Source::Synthetic { market, catalog }
            }
        };
        let recorder = config.record.as_deref().map(Recorder::create).transpose()?;
        let socket = if fast_forward {
            None
        } else {
            Some(sender(config.interface, config.ttl).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open the sending socket on {}: {e}",
                        config.interface
                    ),
                )
            })?)
        };
        let mut lines = vec![Line {
            dest: SocketAddr::V4(config.line_a),
            delayed: None,
        }];
        if let Some(b) = config.line_b {
            lines.push(Line {
                dest: SocketAddr::V4(b),
                delayed: None,
            });
        }
        let session = Session::new(&config.session);
        let builder = PacketBuilder::new(session, 1).with_max_messages(config.max_per_packet);
        let retransmit = match config.retransmit {
            Some(addr) if !fast_forward => Some(UdpSocket::bind(addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot bind the retransmission server on {addr}: {e}"),
                )
            })?),
            _ => None,
        };
        let history = retransmit
            .as_ref()
            .map(|_| Arc::new(Mutex::new(History::new(session, config.history.max(1)))));
        let recovery = config
            .recovery
            .map(|g| RecoveryLoop::new(session, SocketAddr::V4(g)));
        let epoch_ns = now_ns();
        let clock = if fast_forward {
            Clock::Virtual { now: 0, epoch_ns }
        } else {
            Clock::Live {
                start: Instant::now(),
                epoch_ns,
            }
        };
        Ok(Simulator {
            out: Output {
                socket,
                lines,
                counters: Arc::new(SimCounters::default()),
                rng: SmallRng::seed_from_u64(config.seed ^ 0xfa17),
                faults: Faults {
                    loss: config.loss_permille,
                    reorder: config.reorder_permille,
                    duplicate: config.duplicate_permille,
                },
                history,
                capture: None,
            },
            clock,
            source,
            book: Book::default(),
            recovery,
            recorder,
            builder,
            retransmit,
            sent: 0,
            live_sent_at: 0,
            loop_sent_at: 0,
            loop_flushed_at: 0,
            config,
        })
    }

    /// Counters to watch from another thread (progress bar).
    pub fn counters(&self) -> Arc<SimCounters> {
        self.out.counters.clone()
    }

    /// Where the retransmission server listens, if it is on.
    pub fn retransmit_addr(&self) -> Option<SocketAddr> {
        self.retransmit.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Runs until the duration or count is reached, the recording ends, or
    /// `stop` is set; then (unless stopped) completes one more full recovery
    /// cycle, and sends end-of-session.
    pub fn run(mut self, stop: &AtomicBool) -> SimSummary {
        let server_stop = Arc::new(AtomicBool::new(false));
        let server = match (self.retransmit.take(), self.out.history.clone()) {
            (Some(socket), Some(history)) => {
                let stats = Arc::new(crate::retransmit::ServerStats::default());
                let stop = server_stop.clone();
                std::thread::Builder::new()
                    .name("sim-retransmit".into())
                    .spawn(move || crate::retransmit::serve(socket, history, stats, stop))
                    .ok()
            }
            _ => None,
        };
        let summary = self.run_inner(stop);
        if let Some(server) = server {
            // Late requests for the last packets still get an answer.
            std::thread::sleep(Duration::from_millis(300));
            server_stop.store(true, Ordering::Relaxed);
            let _ = server.join();
        }
        summary
    }

    fn run_inner(&mut self, stop: &AtomicBool) -> SimSummary {
        let wall = Instant::now();
        let limit = self.config.count.unwrap_or(u64::MAX);
        let end = self
            .config
            .duration
            .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
        let replay = matches!(self.source, Source::Replay { .. });
        if !replay {
            self.send_directory();
            if self.config.opening_auction {
                self.opening_auction(limit);
            }
        }
        let now = self.clock.elapsed();
        let directory_every = (self.config.directory_every.as_nanos() as u64).max(1);
        let mut next_directory = now.saturating_add(directory_every);
        let burst_every = self
            .config
            .burst_every
            .map(|d| (d.as_nanos() as u64).max(1));
        let burst_length = self.config.burst_length.as_nanos() as u64;
        let mut next_burst = burst_every.map(|e| now.saturating_add(e));
        let mut burst_until: Option<u64> = None;
        let mut pace = Pace {
            base: now,
            sent: 0,
            rate: self.config.rate,
        };
        let mut loop_pace = Pace {
            base: now,
            sent: 0,
            rate: self.config.recovery_rate,
        };
        // A replay at a speed follows the recording's clock.
        let replay_t0 = now;
        let speed = self.config.speed;
        let replay_ts0 = match &self.source {
            Source::Replay { rows, .. } if speed > 0.0 => rows.first().map(|r| r.ts),
            _ => None,
        };
        let replay_due = |r: &Recorded, ts0: u64| -> u64 {
            replay_t0.saturating_add((r.ts.saturating_sub(ts0) as f64 / speed) as u64)
        };
        let mut stopped = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                stopped = true;
                break;
            }
            let now = self.clock.elapsed();
            let exhausted = match &self.source {
                Source::Replay { rows, next } => *next >= rows.len(),
                Source::Synthetic { .. } => false,
            };
            if exhausted || self.sent >= limit || end.is_some_and(|e| now >= e) {
                break;
            }
            if !replay {
                // Bursts change the rate: re-base the pacing clock at each change.
                let burst_rate = match (next_burst, burst_until) {
                    (_, Some(u)) if now >= u => {
                        burst_until = None;
                        Some(self.config.rate)
                    }
                    (Some(nb), None) if now >= nb => {
                        burst_until = Some(now + burst_length);
                        next_burst = burst_every.map(|e| nb + e);
                        Some(self.config.rate.saturating_mul(self.config.burst_factor))
                    }
                    _ => None,
                };
                if let Some(r) = burst_rate {
                    pace.restart(now, r);
                }
                if now >= next_directory {
                    self.send_directory();
                    next_directory = now + directory_every;
                }
            }
            let mut todo = match (&self.source, replay_ts0) {
                (Source::Replay { rows, next }, Some(ts0)) => rows[*next..]
                    .iter()
                    .take(BATCH as usize)
                    .take_while(|r| replay_due(r, ts0) <= now)
                    .count() as u64,
                (Source::Replay { .. }, None) if self.config.rate == 0 => BATCH,
                _ => pace.due(now),
            };
            todo = todo.min(limit - self.sent).min(BATCH);
            for _ in 0..todo {
                if !self.live_event() {
                    break;
                }
            }
            pace.sent += todo;
            // Anything still in the builder goes out now: at low rates a
            // message should not wait for the packet to fill. It also goes
            // out before the loop's next states, which may reflect it.
            self.flush();
            let looped = self.loop_step(now, &mut loop_pace);
            if todo > 0 || looped {
                continue;
            }
            self.heartbeats(now);
            let mut wake = [
                next_directory,
                end.unwrap_or(u64::MAX),
                self.live_sent_at + SECOND,
                next_burst.unwrap_or(u64::MAX),
                burst_until.unwrap_or(u64::MAX),
            ]
            .into_iter()
            .min()
            .unwrap_or(u64::MAX);
            if self.recovery.is_some() {
                wake = wake
                    .min(loop_pace.next_at())
                    .min(self.loop_sent_at + SECOND);
            }
            wake = wake.min(match (&self.source, replay_ts0) {
                (Source::Replay { rows, next }, Some(ts0)) => {
                    rows.get(*next).map_or(u64::MAX, |r| replay_due(r, ts0))
                }
                _ => pace.next_at(),
            });
            self.clock.wait(wake.saturating_sub(now));
        }
        self.flush();
        self.out.release_delayed();
        if !stopped {
            self.final_cycle(stop);
        }
        let eos = self.builder.end_of_session();
        self.out.send_all(&eos);
        if let Some(lp) = &mut self.recovery {
            let dest = lp.dest;
            let out = &mut self.out;
            lp.flush(&mut |p| out.send_recovery(dest, p));
            let eos = lp.end_of_session();
            self.out.send_recovery(dest, &eos);
        }
        self.summary(wall)
    }

    /// Sends the recovery loop's due messages; true if it sent any.
    fn loop_step(&mut self, now: u64, pace: &mut Pace) -> bool {
        let Some(lp) = &mut self.recovery else {
            return false;
        };
        let todo = pace.due(now).min(BATCH);
        let out = &mut self.out;
        let dest = lp.dest;
        let mut done = 0;
        for _ in 0..todo {
            if !lp.push_next(&self.book, &mut |p| out.send_recovery(dest, p)) {
                break;
            }
            done += 1;
        }
        // Full packets go out as they fill; a part-filled one waits a few
        // milliseconds for more, so the loop costs packets, not messages.
        if lp.finished() || now >= self.loop_flushed_at + LOOP_FLUSH {
            lp.flush(&mut |p| out.send_recovery(dest, p));
            self.loop_flushed_at = now;
        }
        // Nothing listed yet: what was due is skipped, not saved up.
        pace.sent += todo;
        if done > 0 {
            self.loop_sent_at = now;
            out.counters
                .recovery_messages
                .fetch_add(done, Ordering::Relaxed);
        }
        done > 0
    }

    /// Heartbeats on a line idle for a second.
    fn heartbeats(&mut self, now: u64) {
        if now >= self.live_sent_at + SECOND {
            let hb = self.builder.heartbeat();
            self.out.send_all(&hb);
            self.live_sent_at = now;
        }
        if let Some(lp) = &self.recovery {
            if now >= self.loop_sent_at + SECOND {
                let hb = lp.heartbeat();
                let dest = lp.dest;
                self.out.send_recovery(dest, &hb);
                self.loop_sent_at = now;
            }
        }
    }

    /// After the feed's end: the recovery loop runs on, paced, until one
    /// whole cycle has been sent after the last live message (the rest of
    /// the cycle in progress, then a full one), so a relay that starts
    /// recovering at the very end still completes.
    fn final_cycle(&mut self, stop: &AtomicBool) {
        if self.book.next_listed(0).is_none() {
            return;
        }
        if self.recovery.is_none() {
            return;
        }
        // A heartbeat at once: it carries the feed's end, so a relay that
        // lost the last packets learns of it while the loop still runs.
        let hb = self.builder.heartbeat();
        self.out.send_all(&hb);
        self.live_sent_at = self.clock.elapsed();
        let listed = self.book.listings.iter().filter(|l| l.is_some()).count() as u64;
        let Some(lp) = &mut self.recovery else { return };
        // At least one whole cycle, and cycles for at least a second, so a
        // relay that gives up a tail gap (its gap hold) still sees a whole
        // cycle begin after it.
        let per_second = self.config.recovery_rate / (2 * listed.max(1));
        let extra = per_second.max(1);
        lp.last_cycle = Some(lp.completed + extra + u64::from(!lp.at_cycle_start));
        let now = self.clock.elapsed();
        let mut pace = Pace {
            base: now,
            sent: 0,
            rate: self.config.recovery_rate,
        };
        while !stop.load(Ordering::Relaxed)
            && !self.recovery.as_ref().is_some_and(|lp| lp.finished())
        {
            let now = self.clock.elapsed();
            if !self.loop_step(now, &mut pace) {
                self.heartbeats(now);
                self.clock.wait(pace.next_at().saturating_sub(now));
            }
        }
    }

    /// One live message: the market's next event, or the recording's next row.
    /// False when the recording is over.
    fn live_event(&mut self) -> bool {
        let ts = self.clock.ts();
        match &mut self.source {
            Source::Synthetic { market, .. } => {
                let (locate, tick) = market.next(ts, &self.book);
                self.publish_tick(usize::from(locate), ts, tick);
            }
            Source::Replay { rows, next } => {
                let Some(row) = rows.get(*next).cloned() else {
                    return false;
                };
                *next += 1;
                let locate = usize::from(row.locate);
                match row.event {
                    RecordedEvent::Directory {
                        symbol,
                        name,
                        prev_close,
                    } => {
                        self.publish_directory(locate, row.ts, symbol, name, prev_close);
                    }
                    RecordedEvent::Tick(tick) => self.publish_tick(locate, row.ts, tick),
                }
            }
        }
        true
    }

    /// The whole directory (synthetic market).
    fn send_directory(&mut self) {
        let ts = self.clock.ts();
        let entries: Vec<(String, String, Price)> = match &self.source {
            Source::Synthetic { catalog, .. } => catalog
                .iter()
                .map(|l| (l.symbol.clone(), l.name.clone(), l.prev_close))
                .collect(),
            Source::Replay { .. } => return,
        };
        for (locate, (symbol, name, prev_close)) in entries.into_iter().enumerate() {
            self.publish_directory(locate, ts, symbol, name, prev_close);
        }
        self.flush();
    }

    /// The opening auction: every symbol's opening quote and print, at once.
    fn opening_auction(&mut self, limit: u64) {
        let Source::Synthetic { market, .. } = &mut self.source else {
            return;
        };
        let n = market.len();
        for locate in 0..n {
            let ts = self.clock.ts();
            let Source::Synthetic { market, .. } = &mut self.source else {
                return;
            };
            let ticks = market.opening(locate, ts, &self.book);
            for tick in ticks {
                if self.sent >= limit {
                    self.flush();
                    return;
                }
                self.publish_tick(locate, ts, tick);
            }
        }
        self.flush();
    }

    /// Publishes a directory entry. A new symbol on a locate (or a first
    /// listing) starts a fresh listing; an unchanged repeat changes nothing.
    fn publish_directory(
        &mut self,
        locate: usize,
        ts: u64,
        symbol: String,
        name: String,
        prev_close: Price,
    ) {
        let msg = Message::Directory {
            locate: locate as Locate,
            ts,
            symbol: &symbol,
            name: &name,
            prev_close,
        };
        let out = &mut self.out;
        let seq = self.builder.push(&msg, &mut |p| out.emit(p));
        if let Some(r) = &mut self.recorder {
            r.row(seq, &symbol, &msg);
        }
        self.out.counters.messages.fetch_add(1, Ordering::Relaxed);
        if self.book.listings.len() <= locate {
            self.book.listings.resize(locate + 1, None);
        }
        match &mut self.book.listings[locate] {
            Some(l) if l.symbol == symbol => {
                l.name = name;
                l.prev_close = prev_close;
            }
            slot => {
                *slot = Some(Listing {
                    symbol,
                    name,
                    prev_close,
                    listed_seq: seq,
                    listed_ts: ts,
                    quote: None,
                    trade: None,
                    ts,
                });
            }
        }
    }

    /// Publishes a quote or a trade of a listed locate.
    fn publish_tick(&mut self, locate: usize, ts: u64, tick: Tick) {
        let msg = match tick {
            Tick::Quote {
                bid,
                ask,
                bid_size,
                ask_size,
            } => Message::Quote {
                locate: locate as Locate,
                ts,
                bid,
                ask,
                bid_size,
                ask_size,
            },
            Tick::Trade {
                price,
                size,
                volume,
            } => Message::Trade {
                locate: locate as Locate,
                ts,
                price,
                size,
                volume,
            },
        };
        let out = &mut self.out;
        let seq = self.builder.push(&msg, &mut |p| out.emit(p));
        self.out.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.live_sent_at = self.clock.elapsed();
        self.sent += 1;
        let Some(l) = self.book.get_mut(locate) else {
            return;
        };
        if let Some(r) = &mut self.recorder {
            r.row(seq, &l.symbol, &msg);
        }
        l.ts = ts;
        match tick {
            Tick::Quote {
                bid,
                ask,
                bid_size,
                ask_size,
            } => {
                l.quote = Some(StateQuote {
                    seq,
                    bid,
                    ask,
                    bid_size,
                    ask_size,
                });
            }
            Tick::Trade {
                price,
                size,
                volume,
            } => {
                l.trade = Some(StateTrade {
                    seq,
                    last: price,
                    last_size: size,
                    volume,
                });
            }
        }
    }

    fn flush(&mut self) {
        let had = self.builder.pending() > 0;
        let out = &mut self.out;
        self.builder.flush(&mut |p| out.emit(p));
        if had {
            self.live_sent_at = self.clock.elapsed();
        }
    }

    fn summary(&mut self, wall: Instant) -> SimSummary {
        let seconds = wall.elapsed().as_secs_f64();
        let messages = self.out.counters.messages.load(Ordering::Relaxed);
        SimSummary {
            session: self.builder.session().to_string(),
            messages,
            packets: self.out.counters.packets.load(Ordering::Relaxed)
                / self.out.lines.len() as u64,
            seconds,
            rate: if seconds > 0.0 {
                messages as f64 / seconds
            } else {
                0.0
            },
            next_seq: self.builder.next_seq(),
            quotes: self.book.listed().map(|(i, l)| l.final_quote(i)).collect(),
            recovery_next_seq: self.recovery.as_ref().map(RecoveryLoop::next_seq),
            record_error: self.recorder.as_mut().and_then(|r| r.finish().err()),
        }
    }
}

/// Runs the engine for `simulated` feed time on a virtual clock, without
/// sockets: the same market, pacing, directory repeats, bursts and recovery
/// loop as a live run, built into packets and counted but sent nowhere
/// (a `record` file is still written). Minutes of market take moments.
pub fn fast_forward(mut config: SimConfig, simulated: Duration) -> io::Result<SimSummary> {
    config.duration = Some(simulated);
    let mut sim = Simulator::build(config, true)?;
    debug_assert!(sim.clock.is_virtual());
    Ok(sim.run_inner(&AtomicBool::new(false)))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The final state as a map by symbol (for tests and tools).
pub fn final_by_symbol(summary: &SimSummary) -> BTreeMap<String, FinalQuote> {
    summary
        .quotes
        .iter()
        .map(|q| (q.symbol.clone(), q.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
