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
//! | `depth` | each symbol's book of `--book-depth` levels a side, its top at the quote, and the `'L'`s that move it; pure |
//! | `recovery` | the recovery loop's cursor: one `'D'`, one `'S'` and (with books) one `'B'` per listed symbol, cycle after cycle |
//! | `record` | `--record` rows and the `--replay` reader (CSV) |
//! | `output` | feed lines with injected faults, the retransmission history, the recovery group |
//! | `config` | [`SimConfig`], its defaults, the session id |
//! | `tickers` | the simulated symbols, the same for a count on every run |
//! | `book` | what was published per locate; the final state and the run's summary |
//! | `clock` | feed time (wall or virtual) and pacing by rate |
//! | `publish` | each message into the packet builder, the book and the recording |
//! | here | the engine: sockets, the run loop, the recovery loop's turn, fast-forward |
//!
//! Symbol activity is drawn with [`crate::tools::zipf`], the sampler the load
//! generator shares.
//!
//! Prices are integers end to end (1/10,000). Pacing is by a clock: the
//! engine sends what the target rate says is due and sleeps when ahead, so
//! the achieved rate tracks the target. The same loop runs on a virtual
//! clock without sockets ([`fast_forward`]) to simulate minutes in moments.
//! One thread makes everything — live messages and the recovery loop — so a
//! recovery state never runs ahead of the live feed.

mod book;
mod clock;
mod config;
mod depth;
mod market;
mod output;
mod publish;
mod record;
mod recovery;
mod tickers;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use socket2::{Domain, Protocol, Socket, Type};

use crate::clock::now_ns;
use crate::retransmit::History;
use crate::wire::{PacketBuilder, Session};
use market::{Listed, Market};
use output::{Faults, Line, Output};
use record::{Recorded, Recorder};
use recovery::RecoveryLoop;

pub use book::{FinalQuote, SimSummary, final_by_symbol};
pub use config::{
    DEFAULT_BOOK_DEPTH, DEFAULT_HISTORY, DEFAULT_RECOVERY, DEFAULT_RECOVERY_RATE, MAX_BOOK_DEPTH,
    SimConfig, default_session,
};
pub use output::SimCounters;
pub use record::HEADER as RECORD_HEADER;
pub use tickers::tickers;

use book::{Book, Listing};
use clock::{Clock, Pace};

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
        if config.book_depth > MAX_BOOK_DEPTH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--book-depth {} is above {MAX_BOOK_DEPTH} (a book's 'B' must fit one packet)",
                    config.book_depth
                ),
            ));
        }
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
        if let Some(lp) = &self.recovery
            && now >= self.loop_sent_at + SECOND
        {
            let hb = lp.heartbeat();
            let dest = lp.dest;
            self.out.send_recovery(dest, &hb);
            self.loop_sent_at = now;
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
        let per_symbol = if self.config.book_depth > 0 { 3 } else { 2 };
        let per_second = self.config.recovery_rate / (per_symbol * listed.max(1));
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

#[cfg(test)]
mod tests;
