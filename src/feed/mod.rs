//! Ingest: the feed sockets, sequencing and the path into the table.
//!
//! Runs on its own thread with its own single-threaded runtime, so client
//! work never delays a datagram and the ingest path never waits on a client.
//! Datagrams are drained in batches (`try_recv` until the socket is empty);
//! per batch, one table sequence update, one lag sample and one wake-up of
//! whoever listens for changes.

pub mod sequencer;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{FeedMetrics, LineCounters, ReasonLabel, SessionLabel, StatusLabel};
use crate::table::{Applied, Table};
use crate::wire::{DecodeError, Locate, Packet, Session, decode_message};
use sequencer::{Sequencer, SequencerConfig, SequencerStats, Sink};

/// Health of the feed as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedStatus {
    /// Packets (or heartbeats) arriving, no gap open.
    Live,
    /// Nothing heard for longer than the stale timeout (or never).
    Stale,
    /// A gap is open: later packets are held while it is repaired.
    Recovering,
}

impl FeedStatus {
    /// `live`, `stale` or `recovering`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedStatus::Live => "live",
            FeedStatus::Stale => "stale",
            FeedStatus::Recovering => "recovering",
        }
    }
}

/// Feed status and session, published to clients on every change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedState {
    /// Current status.
    pub status: FeedStatus,
    /// Current session (default before the first packet).
    pub session: Session,
}

/// Who hears about table changes: the fan-out hub, or nothing.
pub trait ChangeListener: Send + 'static {
    /// `locate` changed at feed sequence `seq`. Called per applied message.
    fn changed(&mut self, locate: Locate, seq: u64);
    /// A batch of datagrams is done; `last_seq` is applied.
    fn batch_done(&mut self, last_seq: u64);
    /// The table was reset for a new session.
    fn session_reset(&mut self, session: Session);
}

