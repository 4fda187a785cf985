//! The feed codec: MoldUDP64-style packets carrying MessagePack market events.
//!
//! Pure: no sockets, no clocks, no allocation on the decode path. Every
//! malformed input is an error value, never a panic — a datagram is untrusted
//! input. The layout is documented for other producers in docs/FEED.md.
//!
//! ```text
//! packet  = session[10] seq:u64be count:u16be message*
//! message = len:u16be msgpack[len]
//! ```

use std::fmt;

use crate::price::Price;

/// Size of the packet header: session, sequence, message count.
pub const HEADER_LEN: usize = 20;
/// Largest packet a producer may send (fits a 1,500-byte Ethernet MTU).
pub const MAX_PACKET: usize = 1400;
/// Message count of a heartbeat.
pub const COUNT_HEARTBEAT: u16 = 0;
/// Message count that ends the session.
pub const COUNT_END_OF_SESSION: u16 = 0xFFFF;

/// Message type code of a directory entry, `'D'`.
pub const TYPE_DIRECTORY: u64 = b'D' as u64;
/// Message type code of a quote update, `'Q'`.
pub const TYPE_QUOTE: u64 = b'Q' as u64;
/// Message type code of a trade, `'T'`.
pub const TYPE_TRADE: u64 = b'T' as u64;
/// Message type code of a recovery-loop state message, `'S'`.
pub const TYPE_STATE: u64 = b'S' as u64;

/// A symbol's locate code: the small integer a directory entry maps to a name,
/// so the hot path indexes an array instead of hashing a string.
pub type Locate = u16;

/// A feed session id: 10 ASCII bytes, space-padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Session(pub [u8; 10]);

impl Session {
    /// Pads or truncates `id` to 10 bytes. Non-ASCII bytes become `?`.
    pub fn new(id: &str) -> Self {
        let mut raw = [b' '; 10];
        for (dst, src) in raw.iter_mut().zip(id.bytes()) {
            *dst = if src.is_ascii_graphic() { src } else { b'?' };
        }
        Session(raw)
    }

    /// Whether this is a session id a producer may send: one or more
    /// printable ASCII characters (`!` … `~`), then spaces to the end.
    pub fn is_valid(&self) -> bool {
        let end = self.0.iter().position(|&b| b == b' ').unwrap_or(10);
        end > 0
            && self.0[..end].iter().all(u8::is_ascii_graphic)
            && self.0[end..].iter().all(|&b| b == b' ')
    }

    /// The id without its space padding.
    pub fn as_str(&self) -> &str {
        let end = self.0.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        // Bytes from the wire may be anything; show non-UTF-8 as empty.
        std::str::from_utf8(&self.0[..end]).unwrap_or("")
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session({:?})", self.as_str())
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Why a packet or message could not be decoded. Each variant is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 20-byte header.
    #[error("datagram shorter than the packet header")]
    ShortHeader,
    /// Longer than any producer may send.
    #[error("datagram longer than the packet limit")]
    Oversized,
    /// The session id is not printable ASCII, space-padded.
    #[error("session id is not printable ASCII")]
    BadSession,
    /// A message's length prefix runs past the end of the datagram.
    #[error("message length runs past the datagram")]
    LengthOverrun,
    /// The count promises more messages than the datagram holds.
    #[error("message count runs past the datagram")]
    CountOverrun,
    /// Bytes left over after the last counted message.
    #[error("bytes after the last message")]
    TrailingBytes,
    /// The message is not the MessagePack array its type promises.
    #[error("malformed MessagePack")]
    BadMsgpack,
    /// A field is out of range (locate above 65,535, negative size, ...).
    #[error("field out of range")]
    BadField,
    /// A well-formed message of a type this relay does not know.
    #[error("unknown message type")]
    UnknownType,
}

impl DecodeError {
    /// A stable snake_case name, used as the `reason` metric label.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::ShortHeader => "short_header",
            DecodeError::Oversized => "oversized",
            DecodeError::BadSession => "bad_session",
            DecodeError::LengthOverrun => "length_overrun",
            DecodeError::CountOverrun => "count_overrun",
            DecodeError::TrailingBytes => "trailing_bytes",
            DecodeError::BadMsgpack => "bad_msgpack",
            DecodeError::BadField => "bad_field",
            DecodeError::UnknownType => "unknown_type",
        }
    }
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

