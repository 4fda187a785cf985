//! Gap repair: the MoldUDP64-style retransmission request and the server
//! that answers it.
//!
//! A request is a 20-byte datagram laid out like a packet header: session,
//! first missing sequence, message count. The server keeps the producer's
//! recent packets and answers a request by sending again, unicast to the
//! requester, every packet that overlaps the asked range; the relay's
//! sequencer takes what it needs from them (overlaps apply only their tail).

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::wire::{HEADER_LEN, Packet, PacketKind, Session, header};

/// Most messages one request may ask for.
pub const MAX_REQUEST: u16 = u16::MAX - 1;

/// A retransmission request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Session the messages belong to.
    pub session: Session,
    /// First missing sequence.
    pub seq: u64,
    /// Number of messages asked for.
    pub count: u16,
}

impl Request {
    /// The datagram.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        header(self.session, self.seq, self.count)
    }

    /// Parses a request datagram; `None` if it is not exactly one.
    pub fn parse(datagram: &[u8]) -> Option<Request> {
        if datagram.len() != HEADER_LEN {
            return None;
        }
        let mut session = [0u8; 10];
        session.copy_from_slice(&datagram[..10]);
        let seq = u64::from_be_bytes(datagram[10..18].try_into().ok()?);
        let count = u16::from_be_bytes([datagram[18], datagram[19]]);
        // 0 and 0xFFFF mean heartbeat and end of session in a packet: never a request.
        (count != 0 && count != 0xFFFF).then_some(Request {
            session: Session(session),
            seq,
            count,
        })
    }
}

/// Recent packets of one producer, by first sequence, bounded in messages.
#[derive(Debug)]
pub struct History {
    session: Session,
    packets: BTreeMap<u64, Arc<[u8]>>,
    messages: u64,
    max_messages: u64,
}

impl History {
    /// Keeps about `max_messages` of the newest messages of `session`.
    pub fn new(session: Session, max_messages: u64) -> Self {
        History {
            session,
            packets: BTreeMap::new(),
            messages: 0,
            max_messages,
        }
    }

    /// Records a packet as it was sent.
    pub fn record(&mut self, packet: &[u8]) {
        let Ok(p) = Packet::parse(packet) else { return };
        if p.kind != PacketKind::Data || p.session != self.session {
            return;
        }
        self.messages += u64::from(p.count);
        self.packets.insert(p.seq, Arc::from(packet));
        while self.messages > self.max_messages {
            let Some((_, old)) = self.packets.pop_first() else {
                break;
            };
            if let Ok(o) = Packet::parse(&old) {
                self.messages -= u64::from(o.count);
            }
        }
    }

    /// The packets that overlap `[seq, seq + count)`, oldest first.
    pub fn answer(&self, req: &Request) -> Vec<Arc<[u8]>> {
        if req.session != self.session || req.count == 0 {
            return Vec::new();
        }
        let end = req.seq.saturating_add(u64::from(req.count));
        // The packet starting at or before `seq` may cover it.
        let first = self
            .packets
            .range(..=req.seq)
            .next_back()
            .map_or(req.seq, |(&k, _)| k);
        self.packets
            .range(first..end)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Packets sent again.
    pub packets: AtomicU64,
}

/// Serves retransmission requests from a shared [`History`] until `stop`.
pub fn serve(
    socket: UdpSocket,
    history: Arc<Mutex<History>>,
    stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let (n, from): (usize, SocketAddr) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(req) = Request::parse(&buf[..n]) else {
            continue;
        };
        let packets = history.lock().answer(&req);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        for p in packets {
            if socket.send_to(&p, from).is_ok() {
                stats.packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(n: u64) -> Vec<Vec<u8>> {
        crate::wire::testing::trade_packets("R", n, 3)
    }

    #[test]
    fn request_round_trip() {
        let r = Request {
            session: Session::new("R"),
            seq: 42,
            count: 7,
        };
        assert_eq!(Request::parse(&r.encode()), Some(r));
        assert_eq!(
            Request::parse(&header(Session::new("R"), 1, 0)),
            None,
            "a heartbeat is no request"
        );
        assert_eq!(Request::parse(&[0; 5]), None);
    }

    #[test]
    fn history_answers_overlapping_packets_and_stays_bounded() {
        let mut h = History::new(Session::new("R"), 9);
        for p in packets(30) {
            h.record(&p);
        }
        // Packets start at 1, 4, 7, …; only the newest 9 messages are kept: 22..30.
        let got = h.answer(&Request {
            session: Session::new("R"),
            seq: 23,
            count: 4,
        });
        let starts: Vec<u64> = got.iter().map(|p| Packet::parse(p).unwrap().seq).collect();
        assert_eq!(starts, vec![22, 25]);
        assert!(
            h.answer(&Request {
                session: Session::new("R"),
                seq: 2,
                count: 3
            })
            .is_empty()
        );
        assert!(
            h.answer(&Request {
                session: Session::new("X"),
                seq: 23,
                count: 4
            })
            .is_empty()
        );
    }
}
