//! The market simulator engine: a synthetic market published as the tickrelay
//! feed. A library, so `tickrelay demo` runs it in-process and the
//! `feed-simulator` command is only its front end.
//!
//! Prices are integers end to end: a geometric random walk in basis points of
//! the current price, rounded to the cent. Symbol activity is Zipf-skewed.
//! Pacing is by the clock: the engine sends what the target rate says is due
//! and sleeps when ahead, so the achieved rate tracks the target over time.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use socket2::{Domain, Protocol, Socket, Type};

use parking_lot::Mutex;

use crate::price::Price;
use crate::retransmit::History;
use crate::wire::{Locate, Message, PacketBuilder, Session};

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
    /// Number of symbols.
    pub symbols: usize,
    /// Target messages per second (0: heartbeats only).
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
    /// Repeat the directory this often.
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

/// Live counters, readable while the engine runs.
#[derive(Debug, Default)]
pub struct SimCounters {
    /// Messages sent (directory included).
    pub messages: AtomicU64,
    /// Datagrams sent, per line.
    pub packets: AtomicU64,
    /// Datagram bytes sent.
    pub bytes: AtomicU64,
    /// Send errors (e.g. ENOBUFS), counted and skipped.
    pub send_errors: AtomicU64,
}

/// The last state the simulator published for one symbol: what a correct
/// relay's snapshot must show once the feed is drained.
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
}

struct Instrument {
    symbol: String,
    name: String,
    prev_close: Price,
    /// The random walk's bid and ask; published only once `quoted`.
    bid: Price,
    ask: Price,
    quoted: bool,
    bid_size: u32,
    ask_size: u32,
    last: Option<Price>,
    last_size: u32,
    volume: u64,
    /// Sequence of the last message that changed this symbol (0: unlisted).
    seq: u64,
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

/// Zipf sampler over `n` ranks: precomputed cumulative weights, binary search.
struct Zipf {
    cdf: Vec<u64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        // Weights are computed once at start; they choose which symbol ticks,
        // never a price.
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                (acc.min(1.0) * u64::MAX as f64) as u64
            })
            .collect();
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut SmallRng) -> usize {
        let x: u64 = rng.r#gen();
        self.cdf.partition_point(|&c| c < x).min(self.cdf.len() - 1)
    }
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

/// One line's output with its fault injection.
struct Line {
    dest: SocketAddr,
    delayed: Option<Vec<u8>>,
}

/// Where finished packets go: every line, with the configured faults, and
/// the retransmission history (which keeps them as sent, before any fault).
struct Output {
    socket: UdpSocket,
    lines: Vec<Line>,
    counters: Arc<SimCounters>,
    rng: SmallRng,
    loss_permille: u32,
    reorder_permille: u32,
    duplicate_permille: u32,
    history: Option<Arc<Mutex<History>>>,
}

impl Output {
    /// Sends one finished packet on every line, applying the faults.
    fn emit(&mut self, packet: &[u8]) {
        if let Some(h) = &self.history {
            h.lock().record(packet);
        }
        for line in self.lines.iter_mut() {
            if self.loss_permille > 0 && self.rng.gen_range(0..1000) < self.loss_permille {
                continue;
            }
            if self.reorder_permille > 0
                && line.delayed.is_none()
                && self.rng.gen_range(0..1000) < self.reorder_permille
            {
                line.delayed = Some(packet.to_vec());
                continue;
            }
            send(&self.socket, line.dest, &self.counters, packet);
            if let Some(p) = line.delayed.take() {
                send(&self.socket, line.dest, &self.counters, &p);
            }
            if self.duplicate_permille > 0 && self.rng.gen_range(0..1000) < self.duplicate_permille
            {
                send(&self.socket, line.dest, &self.counters, packet);
            }
        }
    }

    /// Sends a packet on every line without faults (heartbeats, end of session).
    fn send_all(&mut self, packet: &[u8]) {
        for line in &self.lines {
            send(&self.socket, line.dest, &self.counters, packet);
        }
    }

    /// Sends what reordering still holds back.
    fn release_delayed(&mut self) {
        for line in self.lines.iter_mut() {
            if let Some(p) = line.delayed.take() {
                send(&self.socket, line.dest, &self.counters, &p);
            }
        }
    }
}

/// The engine.
pub struct Simulator {
    config: SimConfig,
    out: Output,
    builder: PacketBuilder,
    instruments: Vec<Instrument>,
    zipf: Zipf,
    rng: SmallRng,
    last_send: Instant,
    retransmit: Option<UdpSocket>,
}