/// One market event, borrowing strings from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `[68, locate, ts, symbol, name, prev_close]`
    Directory {
        /// Locate code this entry defines.
        locate: Locate,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// Ticker, e.g. `AAPL`.
        symbol: &'a str,
        /// Company name.
        name: &'a str,
        /// Previous session's closing price.
        prev_close: Price,
    },
    /// `[81, locate, ts, bid, ask, bid_size, ask_size]`
    Quote {
        /// Symbol's locate code.
        locate: Locate,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// Best bid.
        bid: Price,
        /// Best ask.
        ask: Price,
        /// Shares at the bid.
        bid_size: u32,
        /// Shares at the ask.
        ask_size: u32,
    },
    /// `[84, locate, ts, price, size, volume]`
    Trade {
        /// Symbol's locate code.
        locate: Locate,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// Trade price.
        price: Price,
        /// Shares traded.
        size: u32,
        /// Cumulative session volume after this trade.
        volume: u64,
    },
    /// `[83, locate, ts, quote_seq, bid, ask, bid_size, ask_size, trade_seq,
    /// last, last_size, volume]`: a symbol's whole state, sent on the recovery
    /// line. Each half carries the incremental-feed sequence of the last
    /// message it reflects, so a relay applies it only if it is newer.
    State {
        /// Symbol's locate code.
        locate: Locate,
        /// Exchange timestamp of the symbol's last change, ns since the Unix epoch.
        ts: u64,
        /// The last quote, if the symbol has had one (`quote_seq` 0 and nil
        /// fields on the wire when not).
        quote: Option<StateQuote>,
        /// The last trade, if the symbol has traded (`trade_seq` 0 and nil
        /// fields when not).
        trade: Option<StateTrade>,
    },
}

/// The quote half of a [`Message::State`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateQuote {
    /// Incremental-feed sequence of the quote this reflects (never 0).
    pub seq: u64,
    /// Best bid.
    pub bid: Price,
    /// Best ask.
    pub ask: Price,
    /// Shares at the bid.
    pub bid_size: u32,
    /// Shares at the ask.
    pub ask_size: u32,
}

/// The trade half of a [`Message::State`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTrade {
    /// Incremental-feed sequence of the trade this reflects (never 0).
    pub seq: u64,
    /// Last trade price.
    pub last: Price,
    /// Last trade size.
    pub last_size: u32,
    /// Cumulative session volume.
    pub volume: u64,
}

