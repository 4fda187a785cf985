//! permessage-deflate (RFC 7692) for the relay's own WebSocket framing:
//! the `Sec-WebSocket-Extensions` offers parsed and answered (`offer`), and
//! the raw-deflate codec of message payloads (`codec`): a compressor whose
//! output ends without the sync flush's `00 00 ff ff`, and an inflater that
//! stops at a size limit, in bounded steps (a small frame that would inflate
//! to gigabytes is refused after at most the limit plus one step); and the
//! small-window compressor of `small_context` (`small`, writing
//! fixed-Huffman blocks with `fixed`), a few KiB a connection.
//!
//! Pure code over bytes: no I/O, nothing of the crate imported. The
//! WebSocket transport holds the state per connection (`transport::ws`,
//! `transport::writer`, `transport::wsframe`).

mod codec;
mod fixed;
mod offer;
mod small;

pub use codec::{DEFLATER_BYTES, Deflater, INFLATER_BYTES, InflateError, Inflater, compress_alone};
pub use offer::{Agreement, negotiate};
pub use small::{SMALL_WINDOW_BITS, SmallDeflater};

/// The `deflate` setting: whether and how the relay compresses WebSocket
/// messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Never negotiated: every message goes uncompressed.
    Off,
    /// Each message compressed on its own (`server_no_context_takeover`
    /// and `client_no_context_takeover` in every answer): no compressor or
    /// inflater is held by a connection between messages, and one
    /// compression of a frame is shared by every client that is sent the
    /// same bytes.
    #[default]
    NoContext,
    /// Each connection keeps its compressor (and, unless the client gives it
    /// up, its inflater) from message to message: better ratios for about
    /// [`DEFLATER_BYTES`] plus [`INFLATER_BYTES`] per connection.
    Context,
    /// Context takeover in a small window: each connection keeps the last
    /// 2^[`SMALL_WINDOW_BITS`] bytes it was sent and a hash of them (about
    /// 8 KiB, [`SmallDeflater`]), the answer names that window
    /// (`server_max_window_bits`) and asks the client to compress each
    /// message on its own (`client_no_context_takeover`), so no inflater is
    /// held either.
    SmallContext,
}

impl Mode {
    /// The setting's value: `off`, `no_context`, `context` or
    /// `small_context`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" => Some(Mode::Off),
            "no_context" => Some(Mode::NoContext),
            "context" => Some(Mode::Context),
            "small_context" => Some(Mode::SmallContext),
            _ => None,
        }
    }
}
