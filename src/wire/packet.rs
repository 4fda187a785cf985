//! Reading a datagram: [`Packet::parse`] checks the header and the message
//! framing (not the messages), [`Messages`] walks the payloads it framed.

use super::{
    COUNT_END_OF_SESSION, COUNT_HEARTBEAT, DecodeError, HEADER_LEN, Session, decode_message,
};

/// What a packet is, by its message count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// Messages follow.
    Data,
    /// No messages; `seq` is the next sequence the producer will send.
    Heartbeat,
    /// The session is over; `seq` is one past its last message.
    EndOfSession,
}

/// A validated packet borrowing the datagram it came from.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The producer's session.
    pub session: Session,
    /// Sequence number of the first message (or the next one, for heartbeats).
    pub seq: u64,
    /// Data, heartbeat or end of session.
    pub kind: PacketKind,
    /// Number of messages (0 unless `kind` is `Data`).
    pub count: u16,
    body: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Validates the header and the message framing of a datagram: the session
    /// id is printable ASCII, a heartbeat or end of session is the header
    /// alone, and a data packet's messages end exactly at the end of the
    /// datagram. The messages themselves are decoded one by one with
    /// [`decode_message`].
    pub fn parse(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        if datagram.len() < HEADER_LEN {
            return Err(DecodeError::ShortHeader);
        }
        // Producers stay within MAX_PACKET; tolerate up to a jumbo-free MTU.
        if datagram.len() > 9000 {
            return Err(DecodeError::Oversized);
        }
        let mut session = [0u8; 10];
        session.copy_from_slice(&datagram[..10]);
        let session = Session(session);
        if !session.is_valid() {
            return Err(DecodeError::BadSession);
        }
        let seq = u64::from_be_bytes(
            datagram[10..18]
                .try_into()
                .map_err(|_| DecodeError::ShortHeader)?,
        );
        let count = u16::from_be_bytes([datagram[18], datagram[19]]);
        let body = &datagram[HEADER_LEN..];
        let (kind, count) = match count {
            COUNT_HEARTBEAT => (PacketKind::Heartbeat, 0),
            COUNT_END_OF_SESSION => (PacketKind::EndOfSession, 0),
            n => (PacketKind::Data, n),
        };
        if kind != PacketKind::Data && !body.is_empty() {
            // A heartbeat or end of session is a header alone.
            return Err(DecodeError::TrailingBytes);
        }
        if kind == PacketKind::Data {
            let mut rest = body;
            for _ in 0..count {
                if rest.len() < 2 {
                    return Err(DecodeError::CountOverrun);
                }
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if rest.len() - 2 < len {
                    return Err(DecodeError::LengthOverrun);
                }
                rest = &rest[2 + len..];
            }
            if !rest.is_empty() {
                return Err(DecodeError::TrailingBytes);
            }
        }
        Ok(Packet {
            session,
            seq,
            kind,
            count,
            body,
        })
    }

    /// Sequence number one past this packet's last message.
    pub fn end_seq(&self) -> u64 {
        self.seq.saturating_add(u64::from(self.count))
    }

    /// Whether every message decodes, or is of a type this relay does not
    /// know yet: a packet that passes is well-formed all the way down.
    pub fn messages_decode(&self) -> bool {
        self.messages()
            .all(|m| matches!(decode_message(m), Ok(_) | Err(DecodeError::UnknownType)))
    }

    /// The raw MessagePack bytes of each message, in order. Framing was
    /// checked by [`Packet::parse`].
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            rest: if self.kind == PacketKind::Data {
                self.body
            } else {
                &[]
            },
        }
    }
}

/// Iterator over a packet's message payloads.
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.rest[0], self.rest[1]]));
        let msg = self.rest.get(2..2 + len)?;
        self.rest = &self.rest[2 + len..];
        Some(msg)
    }
}