impl Message<'_> {
    /// The symbol's locate code.
    pub fn locate(&self) -> Locate {
        match *self {
            Message::Directory { locate, .. }
            | Message::Quote { locate, .. }
            | Message::Trade { locate, .. }
            | Message::State { locate, .. } => locate,
        }
    }

    /// The exchange timestamp.
    pub fn ts(&self) -> u64 {
        match *self {
            Message::Directory { ts, .. }
            | Message::Quote { ts, .. }
            | Message::Trade { ts, .. }
            | Message::State { ts, .. } => ts,
        }
    }

    /// Appends this message as MessagePack (compact array form, the same bytes
    /// `rmp-serde` writes for the tuple) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use rmp::encode::{write_array_len, write_sint, write_str, write_uint};
        // Writing into a Vec cannot fail.
        let _ = match *self {
            Message::Directory {
                locate,
                ts,
                symbol,
                name,
                prev_close,
            } => write_array_len(out, 6)
                .and_then(|_| write_uint(out, TYPE_DIRECTORY).map(drop))
                .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                .and_then(|_| write_uint(out, ts).map(drop))
                .and_then(|_| write_str(out, symbol))
                .and_then(|_| write_str(out, name))
                .and_then(|_| write_sint(out, prev_close.raw()).map(drop)),
            Message::Quote {
                locate,
                ts,
                bid,
                ask,
                bid_size,
                ask_size,
            } => write_array_len(out, 7)
                .and_then(|_| write_uint(out, TYPE_QUOTE).map(drop))
                .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                .and_then(|_| write_uint(out, ts).map(drop))
                .and_then(|_| write_sint(out, bid.raw()).map(drop))
                .and_then(|_| write_sint(out, ask.raw()).map(drop))
                .and_then(|_| write_uint(out, u64::from(bid_size)).map(drop))
                .and_then(|_| write_uint(out, u64::from(ask_size)).map(drop)),
            Message::Trade {
                locate,
                ts,
                price,
                size,
                volume,
            } => write_array_len(out, 6)
                .and_then(|_| write_uint(out, TYPE_TRADE).map(drop))
                .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                .and_then(|_| write_uint(out, ts).map(drop))
                .and_then(|_| write_sint(out, price.raw()).map(drop))
                .and_then(|_| write_uint(out, u64::from(size)).map(drop))
                .and_then(|_| write_uint(out, volume).map(drop)),
            Message::State {
                locate,
                ts,
                quote,
                trade,
            } => {
                let head = write_array_len(out, 12)
                    .and_then(|_| write_uint(out, TYPE_STATE).map(drop))
                    .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                    .and_then(|_| write_uint(out, ts).map(drop));
                let q = match quote {
                    Some(q) => write_uint(out, q.seq)
                        .map(drop)
                        .and_then(|_| write_sint(out, q.bid.raw()).map(drop))
                        .and_then(|_| write_sint(out, q.ask.raw()).map(drop))
                        .and_then(|_| write_uint(out, u64::from(q.bid_size)).map(drop))
                        .and_then(|_| write_uint(out, u64::from(q.ask_size)).map(drop)),
                    None => write_empty_half(out, 4),
                };
                let t = match trade {
                    Some(t) => write_uint(out, t.seq)
                        .map(drop)
                        .and_then(|_| write_sint(out, t.last.raw()).map(drop))
                        .and_then(|_| write_uint(out, u64::from(t.last_size)).map(drop))
                        .and_then(|_| write_uint(out, t.volume).map(drop)),
                    None => write_empty_half(out, 3),
                };
                head.and(q).and(t)
            }
        };
    }
}

/// A state half with nothing in it: sequence 0, then `fields` nils.
fn write_empty_half(out: &mut Vec<u8>, fields: usize) -> Result<(), rmp::encode::ValueWriteError> {
    rmp::encode::write_uint(out, 0)?;
    for _ in 0..fields {
        rmp::encode::write_nil(out).map_err(rmp::encode::ValueWriteError::InvalidMarkerWrite)?;
    }
    Ok(())
}

