//! Ingest: the feed sockets, sequencing and the path into the table.
//!
//! Runs on its own thread with its own single-threaded runtime, so client
//! work never delays a datagram and the ingest path never waits on a client.
//! Datagrams are drained in batches (`try_recv` until the socket is empty);
//! per batch, one table sequence update, one lag sample and one wake-up of
//! whoever listens for changes. What the sequencer's output does to the
//! table, the listener and recovery lives in `apply`.

mod apply;
pub mod recovery;
pub mod sequencer;
pub mod status;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::feed::status::DropReason;
use crate::feed::status::FeedStatus;
use crate::metrics::{FeedMetrics, LineCounters, ReasonLabel, SessionLabel, StatusLabel};
use crate::nats::{Forward, NatsPacket, NatsTarget};
use crate::table::ChangeListener;
use crate::table::Table;
use crate::wire::{DecodeError, Packet, Session};
use apply::{Applier, Recovery, Repair};
use sequencer::{Sequencer, SequencerConfig, SequencerStats};

/// Feed status and session, published to clients on every change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedState {
    /// Current status.
    pub status: FeedStatus,
    /// Current session (default before the first packet).
    pub session: Session,
    /// Whether the table holds every symbol's whole state: false from a
    /// late join or an unrepaired loss until recovery completes.
    pub complete: bool,
    /// Messages of this session given up by gap repair.
    pub lost: u64,
    /// Symbols that may lack changes the relay missed (refreshed about once a
    /// second while recovering).
    pub incomplete: u32,
}

/// Ingest settings.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Line A group (or unicast address) and port.
    pub line_a: Option<SocketAddrV4>,
    /// Line B group and port.
    pub line_b: Option<SocketAddrV4>,
    /// The producer's retransmission server, asked to fill gaps.
    pub retransmit: Option<SocketAddrV4>,
    /// The producer's recovery line (snapshot loop), joined to rebuild state.
    pub recovery: Option<SocketAddrV4>,
    /// A JetStream stream read as one more feed line (and asked for
    /// retransmissions); or, for `tickrelay bridge`, the stream published to.
    pub nats: Option<NatsTarget>,
    /// Interface address to join multicast groups on.
    pub interface: Ipv4Addr,
    /// Requested SO_RCVBUF in bytes.
    pub rcvbuf: usize,
    /// Gap hold time.
    pub gap_hold: Duration,
    /// No packet for this long makes the feed stale.
    pub stale_after: Duration,
}

