//! Writing packets: [`PacketBuilder`] packs messages into numbered packets
//! of at most [`MAX_PACKET`] bytes; [`header`] encodes a packet header
//! (heartbeats and ends of session are a header alone).

use super::{COUNT_END_OF_SESSION, COUNT_HEARTBEAT, HEADER_LEN, MAX_PACKET, Message, Session};

/// Packs messages into packets of at most [`MAX_PACKET`] bytes, numbering
/// them from the session's next sequence.
#[derive(Debug)]
pub struct PacketBuilder {
    session: Session,
    next_seq: u64,
    buf: Vec<u8>,
    count: u16,
    scratch: Vec<u8>,
    max_messages: u16,
}

impl PacketBuilder {
    /// A builder whose first message gets sequence `first_seq`.
    pub fn new(session: Session, first_seq: u64) -> Self {
        let mut b = PacketBuilder {
            session,
            next_seq: first_seq,
            buf: Vec::with_capacity(MAX_PACKET),
            count: 0,
            scratch: Vec::with_capacity(256),
            max_messages: u16::MAX - 1,
        };
        b.reset_header();
        b
    }

    /// Caps the number of messages per packet (e.g. 1 for one message per datagram).
    pub fn with_max_messages(mut self, n: u16) -> Self {
        self.max_messages = n.clamp(1, u16::MAX - 1);
        self
    }

    /// The sequence the next pushed message will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The session this builder writes.
    pub fn session(&self) -> Session {
        self.session
    }

    /// Messages in the packet being built.
    pub fn pending(&self) -> u16 {
        self.count
    }

    /// Adds a message. When it does not fit, the current packet is finished
    /// first and handed to `emit`. Returns the message's sequence number.
    pub fn push(&mut self, msg: &Message<'_>, emit: &mut impl FnMut(&[u8])) -> u64 {
        self.scratch.clear();
        msg.encode(&mut self.scratch);
        let need = 2 + self.scratch.len();
        debug_assert!(
            HEADER_LEN + need <= MAX_PACKET,
            "one message must fit a packet"
        );
        if self.buf.len() + need > MAX_PACKET || self.count >= self.max_messages {
            self.flush(emit);
        }
        self.buf
            .extend_from_slice(&(self.scratch.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(&self.scratch);
        self.count += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Hands the packet being built to `emit`, if it holds any message.
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        if self.count == 0 {
            return;
        }
        self.buf[18..20].copy_from_slice(&self.count.to_be_bytes());
        emit(&self.buf);
        self.reset_header();
    }

    /// A heartbeat packet carrying the next expected sequence.
    pub fn heartbeat(&self) -> [u8; HEADER_LEN] {
        header(self.session, self.next_seq, COUNT_HEARTBEAT)
    }

    /// An end-of-session packet.
    pub fn end_of_session(&self) -> [u8; HEADER_LEN] {
        header(self.session, self.next_seq, COUNT_END_OF_SESSION)
    }

    fn reset_header(&mut self) {
        self.buf.clear();
        let first = self.next_seq;
        self.buf.extend_from_slice(&header(self.session, first, 0));
        self.count = 0;
    }
}

/// Encodes a packet header.
pub fn header(session: Session, seq: u64, count: u16) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..10].copy_from_slice(&session.0);
    h[10..18].copy_from_slice(&seq.to_be_bytes());
    h[18..20].copy_from_slice(&count.to_be_bytes());
    h
}