/// Decodes one message payload. Arrays longer than the layout are accepted
/// (the feed may grow fields at the end); shorter ones are malformed.
pub fn decode_message(mut buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let len = rmp::decode::read_array_len(&mut buf).map_err(|_| DecodeError::BadMsgpack)?;
    if len == 0 {
        return Err(DecodeError::BadMsgpack);
    }
    let kind: u64 = read_int(&mut buf)?;
    let need = match kind {
        TYPE_DIRECTORY => 6,
        TYPE_QUOTE => 7,
        TYPE_TRADE => 6,
        TYPE_STATE => 12,
        _ => return Err(DecodeError::UnknownType),
    };
    if len < need {
        return Err(DecodeError::BadMsgpack);
    }
    let locate: Locate = read_int(&mut buf)?;
    let ts: u64 = read_int(&mut buf)?;
    match kind {
        TYPE_DIRECTORY => {
            let (symbol, rest) =
                rmp::decode::read_str_from_slice(buf).map_err(|_| DecodeError::BadMsgpack)?;
            let (name, mut rest) =
                rmp::decode::read_str_from_slice(rest).map_err(|_| DecodeError::BadMsgpack)?;
            if symbol.is_empty() || symbol.len() > 16 {
                return Err(DecodeError::BadField);
            }
            let prev_close = Price(read_int(&mut rest)?);
            Ok(Message::Directory {
                locate,
                ts,
                symbol,
                name,
                prev_close,
            })
        }
        TYPE_QUOTE => Ok(Message::Quote {
            locate,
            ts,
            bid: Price(read_int(&mut buf)?),
            ask: Price(read_int(&mut buf)?),
            bid_size: read_int(&mut buf)?,
            ask_size: read_int(&mut buf)?,
        }),
        TYPE_TRADE => Ok(Message::Trade {
            locate,
            ts,
            price: Price(read_int(&mut buf)?),
            size: read_int(&mut buf)?,
            volume: read_int(&mut buf)?,
        }),
        _ => {
            let quote_seq: u64 = read_int(&mut buf)?;
            let quote = if quote_seq == 0 {
                skip_half(&mut buf, 4)?;
                None
            } else {
                Some(StateQuote {
                    seq: quote_seq,
                    bid: Price(read_int(&mut buf)?),
                    ask: Price(read_int(&mut buf)?),
                    bid_size: read_int(&mut buf)?,
                    ask_size: read_int(&mut buf)?,
                })
            };
            let trade_seq: u64 = read_int(&mut buf)?;
            let trade = if trade_seq == 0 {
                skip_half(&mut buf, 3)?;
                None
            } else {
                Some(StateTrade {
                    seq: trade_seq,
                    last: Price(read_int(&mut buf)?),
                    last_size: read_int(&mut buf)?,
                    volume: read_int(&mut buf)?,
                })
            };
            Ok(Message::State {
                locate,
                ts,
                quote,
                trade,
            })
        }
    }
}

/// Skips the fields of an empty state half: each nil or an integer (a
/// producer may write zeros instead of nils).
fn skip_half(buf: &mut &[u8], fields: usize) -> Result<(), DecodeError> {
    for _ in 0..fields {
        match buf.first() {
            Some(&0xc0) => *buf = &buf[1..],
            Some(_) => {
                read_int::<i64>(buf)?;
            }
            None => return Err(DecodeError::BadMsgpack),
        }
    }
    Ok(())
}

fn read_int<T: TryFrom<i128>>(buf: &mut &[u8]) -> Result<T, DecodeError> {
    let marker = *buf.first().ok_or(DecodeError::BadMsgpack)?;
    // Negative fixint (0xe0..) and int8..int64 (0xd0..0xd3) are signed.
    let v: i128 = if marker >= 0xe0 || (0xd0..=0xd3).contains(&marker) {
        i128::from(rmp::decode::read_int::<i64, _>(buf).map_err(|_| DecodeError::BadMsgpack)?)
    } else {
        i128::from(rmp::decode::read_int::<u64, _>(buf).map_err(|_| DecodeError::BadMsgpack)?)
    };
    T::try_from(v).map_err(|_| DecodeError::BadField)
}

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