impl ChangeListener for () {
    fn changed(&mut self, _: Locate, _: u64) {}
    fn batch_done(&mut self, _: u64) {}
    fn session_reset(&mut self, _: Session) {}
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

/// Binds the configured lines and starts the ingest thread.
pub fn start(
    config: FeedConfig,
    table: Arc<Table>,
    metrics: FeedMetrics,
    listener: impl ChangeListener,
    cancel: CancellationToken,
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
            let s = std::net::UdpSocket::bind((config.interface, 0))?;
            s.connect(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .transpose()?;
    let (tx, rx) = watch::channel(FeedState {
        status: FeedStatus::Stale,
        session: Session::default(),
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
                match (to_tokio(a), to_tokio(b), to_tokio(r)) {
                    (Ok(a), Ok(b), Ok(r)) => {
                        let r = r.map(Arc::new);
                        let mut ingest =
                            Ingest::new(config, table, metrics, listener, tx, r.clone());
                        ingest
                            .run([a.map(Arc::new), b.map(Arc::new), r], cancel)
                            .await;
                    }
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
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

/// Most datagrams taken from one socket before looking at the other.
const BATCH: usize = 256;

struct Ingest<L> {
    config: FeedConfig,
    seq: Sequencer,
    out: Applier<L>,
    /// Receive counters of line A, line B and retransmitted packets.
    lines: [LineCounters; 3],
    metrics: FeedMetrics,
    reported: SequencerStats,
    /// Last feed position published to the table and the hub.
    published: u64,
    last_packet: Option<Instant>,
    state_tx: watch::Sender<FeedState>,
}

/// The sequencer's sink: decodes messages into the table.
struct Applier<L> {
    table: Arc<Table>,
    metrics: FeedMetrics,
    listener: L,
    last_ts: u64,
    applied: u64,
    session_changed: bool,
    retransmit: Option<Arc<UdpSocket>>,
}

impl<L: ChangeListener> Sink for Applier<L> {
    fn message(&mut self, seq: u64, payload: &[u8]) {
        match decode_message(payload) {
            Ok(msg) => match self.table.apply(seq, &msg) {
                Applied::Changed(locate) => {
                    self.applied += 1;
                    self.last_ts = msg.ts();
                    self.listener.changed(locate, seq);
                }
                Applied::Unchanged => self.applied += 1,
                Applied::UnknownLocate => {
                    self.metrics
                        .dropped
                        .get_or_create(&ReasonLabel {
                            reason: "unknown_locate",
                        })
                        .inc();
                }
            },
            Err(e) => {
                self.metrics
                    .decode_errors
                    .get_or_create(&ReasonLabel { reason: e.reason() })
                    .inc();
            }
        }
        self.table.set_last_seq(seq);
    }

    fn new_session(&mut self, session: Session, first_seq: u64) {
        tracing::info!(session = %session, first_seq, "feed session started");
        self.table.reset(session);
        self.table.set_last_seq(first_seq.saturating_sub(1));
        self.listener.session_reset(session);
        self.session_changed = true;
    }

    fn end_of_session(&mut self, session: Session) {
        tracing::info!(session = %session, "feed session ended by the producer");
    }

    fn request_retransmit(&mut self, session: Session, seq: u64, count: u64) {
        let Some(sock) = &self.retransmit else { return };
        let count = count.clamp(1, u64::from(crate::retransmit::MAX_REQUEST)) as u16;
        let req = crate::retransmit::Request {
            session,
            seq,
            count,
        };
        // A full send buffer loses the request; the gap hold then counts the
        // messages lost, as it would without a server.
        match sock.try_send(&req.encode()) {
            Ok(_) => {
                self.metrics.retransmit_requests.inc();
            }
            Err(e) => tracing::debug!(error = %e, "retransmission request not sent"),
        }
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
        retransmit: Option<Arc<UdpSocket>>,
    ) -> Self {
        let seq = Sequencer::new(SequencerConfig {
            gap_hold: config.gap_hold,
            ..Default::default()
        });
        Ingest {
            config,
            seq,
            lines: [
                metrics.line("a"),
                metrics.line("b"),
                metrics.line("retransmit"),
            ],
            out: Applier {
                table,
                metrics: metrics.clone(),
                listener,
                last_ts: 0,
                applied: 0,
                session_changed: false,
                retransmit,
            },
            metrics,
            reported: SequencerStats::default(),
            published: 0,
            last_packet: None,
            state_tx,
        }
    }

    async fn run(&mut self, sockets: [Option<Arc<UdpSocket>>; 3], cancel: CancellationToken) {
        let mut buf = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let [a, b, r] = sockets;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                res = readable(&a) => if res.is_ok() { self.drain(a.as_deref(), 0, &mut buf) },
                res = readable(&b) => if res.is_ok() { self.drain(b.as_deref(), 1, &mut buf) },
                res = readable(&r) => if res.is_ok() { self.drain(r.as_deref(), 2, &mut buf) },
                _ = tick.tick() => {
                    self.seq.on_tick(Instant::now(), &mut self.out);
                    self.end_batch();
                }
            }
        }
    }

    fn drain(&mut self, sock: Option<&UdpSocket>, line: usize, buf: &mut [u8]) {
        let Some(sock) = sock else { return };
        let now = Instant::now();
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
        self.end_batch();
    }

    fn datagram(&mut self, raw: &[u8], line: usize, now: Instant) {
        let line = &self.lines[line];
        line.packets.inc();
        line.bytes.inc_by(raw.len() as u64);
        match Packet::parse(raw) {
            Ok(packet) => {
                line.messages.inc_by(u64::from(packet.count));
                self.last_packet = Some(now);
                self.seq.on_packet(&packet, raw, now, &mut self.out);
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
                    reason: "stale_session",
                })
                .inc_by(st.stale_session_packets - r.stale_session_packets);
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

        let applied = std::mem::take(&mut self.out.applied);
        let last = self.seq.next_seq().saturating_sub(1);
        if applied > 0 {
            self.metrics.applied.inc_by(applied);
            if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
                let lag_ns = (now.as_nanos() as u64).saturating_sub(self.out.last_ts);
                self.metrics.lag.observe(lag_ns as f64 / 1e9);
            }
        }
        // The position moves on losses too (a lost tail, a heartbeat past a
        // gap): publish it whenever it moved, not only when something applied.
        if applied > 0 || last != self.published {
            self.published = last;
            self.out.table.set_last_seq(last);
            self.metrics.sequence.set(last as i64);
            self.metrics
                .symbols
                .set(self.out.table.symbol_count() as i64);
            self.out.listener.batch_done(last);
        }
        self.update_status();
    }

    fn update_status(&mut self) {
        let status = match self.last_packet {
            Some(t) if t.elapsed() < self.config.stale_after => {
                if self.seq.in_gap() {
                    FeedStatus::Recovering
                } else {
                    FeedStatus::Live
                }
            }
            _ => FeedStatus::Stale,
        };
        let session = self.seq.session().unwrap_or_default();
        let new = FeedState { status, session };
        let old = *self.state_tx.borrow();
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
            for s in [FeedStatus::Live, FeedStatus::Stale, FeedStatus::Recovering] {
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
