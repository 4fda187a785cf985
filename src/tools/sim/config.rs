//! The simulator's settings ([`SimConfig`]) and their defaults, and the
//! session id a run takes when none is given.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// The recovery loop's group when it is enabled without one.
pub const DEFAULT_RECOVERY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 3), 31003);
/// Recovery-loop messages per second unless set: a 1,000-symbol cycle
/// (3,000 messages with books) every 0.15 s.
pub const DEFAULT_RECOVERY_RATE: u64 = 20_000;
/// Book levels per side unless set (`--book-depth`).
pub const DEFAULT_BOOK_DEPTH: usize = 10;
/// Most book levels per side: a symbol's whole book, both sides, fits one
/// packet as a `'B'`.
pub const MAX_BOOK_DEPTH: usize = 40;
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
    /// Book levels per side, each quote bringing its `'L'`s (0: no book).
    /// At most [`MAX_BOOK_DEPTH`].
    pub book_depth: usize,
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
            book_depth: DEFAULT_BOOK_DEPTH,
        }
    }
}

/// A session id from the wall clock (`S` + milliseconds since the epoch in
/// base 36), so a restarted simulator starts a new session.
pub fn default_session() -> String {
    // Milliseconds in base 36 fit the 9 characters after `S` for decades, and
    // two simulators started in the same second still get different ids.
    let mut ms = crate::clock::now_ms() % 36u64.pow(9);
    let mut digits = [b'0'; 9];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(ms % 36) as usize];
        ms /= 36;
    }
    format!("S{}", String::from_utf8_lossy(&digits))
}
