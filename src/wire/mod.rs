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
//!
//! # Layout
//!
//! - this file: the layout's constants and [`Locate`];
//! - `session`: [`Session`], the producer's 10-byte session id;
//! - `error`: [`DecodeError`], why a datagram or message was refused;
//! - `packet`: reading a datagram — [`Packet::parse`] checks the header and
//!   the message framing, [`Messages`] walks the payloads;
//! - `message`: the MessagePack events — [`Message`] (the state message's
//!   halves [`StateQuote`], [`StateTrade`]), [`decode_message`] and
//!   [`Message::encode`];
//! - `book`: depth of book — [`Side`], [`PriceLevel`] and the level arrays
//!   of a book state message, [`Levels`], read in place;
//! - `builder`: writing packets — [`PacketBuilder`] and [`header`].

mod book;
mod builder;
mod error;
mod message;
mod packet;
mod session;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use book::{Levels, LevelsIter, MAX_BOOK_LEVELS, PriceLevel, Side};
pub use builder::{PacketBuilder, header};
pub use error::DecodeError;
pub use message::{Message, StateQuote, StateTrade, decode_message};
pub use packet::{Messages, Packet, PacketKind};
pub use session::Session;

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
/// Message type code of a book level, `'L'`.
pub const TYPE_LEVEL: u64 = b'L' as u64;
/// Message type code of a recovery-loop book state, `'B'`.
pub const TYPE_BOOK: u64 = b'B' as u64;

/// A symbol's locate code: the small integer a directory entry maps to a name,
/// so the hot path indexes an array instead of hashing a string.
pub type Locate = u16;
