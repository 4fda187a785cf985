//! Putting a payload on the wire: a WebSocket frame header (RSV1 when
//! compressed) or an HTTP chunk around an SSE event, written into room kept
//! before the payload so a frame is built in place.

use crate::fanout::Format;
use crate::transport::wsframe::{self, opcode};

use super::{Framing, WriteSide, WriteState};

impl WriteSide {
    /// Frames the payload that follows `HEAD_ROOM` bytes kept at `at`: the
    /// header goes at the end of that room (an HTTP chunk's trailing CRLF
    /// after the payload). Returns where the frame now begins.
    pub(super) fn seal_in_room(&self, w: &mut WriteState, buf: &mut Vec<u8>, at: usize) -> usize {
        let compressed = w
            .deflate
            .as_mut()
            .map(|d| d.compress_tail(buf, at + HEAD_ROOM));
        let len = buf.len() - at - HEAD_ROOM;
        let (head, n) = self.head(len, compressed.is_some());
        let begin = at + HEAD_ROOM - n;
        buf[begin..at + HEAD_ROOM].copy_from_slice(&head[..n]);
        if self.framing == Framing::Sse {
            buf.extend_from_slice(b"\r\n");
        }
        begin
    }

    /// The frame header (WebSocket; RSV1 set when `compressed`) or
    /// chunk-size line (SSE) for a payload of `len` bytes: its first `n` bytes.
    fn head(&self, len: usize, compressed: bool) -> ([u8; HEAD_ROOM], usize) {
        let mut out = [0u8; HEAD_ROOM];
        let op = match self.framing {
            Framing::Ws(Format::Json) => opcode::TEXT,
            Framing::Ws(Format::Msgpack) => opcode::BINARY,
            Framing::Sse => {
                let hex = format_hex(len, &mut out);
                return (out, hex);
            }
        };
        let (h, n) = wsframe::header_bytes(op, len);
        out[..n].copy_from_slice(&h[..n]);
        if compressed {
            out[0] |= wsframe::RSV1;
        }
        (out, n)
    }

    /// Frames the payload written into `buf` from `at` on: a WebSocket
    /// header before it, or an HTTP chunk around it.
    pub fn seal(&self, buf: &mut Vec<u8>, at: usize) {
        let len = buf.len() - at;
        let (head, n) = self.head(len, false);
        if self.framing == Framing::Sse {
            buf.extend_from_slice(b"\r\n");
        }
        buf.splice(at..at, head[..n].iter().copied());
    }

    /// [`WriteSide::seal`] for a WebSocket message, compressed first when
    /// the client negotiated permessage-deflate: under the writer's lock,
    /// so messages are compressed in the order they are written.
    pub fn seal_message(&self, w: &mut WriteState, buf: &mut Vec<u8>, at: usize) {
        match w.deflate.as_mut() {
            Some(d) => {
                d.compress_tail(buf, at);
                let (head, n) = self.head(buf.len() - at, true);
                buf.splice(at..at, head[..n].iter().copied());
            }
            None => self.seal(buf, at),
        }
    }
}

/// Room kept before a frame's payload for its header: a WebSocket header
/// (at most 10 bytes) or a chunk-size line (16 hex digits and CRLF).
pub(super) const HEAD_ROOM: usize = 18;

/// `len` in lowercase hex and CRLF, into `out`; returns the length.
fn format_hex(len: usize, out: &mut [u8; HEAD_ROOM]) -> usize {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in out.iter_mut().take(digits).enumerate() {
        *digit = b"0123456789abcdef"[(len >> (4 * (digits - 1 - i))) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// `id: SESSION:SEQ\nevent: NAME\ndata: ` — an SSE event up to its data.
pub fn sse_head(out: &mut Vec<u8>, name: &str, session: &str, seq: u64) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(session.as_bytes());
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
}
