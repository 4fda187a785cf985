//! Where finished packets go: the feed lines with their injected faults, the
//! retransmission history, the recovery group (never faulted) — or nowhere,
//! when the engine fast-forwards without sockets.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::SmallRng;

use crate::retransmit::History;

/// Live counters, readable while the engine runs.
#[derive(Debug, Default)]
pub struct SimCounters {
    /// Messages sent on the feed (directory included).
    pub messages: AtomicU64,
    /// Datagrams sent, per line.
    pub packets: AtomicU64,
    /// Datagram bytes sent.
    pub bytes: AtomicU64,
    /// Send errors (e.g. ENOBUFS), counted and skipped.
    pub send_errors: AtomicU64,
    /// Messages sent on the recovery loop.
    pub recovery_messages: AtomicU64,
    /// Book levels (`'L'`) sent on the feed, within `messages`.
    pub book_messages: AtomicU64,
}

/// One feed line's destination, with the packet reordering holds back.
pub(crate) struct Line {
    pub(crate) dest: SocketAddr,
    pub(crate) delayed: Option<Vec<u8>>,
}

/// The injected faults, in per-mille of packets per line.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    pub(crate) loss: u32,
    pub(crate) reorder: u32,
    pub(crate) duplicate: u32,
}

/// The engine's output.
pub(crate) struct Output {
    /// `None` when fast-forwarding: packets are built and counted, not sent.
    pub(crate) socket: Option<UdpSocket>,
    pub(crate) lines: Vec<Line>,
    pub(crate) counters: Arc<SimCounters>,
    pub(crate) rng: SmallRng,
    pub(crate) faults: Faults,
    pub(crate) history: Option<Arc<Mutex<History>>>,
    /// Every datagram with its destination, in send order (unit tests).
    pub(crate) capture: Option<Vec<(SocketAddr, Vec<u8>)>>,
}

impl Output {
    /// Sends one finished feed packet on every line, applying the faults.
    pub(crate) fn emit(&mut self, packet: &[u8]) {
        if let Some(h) = &self.history {
            h.lock().record(packet);
        }
        for i in 0..self.lines.len() {
            let f = self.faults;
            if f.loss > 0 && self.rng.gen_range(0..1000) < f.loss {
                continue;
            }
            if f.reorder > 0
                && self.lines[i].delayed.is_none()
                && self.rng.gen_range(0..1000) < f.reorder
            {
                self.lines[i].delayed = Some(packet.to_vec());
                continue;
            }
            let dest = self.lines[i].dest;
            self.send(dest, packet);
            if let Some(p) = self.lines[i].delayed.take() {
                self.send(dest, &p);
            }
            if f.duplicate > 0 && self.rng.gen_range(0..1000) < f.duplicate {
                self.send(dest, packet);
            }
        }
    }

    /// Sends a packet on every feed line without faults (heartbeats, end of session).
    pub(crate) fn send_all(&mut self, packet: &[u8]) {
        for i in 0..self.lines.len() {
            let dest = self.lines[i].dest;
            self.send(dest, packet);
        }
    }

    /// Sends what reordering still holds back.
    pub(crate) fn release_delayed(&mut self) {
        for i in 0..self.lines.len() {
            if let Some(p) = self.lines[i].delayed.take() {
                let dest = self.lines[i].dest;
                self.send(dest, &p);
            }
        }
    }

    /// Sends one feed datagram to `dest` as it is.
    pub(crate) fn send(&mut self, dest: SocketAddr, packet: &[u8]) {
        if let Some(n) = self.transmit(dest, packet) {
            self.counters.packets.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Sends one recovery-loop datagram: no faults, not in the feed's counts.
    pub(crate) fn send_recovery(&mut self, dest: SocketAddr, packet: &[u8]) {
        self.transmit(dest, packet);
    }

    /// The bytes sent (or built, when fast-forwarding), or `None` after a
    /// send error, which is counted.
    fn transmit(&mut self, dest: SocketAddr, packet: &[u8]) -> Option<usize> {
        if let Some(c) = &mut self.capture {
            c.push((dest, packet.to_vec()));
        }
        let Some(socket) = &self.socket else {
            // Fast-forward: the packet counts as built.
            return Some(packet.len());
        };
        match socket.send_to(packet, dest) {
            Ok(n) => Some(n),
            Err(_) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}