/// Packets for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// `n_msgs` trades of session `session` in packets of `per` messages,
    /// sequences from 1.
    pub(crate) fn trade_packets(session: &str, n_msgs: u64, per: u16) -> Vec<Vec<u8>> {
        let mut b = PacketBuilder::new(Session::new(session), 1).with_max_messages(per);
        let mut out = Vec::new();
        for i in 0..n_msgs {
            let m = Message::Trade {
                locate: 1,
                ts: i,
                price: Price(1),
                size: 1,
                volume: i,
            };
            b.push(&m, &mut |p| out.push(p.to_vec()));
        }
        b.flush(&mut |p| out.push(p.to_vec()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quote(locate: Locate) -> Message<'static> {
        Message::Quote {
            locate,
            ts: 1_764_300_000_123_456_789,
            bid: Price(1_891_200),
            ask: Price(1_891_400),
            bid_size: 300,
            ask_size: 200,
        }
    }

    fn packet_of(msgs: &[Message<'_>]) -> Vec<u8> {
        let mut b = PacketBuilder::new(Session::new("S1"), 7);
        let mut out = Vec::new();
        for m in msgs {
            b.push(m, &mut |p| out.push(p.to_vec()));
        }
        b.flush(&mut |p| out.push(p.to_vec()));
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    #[test]
    fn short_header_is_an_error() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::parse(&vec![0; n]).unwrap_err(),
                DecodeError::ShortHeader
            );
        }
    }

    #[test]
    fn count_overrun_is_an_error() {
        let mut p = packet_of(&[quote(1)]);
        p[18..20].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::CountOverrun);
    }

    #[test]
    fn length_overrun_is_an_error() {
        let mut p = packet_of(&[quote(1)]);
        p[20..22].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::LengthOverrun);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut p = packet_of(&[quote(1)]);
        p.push(0);
        assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::TrailingBytes);
    }

    #[test]
    fn heartbeat_and_end_of_session_with_a_body_are_errors() {
        for count in [COUNT_HEARTBEAT, COUNT_END_OF_SESSION] {
            let mut p = header(Session::new("S1"), 7, count).to_vec();
            assert!(Packet::parse(&p).is_ok());
            p.push(0);
            assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::TrailingBytes);
            p.resize(130, 0xAB);
            assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::TrailingBytes);
        }
    }

    #[test]
    fn session_ids_must_be_printable_ascii_space_padded() {
        for bad in [
            *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09",
            *b"          ",
            *b" LEADING  ",
            *b"IN SIDE   ",
            *b"TAB\t      ",
            [0xC3, 0xA9, b' ', b' ', b' ', b' ', b' ', b' ', b' ', b' '],
            *b"ABC\x7f      ",
        ] {
            let p = header(Session(bad), 1, 0);
            assert_eq!(
                Packet::parse(&p).unwrap_err(),
                DecodeError::BadSession,
                "{bad:?}"
            );
        }
        for good in ["A", "S1764300000", "0123456789", "a-b_c.~!"] {
            let p = header(Session::new(good), 1, 0);
            assert!(Packet::parse(&p).is_ok(), "{good}");
        }
    }

    #[test]
    fn oversized_datagram_is_an_error() {
        assert_eq!(
            Packet::parse(&vec![b'A'; 10_000]).unwrap_err(),
            DecodeError::Oversized
        );
    }

    #[test]
    fn bad_msgpack_is_an_error() {
        assert_eq!(decode_message(&[]).unwrap_err(), DecodeError::BadMsgpack);
        assert_eq!(
            decode_message(&[0xc1]).unwrap_err(),
            DecodeError::BadMsgpack
        );
        // Array of 7 announced, only the type present.
        assert_eq!(
            decode_message(&[0x97, 81]).unwrap_err(),
            DecodeError::BadMsgpack
        );
        // Type code is a string, not an integer.
        assert_eq!(
            decode_message(&[0x91, 0xa1, b'Q']).unwrap_err(),
            DecodeError::BadMsgpack
        );
        // A quote with too few fields.
        assert_eq!(
            decode_message(&[0x93, 81, 1, 2]).unwrap_err(),
            DecodeError::BadMsgpack
        );
    }

    #[test]
    fn unknown_type_is_its_own_error() {
        assert_eq!(
            decode_message(&[0x92, b'Z', 1]).unwrap_err(),
            DecodeError::UnknownType
        );
    }

    #[test]
    fn out_of_range_fields_are_errors() {
        // Locate 70,000 does not fit u16.
        let mut buf = Vec::new();
        rmp::encode::write_array_len(&mut buf, 7).unwrap();
        for v in [81u64, 70_000, 1, 1, 1, 1, 1] {
            rmp::encode::write_uint(&mut buf, v).unwrap();
        }
        assert_eq!(decode_message(&buf).unwrap_err(), DecodeError::BadField);
        // Negative size.
        let mut buf = Vec::new();
        rmp::encode::write_array_len(&mut buf, 7).unwrap();
        for v in [81i64, 1, 1, 1, 1, -5, 1] {
            rmp::encode::write_sint(&mut buf, v).unwrap();
        }
        assert_eq!(decode_message(&buf).unwrap_err(), DecodeError::BadField);
    }

    #[test]
    fn heartbeat_and_end_of_session() {
        let b = PacketBuilder::new(Session::new("S1"), 42);
        let hb = b.heartbeat();
        let p = Packet::parse(&hb).unwrap();
        assert_eq!((p.kind, p.seq, p.count), (PacketKind::Heartbeat, 42, 0));
        assert_eq!(p.messages().count(), 0);
        let eos = b.end_of_session();
        assert_eq!(Packet::parse(&eos).unwrap().kind, PacketKind::EndOfSession);
    }

    #[test]
    fn builder_splits_at_packet_limit() {
        let mut b = PacketBuilder::new(Session::new("S1"), 1);
        let mut packets = Vec::new();
        for i in 0..500 {
            b.push(&quote(i), &mut |p| packets.push(p.to_vec()));
        }
        b.flush(&mut |p| packets.push(p.to_vec()));
        assert!(packets.len() > 1);
        let mut next = 1;
        for p in &packets {
            assert!(p.len() <= MAX_PACKET);
            let parsed = Packet::parse(p).unwrap();
            assert_eq!(parsed.seq, next);
            next = parsed.end_seq();
        }
        assert_eq!(next, 501);
    }

    #[test]
    fn session_padding() {
        let s = Session::new("ABC");
        assert_eq!(&s.0, b"ABC       ");
        assert_eq!(s.as_str(), "ABC");
        assert_eq!(Session::new("0123456789XYZ").as_str(), "0123456789");
    }

    fn arb_message()
    -> impl Strategy<Value = (u8, u16, u64, i64, i64, u32, u32, u64, String, String)> {
        (
            0u8..3,
            any::<u16>(),
            any::<u64>(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            "[A-Z]{1,8}",
            "[ -~]{0,40}",
        )
    }

    fn build<'a>(t: &'a (u8, u16, u64, i64, i64, u32, u32, u64, String, String)) -> Message<'a> {
        let (k, locate, ts, p1, p2, s1, s2, vol, sym, name) = t;
        match k {
            0 => Message::Directory {
                locate: *locate,
                ts: *ts,
                symbol: sym,
                name,
                prev_close: Price(*p1),
            },
            1 => Message::Quote {
                locate: *locate,
                ts: *ts,
                bid: Price(*p1),
                ask: Price(*p2),
                bid_size: *s1,
                ask_size: *s2,
            },
            _ => Message::Trade {
                locate: *locate,
                ts: *ts,
                price: Price(*p1),
                size: *s1,
                volume: *vol,
            },
        }
    }

    fn arb_state() -> impl Strategy<Value = Message<'static>> {
        let quote = proptest::option::of((
            1u64..,
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            any::<u32>(),
        ));
        let trade = proptest::option::of((1u64.., any::<i64>(), any::<u32>(), any::<u64>()));
        (any::<u16>(), any::<u64>(), quote, trade).prop_map(|(locate, ts, q, t)| Message::State {
            locate,
            ts,
            quote: q.map(|(seq, b, a, bs, as_)| StateQuote {
                seq,
                bid: Price(b),
                ask: Price(a),
                bid_size: bs,
                ask_size: as_,
            }),
            trade: t.map(|(seq, p, sz, v)| StateTrade {
                seq,
                last: Price(p),
                last_size: sz,
                volume: v,
            }),
        })
    }

    #[test]
    fn state_with_zeros_for_an_empty_half_decodes() {
        // A producer that writes 0 instead of nil in an empty half.
        let raw = rmp_serde::to_vec(&(
            83u8,
            7u16,
            5u64,
            0u8,
            0u8,
            0u8,
            0u8,
            0u8,
            9u64,
            1_000_000i64,
            10u32,
            20u64,
        ))
        .unwrap();
        assert_eq!(
            decode_message(&raw),
            Ok(Message::State {
                locate: 7,
                ts: 5,
                quote: None,
                trade: Some(StateTrade {
                    seq: 9,
                    last: Price(1_000_000),
                    last_size: 10,
                    volume: 20
                }),
            })
        );
        let short = rmp_serde::to_vec(&(83u8, 7u16, 5u64, 0u8)).unwrap();
        assert_eq!(decode_message(&short), Err(DecodeError::BadMsgpack));
    }

    proptest! {
        #[test]
        fn state_round_trip_and_matches_rmp_serde(msg in arb_state()) {
            let mut ours = Vec::new();
            msg.encode(&mut ours);
            prop_assert_eq!(decode_message(&ours), Ok(msg));
            let Message::State { locate, ts, quote, trade } = msg else { unreachable!() };
            let theirs = rmp_serde::to_vec(&(
                83u8, locate, ts,
                quote.map_or(0, |q| q.seq), quote.map(|q| q.bid.raw()), quote.map(|q| q.ask.raw()),
                quote.map(|q| q.bid_size), quote.map(|q| q.ask_size),
                trade.map_or(0, |t| t.seq), trade.map(|t| t.last.raw()),
                trade.map(|t| t.last_size), trade.map(|t| t.volume),
            )).unwrap();
            prop_assert_eq!(decode_message(&theirs), Ok(msg));
        }

        #[test]
        fn message_round_trip(t in arb_message()) {
            let msg = build(&t);
            let mut buf = Vec::new();
            msg.encode(&mut buf);
            prop_assert_eq!(decode_message(&buf), Ok(msg));
        }

        #[test]
        fn encoding_matches_rmp_serde_tuples(t in arb_message()) {
            let msg = build(&t);
            let mut ours = Vec::new();
            msg.encode(&mut ours);
            let theirs = match msg {
                Message::Directory { locate, ts, symbol, name, prev_close } =>
                    rmp_serde::to_vec(&(68u8, locate, ts, symbol, name, prev_close.raw())).unwrap(),
                Message::Quote { locate, ts, bid, ask, bid_size, ask_size } =>
                    rmp_serde::to_vec(&(81u8, locate, ts, bid.raw(), ask.raw(), bid_size, ask_size)).unwrap(),
                Message::Trade { locate, ts, price, size, volume } =>
                    rmp_serde::to_vec(&(84u8, locate, ts, price.raw(), size, volume)).unwrap(),
                Message::State { .. } => unreachable!("arb_message makes no state"),
            };
            // Same values whatever integer widths each encoder picked.
            prop_assert_eq!(decode_message(&theirs), Ok(msg));
            prop_assert_eq!(decode_message(&ours), decode_message(&theirs));
        }

        #[test]
        fn packet_round_trip(ts in proptest::collection::vec(arb_message(), 1..40), first in 1u64..1_000_000) {
            let msgs: Vec<Message<'_>> = ts.iter().map(build).collect();
            let mut b = PacketBuilder::new(Session::new("PROP"), first);
            let mut packets = Vec::new();
            for m in &msgs {
                b.push(m, &mut |p| packets.push(p.to_vec()));
            }
            b.flush(&mut |p| packets.push(p.to_vec()));
            let mut decoded = Vec::new();
            let mut next = first;
            for p in &packets {
                prop_assert!(p.len() <= MAX_PACKET);
                let parsed = Packet::parse(p).unwrap();
                prop_assert_eq!(parsed.seq, next);
                prop_assert_eq!(parsed.session.as_str(), "PROP");
                next = parsed.end_seq();
                for raw in parsed.messages() {
                    decoded.push(decode_message(raw).unwrap());
                }
            }
            prop_assert_eq!(decoded, msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
            if let Ok(p) = Packet::parse(&data) {
                for raw in p.messages() {
                    let _ = decode_message(raw);
                }
            }
            let _ = decode_message(&data);
        }
    }
}