/// Opens a feed socket: joins `addr` on `interface` when it is a multicast
/// group, otherwise binds it as plain unicast UDP.
pub fn open_socket(
    addr: SocketAddrV4,
    interface: Ipv4Addr,
    rcvbuf: usize,
) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if let Err(e) = socket.set_recv_buffer_size(rcvbuf) {
        tracing::warn!(error = %e, requested = rcvbuf, "could not set SO_RCVBUF");
    }
    // Linux reports double the usable size; less than asked means clamped.
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < rcvbuf {
        tracing::warn!(
            requested = rcvbuf,
            granted = got,
            "kernel clamped SO_RCVBUF; raise net.core.rmem_max to avoid drops in bursts"
        );
    }
    if addr.ip().is_multicast() {
        // Binding the group address (not 0.0.0.0) keeps other groups on the
        // same port out of this socket.
        socket.bind(&SocketAddr::V4(addr).into())?;
        socket.join_multicast_v4(addr.ip(), &interface)?;
    } else {
        socket.bind(&SocketAddr::V4(addr).into())?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A running ingest thread.
pub struct FeedHandle {
    /// Status and session, for readiness and client pushes.
    pub state: watch::Receiver<FeedState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FeedHandle {
    /// Waits for the ingest thread to finish (after cancellation).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the ingest may be given besides its sockets.
#[derive(Debug, Default)]
pub struct Extras {
    /// Where every datagram that moved the feed on goes (the bridge).
    pub forward: Option<Forward>,
    /// A NATS stream read as a feed line (`config.nats` is not opened by
    /// the ingest itself: the line's task runs on the caller's runtime).
    pub nats: Option<crate::nats::Line>,
}

/// Binds the configured lines and starts the ingest thread.
pub fn start(
    config: FeedConfig,
    table: Arc<Table>,
    metrics: FeedMetrics,
    listener: impl ChangeListener,
    cancel: CancellationToken,
) -> io::Result<FeedHandle> {
    start_with(config, table, metrics, listener, cancel, Extras::default())
}

/// [`start`], with a packet-out hook and a NATS line.
pub fn start_with(
    config: FeedConfig,
    table: Arc<Table>,
    metrics: FeedMetrics,
    listener: impl ChangeListener,
    cancel: CancellationToken,
    extras: Extras,
) -> io::Result<FeedHandle> {
    let a = config
        .line_a
        .map(|addr| open_socket(addr, config.interface, config.rcvbuf))
        .transpose()?;
    let b = config
        .line_b
        .map(|addr| open_socket(addr, config.interface, config.rcvbuf))
        .transpose()?;
    let r = config
        .retransmit
        .map(|addr| -> io::Result<std::net::UdpSocket> {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            // Answers come in bursts (a backfill asks for thousands of
            // messages): the same buffer as the feed lines.
            let _ = s.set_recv_buffer_size(config.rcvbuf);
            s.bind(&SocketAddr::V4(SocketAddrV4::new(config.interface, 0)).into())?;
            s.connect(&SocketAddr::V4(addr).into())?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        })
        .transpose()?;
    let l = config
        .recovery
        .map(|addr| open_socket(addr, config.interface, config.rcvbuf))
        .transpose()?;
    let (tx, rx) = watch::channel(FeedState {
        status: FeedStatus::Stale,
        session: Session::default(),
        complete: true,
        lost: 0,
        incomplete: 0,
    });
    let thread = std::thread::Builder::new()
        .name("tickrelay-ingest".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "could not start the ingest runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let to_tokio =
                    |s: Option<std::net::UdpSocket>| s.map(UdpSocket::from_std).transpose();
                match (to_tokio(a), to_tokio(b), to_tokio(r), to_tokio(l)) {
                    (Ok(a), Ok(b), Ok(r), Ok(l)) => {
                        let r = r.map(Arc::new);
                        let (nats_rx, nats_requests) = match extras.nats {
                            Some(line) => (Some(line.packets), Some(line.requests)),
                            None => (None, None),
                        };
                        let mut ingest = Ingest::new(
                            config,
                            table,
                            metrics,
                            listener,
                            tx,
                            Repair {
                                udp: r.clone(),
                                nats: nats_requests,
                            },
                            extras.forward,
                        );
                        ingest
                            .run(
                                [a.map(Arc::new), b.map(Arc::new), r, l.map(Arc::new)],
                                nats_rx,
                                cancel,
                            )
                            .await;
                    }
                    (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                        tracing::error!(error = %e, "could not register feed sockets")
                    }
                }
            });
        })?;
    Ok(FeedHandle {
        state: rx,
        thread: Some(thread),
    })
}

/// Most datagrams taken from one socket per turn of the ingest loop.
const BATCH: usize = 256;
/// The ingest loop's timer: gap holds and recovery are checked this often.
const TICK: Duration = Duration::from_millis(10);
/// A turn this long after the last one means the relay was not running.
const STALL: Duration = Duration::from_millis(50);

struct Ingest<L> {
    config: FeedConfig,
    seq: Sequencer,
    out: Applier<L>,
    /// Receive counters of line A, line B, retransmitted packets, the
    /// recovery line and the NATS line.
    lines: [LineCounters; 5],
    metrics: FeedMetrics,
    reported: SequencerStats,
    /// The table's book counts (changes, levels dropped) last published.
    books_reported: (u64, u64),
    /// Last feed position published to the table and the hub.
    published: u64,
    last_packet: Option<Instant>,
    state_tx: watch::Sender<FeedState>,
    /// When the incomplete count was last published.
    incomplete_published: Instant,
}