impl Simulator {
    /// Builds the market and opens the socket.
    pub fn new(config: SimConfig) -> io::Result<Self> {
        let socket = sender(config.interface, config.ttl)?;
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let instruments = tickers(config.symbols)
            .into_iter()
            .map(|(symbol, name)| {
                // $5 to $600, to the cent.
                let cents: i64 = rng.gen_range(500..60_000);
                let prev_close = Price(cents * 100);
                let open = Price((cents + rng.gen_range(-cents / 50..=cents / 50)) * 100);
                Instrument {
                    symbol,
                    name,
                    prev_close,
                    bid: open,
                    ask: Price(open.raw() + 100),
                    quoted: false,
                    bid_size: 0,
                    ask_size: 0,
                    last: None,
                    last_size: 0,
                    volume: 0,
                    seq: 0,
                }
            })
            .collect();
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
        let retransmit = config.retransmit.map(UdpSocket::bind).transpose()?;
        // About the last million messages can be sent again.
        let history = retransmit
            .as_ref()
            .map(|_| Arc::new(Mutex::new(History::new(session, 1_000_000))));
        Ok(Simulator {
            zipf: Zipf::new(config.symbols.max(1), config.zipf),
            out: Output {
                socket,
                lines,
                counters: Arc::new(SimCounters::default()),
                rng: SmallRng::seed_from_u64(config.seed ^ 0xfa17),
                loss_permille: config.loss_permille,
                reorder_permille: config.reorder_permille,
                duplicate_permille: config.duplicate_permille,
                history,
            },
            rng,
            instruments,
            builder,
            last_send: Instant::now(),
            retransmit,
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

    /// Runs until the duration or count is reached or `stop` is set, then
    /// sends end-of-session.
    pub fn run(mut self, stop: &AtomicBool) -> SimSummary {
        let start = Instant::now();
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
        self.send_directory();
        let mut next_directory = start + self.config.directory_every;
        let mut sent: u64 = 0;
        let mut due_base = start;
        let mut due_sent: u64 = 0;
        let limit = self.config.count.unwrap_or(u64::MAX);
        let end = self.config.duration.map(|d| start + d);
        let mut next_burst = self.config.burst_every.map(|e| start + e);
        let mut burst_until: Option<Instant> = None;
        let mut rate = self.config.rate;
        while !stop.load(Ordering::Relaxed) && sent < limit {
            let now = Instant::now();
            if end.is_some_and(|e| now >= e) {
                break;
            }
            // Bursts change the rate: re-base the pacing clock at each change.
            let burst_rate = match (next_burst, burst_until) {
                (_, Some(u)) if now >= u => {
                    burst_until = None;
                    Some(self.config.rate)
                }
                (Some(nb), None) if now >= nb => {
                    burst_until = Some(now + self.config.burst_length);
                    next_burst = self.config.burst_every.map(|e| nb + e);
                    Some(self.config.rate.saturating_mul(self.config.burst_factor))
                }
                _ => None,
            };
            if let Some(r) = burst_rate {
                rate = r;
                due_base = now;
                due_sent = 0;
            }
            if now >= next_directory {
                self.send_directory();
                next_directory = now + self.config.directory_every;
            }
            let due = if rate == 0 {
                0
            } else {
                (now.duration_since(due_base).as_nanos() * u128::from(rate) / 1_000_000_000) as u64
            };
            let todo = due.saturating_sub(due_sent).min(limit - sent).min(4096);
            if todo == 0 {
                self.flush();
                if self.last_send.elapsed() >= Duration::from_secs(1) {
                    self.send_raw(&self.builder.heartbeat());
                }
                let wait = match 1_000_000_000u64.checked_div(rate) {
                    None => Duration::from_millis(50),
                    Some(ns) => Duration::from_nanos(ns.clamp(1_000, 5_000_000)),
                };
                std::thread::sleep(wait);
                continue;
            }
            for _ in 0..todo {
                self.market_event();
            }
            sent += todo;
            due_sent += todo;
            // Anything still in the builder goes out now: at low rates a
            // message should not wait for the packet to fill.
            self.flush();
        }
        self.flush();
        self.out.release_delayed();
        self.send_raw(&self.builder.end_of_session());
        if let Some(server) = server {
            // Late requests for the last packets still get an answer.
            std::thread::sleep(Duration::from_millis(300));
            server_stop.store(true, Ordering::Relaxed);
            let _ = server.join();
        }
        let seconds = start.elapsed().as_secs_f64();
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
            quotes: self
                .instruments
                .iter()
                .map(|i| FinalQuote {
                    symbol: i.symbol.clone(),
                    seq: i.seq,
                    bid: i.quoted.then_some(i.bid),
                    ask: i.quoted.then_some(i.ask),
                    bid_size: i.bid_size,
                    ask_size: i.ask_size,
                    last: i.last,
                    last_size: i.last_size,
                    volume: i.volume,
                    prev_close: i.prev_close,
                })
                .collect(),
        }
    }

    fn send_directory(&mut self) {
        let ts = now_ns();
        for idx in 0..self.instruments.len() {
            let inst = &self.instruments[idx];
            let msg = Message::Directory {
                locate: idx as Locate,
                ts,
                symbol: &inst.symbol,
                name: &inst.name,
                prev_close: inst.prev_close,
            };
            let out = &mut self.out;
            let seq = self.builder.push(&msg, &mut |p| out.emit(p));
            // A relay shows the first listing's sequence until the symbol
            // ticks; a repeated, unchanged entry is no change.
            let inst = &mut self.instruments[idx];
            if inst.seq == 0 {
                inst.seq = seq;
            }
            self.out.counters.messages.fetch_add(1, Ordering::Relaxed);
        }
        self.flush();
    }

    /// One quote or trade on a Zipf-chosen symbol.
    fn market_event(&mut self) {
        let idx = self.zipf.sample(&mut self.rng);
        let ts = now_ns();
        let inst = &mut self.instruments[idx];
        let mid_cents = (inst.bid.raw() + inst.ask.raw()) / 200;
        let msg = if self.rng.gen_ratio(1, 5) {
            // A trade at the bid or the ask.
            let price = if self.rng.r#gen() { inst.bid } else { inst.ask };
            let size = 100 * self.rng.gen_range(1..=10u32);
            inst.last = Some(price);
            inst.last_size = size;
            inst.volume += u64::from(size);
            Message::Trade {
                locate: idx as Locate,
                ts,
                price,
                size,
                volume: inst.volume,
            }
        } else {
            // Geometric step: up to ±5 bp of the mid, at least a cent at times.
            let step_bp: i64 = self.rng.gen_range(-5..=5);
            let mut delta = mid_cents * step_bp / 10_000;
            if delta == 0 && step_bp != 0 {
                delta = step_bp.signum();
            }
            let mid = (mid_cents + delta).max(100);
            let spread = 1 + (mid / 20_000) + i64::from(self.rng.gen_range(0..3u8));
            inst.bid = Price(mid * 100);
            inst.ask = Price((mid + spread) * 100);
            inst.quoted = true;
            inst.bid_size = 100 * self.rng.gen_range(1..=50u32);
            inst.ask_size = 100 * self.rng.gen_range(1..=50u32);
            Message::Quote {
                locate: idx as Locate,
                ts,
                bid: inst.bid,
                ask: inst.ask,
                bid_size: inst.bid_size,
                ask_size: inst.ask_size,
            }
        };
        let out = &mut self.out;
        let seq = self.builder.push(&msg, &mut |p| out.emit(p));
        self.instruments[idx].seq = seq;
        self.out.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.last_send = Instant::now();
    }

    fn flush(&mut self) {
        let had = self.builder.pending() > 0;
        let out = &mut self.out;
        self.builder.flush(&mut |p| out.emit(p));
        if had {
            self.last_send = Instant::now();
        }
    }

    fn send_raw(&mut self, packet: &[u8]) {
        self.out.send_all(packet);
        self.last_send = Instant::now();
    }
}

fn send(socket: &UdpSocket, dest: SocketAddr, counters: &SimCounters, packet: &[u8]) {
    match socket.send_to(packet, dest) {
        Ok(n) => {
            counters.packets.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(_) => {
            counters.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn tickers_are_unique_and_real_looking() {
        let t = tickers(2000);
        let set: std::collections::HashSet<_> = t.iter().map(|(s, _)| s).collect();
        assert_eq!(set.len(), 2000);
        assert_eq!(t[0].0, "AAPL");
        assert!(
            t.iter()
                .all(|(s, _)| s.len() <= 5 && s.bytes().all(|b| b.is_ascii_uppercase()))
        );
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(100, 1.2);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut hits = [0u32; 100];
        for _ in 0..100_000 {
            hits[z.sample(&mut rng)] += 1;
        }
        assert!(hits[0] > hits[10] && hits[10] > hits[90]);
        let u = Zipf::new(10, 0.0);
        let mut uh = [0u32; 10];
        for _ in 0..100_000 {
            uh[u.sample(&mut rng)] += 1;
        }
        assert!(uh.iter().all(|&h| (8_000..12_000).contains(&h)), "{uh:?}");
    }
}