async fn recv_nats(rx: &mut Option<mpsc::Receiver<NatsPacket>>) -> Option<NatsPacket> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn readable(sock: &Option<Arc<UdpSocket>>) -> io::Result<()> {
    match sock {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

impl<L: ChangeListener> Ingest<L> {
    fn new(
        config: FeedConfig,
        table: Arc<Table>,
        metrics: FeedMetrics,
        listener: L,
        state_tx: watch::Sender<FeedState>,
        retransmit: Repair,
        forward: Option<Forward>,
    ) -> Self {
        let seq = Sequencer::new(SequencerConfig {
            gap_hold: config.gap_hold,
            ..Default::default()
        });
        let has_loop = config.recovery.is_some();
        let nats_line = config.nats.is_some() && forward.is_none();
        Ingest {
            config,
            seq,
            lines: [
                metrics.line("a"),
                metrics.line("b"),
                metrics.line("retransmit"),
                metrics.line("recovery"),
                if nats_line {
                    metrics.line("nats")
                } else {
                    LineCounters::default()
                },
            ],
            out: Applier {
                table,
                metrics: metrics.clone(),
                listener,
                last_ts: 0,
                applied: 0,
                session_changed: false,
                retransmit,
                recovery: Recovery::new(has_loop),
                forward,
            },
            metrics,
            reported: SequencerStats::default(),
            books_reported: (0, 0),
            published: 0,
            last_packet: None,
            state_tx,
            incomplete_published: Instant::now(),
        }
    }

    async fn run(
        &mut self,
        sockets: [Option<Arc<UdpSocket>>; 4],
        mut nats: Option<mpsc::Receiver<NatsPacket>>,
        cancel: CancellationToken,
    ) {
        let mut buf = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let [a, b, r, l] = sockets;
        // Retransmitted packets first: they close gaps that the lines' packets
        // would otherwise give up on; then the lines and the recovery loop.
        let order = [(&r, 2), (&a, 0), (&b, 1), (&l, 3)];
        let mut last_turn = Instant::now();
        loop {
            // Whichever woke the loop, every socket is read each turn (up to
            // BATCH datagrams each), so no line can starve another.
            let ticked = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = readable(&a) => false,
                _ = readable(&b) => false,
                _ = readable(&r) => false,
                _ = readable(&l) => false,
                first = recv_nats(&mut nats) => {
                    match first {
                        Some(first) => self.drain_nats(first, nats.as_mut()),
                        None => {
                            tracing::warn!("NATS line closed");
                            nats = None;
                        }
                    }
                    false
                }
                _ = tick.tick() => true,
            };
            let now = Instant::now();
            // Turns start at least every TICK. A longer time since the last
            // start means the relay was not running (stopped, starved of CPU),
            // in the wait or in the middle of the last turn: the other line
            // and the retransmission server could not be heard meanwhile, so
            // that time does not count against the gap hold.
            let paused = now.saturating_duration_since(last_turn);
            if paused > STALL {
                self.seq.stalled(paused - TICK);
            }
            last_turn = now;
            for (sock, line) in order {
                self.drain(sock.as_deref(), line, &mut buf, now);
            }
            if ticked {
                self.seq.on_tick(now, &mut self.out);
                self.out.recovery_tick(now, self.seq.session());
            }
            self.end_batch();
        }
    }

    fn drain(&mut self, sock: Option<&UdpSocket>, line: usize, buf: &mut [u8], now: Instant) {
        let Some(sock) = sock else { return };
        for _ in 0..BATCH {
            match sock.try_recv(buf) {
                Ok(n) => self.datagram(&buf[..n], line, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ECONNREFUSED from a retransmission server that is not
                    // there lands here too: not fatal.
                    tracing::debug!(error = %e, line, "feed receive error");
                    break;
                }
            }
        }
    }

    /// Stream packets as they come, up to a batch: live ones as line `nats`
    /// (arbitrated like line B), answers to requests as retransmissions.
    fn drain_nats(&mut self, first: NatsPacket, mut rx: Option<&mut mpsc::Receiver<NatsPacket>>) {
        let now = Instant::now();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(p) = next.take() {
            let line = if p.retransmit { 2 } else { 4 };
            self.datagram(&p.raw, line, now);
            taken += 1;
            if taken < BATCH {
                next = rx.as_deref_mut().and_then(|r| r.try_recv().ok());
            }
        }
        self.end_batch();
    }

    fn datagram(&mut self, raw: &[u8], line: usize, now: Instant) {
        let counters = &self.lines[line];
        counters.packets.inc();
        counters.bytes.inc_by(raw.len() as u64);
        match Packet::parse(raw) {
            Ok(packet) => {
                counters.messages.inc_by(u64::from(packet.count));
                match line {
                    // The recovery line is not the feed: it never starts a
                    // session or moves the feed position.
                    3 => self.out.recovery_packet(&packet, self.seq.session()),
                    2 => {
                        self.out.retransmitted(&packet, raw);
                        if packet.session == self.seq.session().unwrap_or_default()
                            && packet.end_seq() > self.seq.next_seq()
                        {
                            self.seq.on_packet(&packet, raw, now, &mut self.out);
                        }
                    }
                    _ => {
                        self.last_packet = Some(now);
                        self.seq.on_packet(&packet, raw, now, &mut self.out);
                    }
                }
            }
            Err(e) => self.decode_error(e),
        }
    }

    fn decode_error(&self, e: DecodeError) {
        self.metrics
            .decode_errors
            .get_or_create(&ReasonLabel { reason: e.reason() })
            .inc();
    }

    /// Once per batch: publish counters, the sequence, lag and status.
    fn end_batch(&mut self) {
        let st = self.seq.stats();
        let r = self.reported;
        self.metrics
            .duplicates
            .inc_by(st.duplicate_messages - r.duplicate_messages);
        self.metrics
            .gaps_opened
            .inc_by(st.gaps_opened - r.gaps_opened);
        self.metrics
            .gaps_repaired
            .inc_by(st.gaps_repaired - r.gaps_repaired);
        self.metrics.lost.inc_by(st.lost_messages - r.lost_messages);
        if st.stale_session_packets > r.stale_session_packets {
            self.metrics
                .dropped
                .get_or_create(&ReasonLabel {
                    reason: DropReason::StaleSession.as_str(),
                })
                .inc_by(st.stale_session_packets - r.stale_session_packets);
        }
        if st.unconfirmed_session_packets > r.unconfirmed_session_packets {
            self.metrics
                .dropped
                .get_or_create(&ReasonLabel {
                    reason: DropReason::UnconfirmedSession.as_str(),
                })
                .inc_by(st.unconfirmed_session_packets - r.unconfirmed_session_packets);
        }
        if st.sessions_confirmed > r.sessions_confirmed {
            tracing::info!(
                session = %self.seq.session().unwrap_or_default(),
                "new feed session believed on its second packet in sequence"
            );
        }
        if st.lost_messages > r.lost_messages {
            tracing::warn!(
                lost = st.lost_messages - r.lost_messages,
                resumed_at = self.seq.next_seq(),
                "feed messages lost: given up after the gap hold"
            );
        }
        if st.gaps_opened > r.gaps_opened {
            tracing::info!(next_seq = self.seq.next_seq(), "feed gap opened");
        }
        self.reported = st;
        self.out.settle_books();
        let books = self.out.table.books();
        let (changes, dropped) = (books.changes(), books.dropped());
        let (was_changes, was_dropped) = self.books_reported;
        self.metrics.book_messages.inc_by(changes - was_changes);
        self.metrics
            .book_levels_dropped
            .inc_by(dropped - was_dropped);
        self.books_reported = (changes, dropped);

        let applied = std::mem::take(&mut self.out.applied);
        let position = self.seq.next_seq().saturating_sub(1);
        // What clients are promised: held back while recovery can still
        // bring back changes older than the feed position.
        let last = self.out.recovery.promise(position);
        if applied > 0 {
            self.metrics.applied.inc_by(applied);
            let lag_ns = crate::clock::now_ns().saturating_sub(self.out.last_ts);
            self.metrics.lag.observe(lag_ns as f64 / 1e9);
        }
        // The position moves on losses too (a lost tail, a heartbeat past a
        // gap): publish it whenever it moved, not only when something applied.
        if applied > 0 || last != self.published {
            self.published = last;
            self.out.table.set_last_seq(last);
            self.metrics.sequence.set(position as i64);
            self.metrics
                .symbols
                .set(self.out.table.symbol_count() as i64);
            self.out.listener.batch_done(last);
        }
        self.update_status();
    }

    fn update_status(&mut self) {
        let recovering = self.out.recovery.need.is_some();
        let status = match self.last_packet {
            Some(t) if t.elapsed() < self.config.stale_after => {
                if self.seq.in_gap() || recovering {
                    FeedStatus::Recovering
                } else {
                    FeedStatus::Live
                }
            }
            _ => FeedStatus::Stale,
        };
        let session = self.seq.session().unwrap_or_default();
        let incomplete = self.out.recovery.suspects.count() as u32;
        self.metrics.incomplete.set(i64::from(incomplete));
        let old = *self.state_tx.borrow();
        // The incomplete count moves with every refreshed symbol: publish it
        // with other news, or at most once a second.
        let incomplete = if old.incomplete != incomplete
            && (old.status != status
                || old.complete == recovering
                || self.incomplete_published.elapsed() >= Duration::from_secs(1))
        {
            self.incomplete_published = Instant::now();
            incomplete
        } else {
            old.incomplete
        };
        let new = FeedState {
            status,
            session,
            complete: !recovering,
            lost: self.out.recovery.session_lost,
            incomplete,
        };
        if old == new && !self.out.session_changed {
            return;
        }
        self.out.session_changed = false;
        if old.status != status {
            tracing::info!(
                from = old.status.as_str(),
                to = status.as_str(),
                "feed status changed"
            );
            for s in FeedStatus::ALL {
                self.metrics
                    .status
                    .get_or_create(&StatusLabel { status: s.as_str() })
                    .set(i64::from(s == status));
            }
        }
        if old.session != session {
            self.metrics.session.clear();
            self.metrics
                .session
                .get_or_create(&SessionLabel {
                    session: session.to_string(),
                })
                .set(1);
        }
        self.metrics
            .symbols
            .set(self.out.table.symbol_count() as i64);
        self.state_tx.send_replace(new);
    }
}
