//! WebSocket framing (RFC 6455) for the relay's own WebSocket path: server
//! frames written into a buffer (unmasked, 2–10 byte header), client frames
//! parsed from one (masked, possibly fragmented, control frames between
//! fragments), and the closing handshake's wait for the client's Close
//! ([`CloseWait`]). Every rule of RFC 6455 §5 that a client can break ends
//! in a [`FrameError`] with its close code. With permessage-deflate
//! negotiated (RFC 7692), a message whose first frame has RSV1 set is
//! inflated once whole, at most `max_frame_bytes` of it. No I/O here.

use crate::deflate::{InflateError, Inflater};

/// Frame opcodes.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// UTF-8 text.
    pub const TEXT: u8 = 0x1;
    /// Binary.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Appends a final, unmasked frame of `opcode` carrying `payload`.
pub fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends the header of a final, unmasked frame of `len` payload bytes.
pub fn header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    let (head, n) = header_bytes(opcode, len);
    out.extend_from_slice(&head[..n]);
}

/// The header of a final, unmasked frame of `len` payload bytes, on the
/// stack: its first `n` bytes.
pub fn header_bytes(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut head = [0u8; MAX_HEADER];
    head[0] = 0x80 | opcode;
    if len < 126 {
        head[1] = len as u8;
        (head, 2)
    } else if len <= usize::from(u16::MAX) {
        head[1] = 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (head, 4)
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (head, 10)
    }
}

/// The first header bit of a compressed message (permessage-deflate).
pub const RSV1: u8 = 0x40;

/// The longest server frame header (unmasked, 64-bit length).
pub const MAX_HEADER: usize = 10;

/// Appends a close frame; the reason is cut to the 123 bytes a control
/// frame allows (at a character boundary).
pub fn close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(out, opcode::CLOSE, &payload);
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (not yet checked as UTF-8).
    Text(Vec<u8>),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping; answer with a pong of the same payload.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// The client closes, with this code if it gave one.
    Close(Option<u16>),
}

/// Why the client's frames end the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A message over the size limit (close 1009).
    TooBig,
    /// A frame that breaks the protocol (close 1002).
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8 (close 1007).
    InvalidUtf8(&'static str),
    /// The client's Close frame, but a bad one (a one-byte payload or an
    /// invalid code: 1002; a reason that is not UTF-8: 1007). The client has
    /// sent its last frame all the same.
    BadClose(u16, &'static str),
}

/// Whether a client may send `code` in a Close frame (RFC 6455 §7.4): the
/// defined codes a peer may send, and the registered and private ranges.
/// 1004–1006 and 1015 are never sent; 1016–2999 are unassigned.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reassembles client messages from bytes read off the socket.
#[derive(Debug, Default)]
pub struct Reader {
    /// Bytes read and not yet parsed.
    pub buf: Vec<u8>,
    /// A fragmented message in progress: its opcode, whether it is
    /// compressed, and its payload so far.
    /// Boxed: an idle connection pays a pointer for it.
    partial: Option<Box<(u8, bool, Vec<u8>)>>,
    /// With permessage-deflate negotiated: the client's messages may be
    /// compressed (RSV1), and are inflated here (boxed, as `partial`).
    pub inflater: Option<Box<Inflater>>,
}

impl Reader {
    /// Parses the next complete message or control frame out of `buf`,
    /// `None` if more bytes are needed. `max` bounds a message's size.
    pub fn next(&mut self, max: usize) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some((op, fin, rsv1, payload)) = self.frame(max)? else {
                return Ok(None);
            };
            if op >= 0x8 {
                return Ok(Some(match op {
                    opcode::CLOSE => Incoming::Close(close_payload(&payload)?),
                    opcode::PING => Incoming::Ping(payload),
                    opcode::PONG => Incoming::Pong,
                    _ => return Err(FrameError::Protocol("unknown control opcode")),
                }));
            }
            let (op, compressed, data) = match (op, self.partial.take()) {
                (opcode::CONTINUATION, _) if rsv1 => {
                    return Err(FrameError::Protocol("RSV1 on a continuation frame"));
                }
                (opcode::CONTINUATION, Some(mut partial)) => {
                    if partial.2.len() + payload.len() > max {
                        return Err(FrameError::TooBig);
                    }
                    partial.2.extend_from_slice(&payload);
                    if !fin {
                        // The same box until the message ends.
                        self.partial = Some(partial);
                        continue;
                    }
                    *partial
                }
                (opcode::CONTINUATION, None) => {
                    return Err(FrameError::Protocol("continuation without a message"));
                }
                (opcode::TEXT | opcode::BINARY, None) => (op, rsv1, payload),
                (opcode::TEXT | opcode::BINARY, Some(_)) => {
                    return Err(FrameError::Protocol("new message inside a fragmented one"));
                }
                _ => return Err(FrameError::Protocol("unknown opcode")),
            };
            if !fin {
                self.partial = Some(Box::new((op, compressed, data)));
                continue;
            }
            let data = match (compressed, self.inflater.as_mut()) {
                (false, _) => data,
                (true, Some(inflater)) => match inflater.message(&data, max) {
                    Ok(d) => d,
                    Err(InflateError::TooBig) => return Err(FrameError::TooBig),
                    Err(InflateError::Corrupt) => {
                        return Err(FrameError::Protocol("compressed message is not deflate"));
                    }
                },
                (true, None) => return Err(FrameError::Protocol("reserved bits set")),
            };
            return Ok(Some(if op == opcode::TEXT {
                if std::str::from_utf8(&data).is_err() {
                    return Err(FrameError::InvalidUtf8("text message is not UTF-8"));
                }
                Incoming::Text(data)
            } else {
                Incoming::Binary(data)
            }));
        }
    }

    /// One frame off the front of `buf`, unmasked: opcode, FIN, RSV1,
    /// payload. RSV1 only with permessage-deflate, and only on data frames.
    #[allow(clippy::type_complexity)]
    fn frame(&mut self, max: usize) -> Result<Option<(u8, bool, bool, Vec<u8>)>, FrameError> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, op, rsv1) = (b[0] & 0x80 != 0, b[0] & 0x0F, b[0] & RSV1 != 0);
        if b[0] & 0x30 != 0 || (rsv1 && (self.inflater.is_none() || op >= 0x8)) {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        if b[1] & 0x80 == 0 {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        let (len, at) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        if op >= 0x8 && (len > 125 || !fin) {
            return Err(FrameError::Protocol("control frames are short and whole"));
        }
        if len > max as u64 {
            return Err(FrameError::TooBig);
        }
        let len = len as usize;
        if b.len() < at + 4 + len {
            return Ok(None);
        }
        let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        let start = at + 4;
        let payload: Vec<u8> = b[start..start + len]
            .iter()
            .enumerate()
            .map(|(i, &x)| x ^ mask[i % 4])
            .collect();
        self.buf.drain(..start + len);
        Ok(Some((op, fin, rsv1, payload)))
    }

    /// Drops buffers grown for a large message once it is parsed, so an
    /// idle connection holds none.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        } else if self.buf.capacity() > 4 * self.buf.len().max(1024) {
            self.buf.shrink_to_fit();
        }
    }
}

/// The code of a Close frame's payload: none, or a valid code and a UTF-8
/// reason (RFC 6455 §5.5.1, §7.4).
fn close_payload(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::BadClose(1002, "close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(FrameError::BadClose(1002, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::BadClose(1007, "close reason is not UTF-8"));
            }
            Ok(Some(code))
        }
    }
}

/// The server's side of a closing handshake it started: reads the client's
/// frames only as far as their headers, dropping every payload unread
/// (a message over `max_frame_bytes` still arriving is skipped, not
/// buffered), until the client's Close frame. Then the server closes the
/// TCP connection at once (RFC 6455 §7.1.1).
#[derive(Debug, Default)]
pub struct CloseWait {
    /// Payload bytes of the current frame still to drop.
    skip: u64,
    /// A header being read (at most 14 bytes).
    head: Vec<u8>,
    /// The current frame is a Close.
    closing: bool,
}

impl CloseWait {
    /// Takes bytes read off the socket; true once the client's Close frame
    /// has begun (its payload need not be read: nothing follows it).
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        loop {
            if self.closing {
                return true;
            }
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64);
                self.skip -= n;
                bytes = &bytes[n as usize..];
            }
            if bytes.is_empty() {
                return false;
            }
            // Read the next header byte by byte; it is at most 14 bytes.
            self.head.push(bytes[0]);
            bytes = &bytes[1..];
            let h = &self.head;
            if h.len() < 2 {
                continue;
            }
            let masked = h[1] & 0x80 != 0;
            let (ext, short) = match h[1] & 0x7F {
                126 => (2, None),
                127 => (8, None),
                n => (0, Some(u64::from(n))),
            };
            let need = 2 + ext + if masked { 4 } else { 0 };
            if h.len() < need {
                continue;
            }
            let len = short.unwrap_or_else(|| {
                h[2..2 + ext]
                    .iter()
                    .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            });
            self.closing = h[0] & 0x0F == opcode::CLOSE;
            self.skip = len;
            self.head.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | op];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 65535 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        for (len, head) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let mut out = Vec::new();
            frame(&mut out, opcode::TEXT, &vec![b'x'; len]);
            assert_eq!(out.len(), head + len, "{len}");
            assert_eq!(out[0], 0x81);
        }
        let mut out = Vec::new();
        close(&mut out, 4008, &"é".repeat(100));
        assert!(out.len() <= 2 + 125);
        assert_eq!(&out[2..4], &4008u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn client_frames_unmasked_fragmented_and_interleaved_with_control() {
        let mut r = Reader::default();
        r.buf.extend(masked(false, opcode::TEXT, b"{\"op\":"));
        r.buf.extend(masked(true, opcode::PING, b"hi"));
        let tail = masked(true, opcode::CONTINUATION, b"\"ping\"}");
        r.buf.extend(&tail[..3]);
        assert_eq!(r.next(1024), Ok(Some(Incoming::Ping(b"hi".to_vec()))));
        assert_eq!(r.next(1024), Ok(None), "half a frame waits");
        r.buf.extend(&tail[3..]);
        assert_eq!(
            r.next(1024),
            Ok(Some(Incoming::Text(b"{\"op\":\"ping\"}".to_vec())))
        );
        r.buf
            .extend(masked(true, opcode::BINARY, &vec![7u8; 70_000]));
        assert_eq!(
            r.next(100_000),
            Ok(Some(Incoming::Binary(vec![7u8; 70_000])))
        );
        r.buf.extend(masked(true, opcode::CLOSE, &[3, 232]));
        assert_eq!(r.next(1024), Ok(Some(Incoming::Close(Some(1000)))));
        assert!(r.buf.is_empty());
    }

    #[test]
    fn text_and_close_frames_are_checked_per_rfc() {
        let next = |bytes: Vec<u8>| {
            let mut r = Reader::default();
            r.buf.extend(bytes);
            r.next(1024)
        };
        assert!(matches!(
            next(masked(true, opcode::TEXT, &[0xff, 0xfe])),
            Err(FrameError::InvalidUtf8(_))
        ));
        // A code point split across fragments is whole once reassembled.
        let mut both = masked(false, opcode::TEXT, &"é".as_bytes()[..1]);
        both.extend(masked(true, opcode::CONTINUATION, &"é".as_bytes()[1..]));
        assert_eq!(
            next(both),
            Ok(Some(Incoming::Text("é".as_bytes().to_vec())))
        );
        assert_eq!(
            next(masked(true, opcode::CLOSE, &[])),
            Ok(Some(Incoming::Close(None)))
        );
        assert!(matches!(
            next(masked(true, opcode::CLOSE, &[3])),
            Err(FrameError::BadClose(1002, _))
        ));
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
            assert!(
                matches!(
                    next(masked(true, opcode::CLOSE, &bad.to_be_bytes())),
                    Err(FrameError::BadClose(1002, _))
                ),
                "{bad}"
            );
        }
        for good in [
            1000u16, 1001, 1002, 1003, 1007, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert_eq!(
                next(masked(true, opcode::CLOSE, &good.to_be_bytes())),
                Ok(Some(Incoming::Close(Some(good))))
            );
        }
        let mut reason = 1000u16.to_be_bytes().to_vec();
        reason.extend([0xc3, 0x28]);
        assert!(matches!(
            next(masked(true, opcode::CLOSE, &reason)),
            Err(FrameError::BadClose(1007, _))
        ));
        assert!(matches!(
            next(masked(true, opcode::CLOSE | 0x40, &[])),
            Err(FrameError::Protocol(_))
        ));
    }

    #[test]
    fn the_close_wait_skips_payloads_to_the_clients_close() {
        // A 1 MiB message still arriving, a ping, then the Close: in pieces
        // of every size, the Close is found and nothing before it is kept.
        let mut stream = masked(true, opcode::BINARY, &vec![9u8; 1 << 20]);
        stream.extend(masked(true, opcode::PING, b"p"));
        let close_at = stream.len();
        stream.extend(masked(true, opcode::CLOSE, &1000u16.to_be_bytes()));
        for piece in [1usize, 7, 1000, 65_536, stream.len()] {
            let mut w = CloseWait::default();
            let mut seen = None;
            for (i, chunk) in stream.chunks(piece).enumerate() {
                if w.feed(chunk) {
                    seen = Some(i * piece);
                    break;
                }
            }
            let at = seen.expect("the close is found");
            // Found in the chunk that completes the Close's 6-byte header.
            assert!(at + piece > close_at && at <= close_at + 6, "piece {piece}");
            assert!(w.head.capacity() <= 16);
        }
        // Mid-frame when the wait starts (the rest of a refused message):
        // the header already read tells how much to skip.
        let mut w = CloseWait::default();
        assert!(!w.feed(&stream[..10_000]));
        assert!(w.feed(&stream[10_000..]));
        let mut w = CloseWait::default();
        assert!(!w.feed(&masked(true, opcode::TEXT, b"still talking")));
    }

    #[test]
    fn bad_frames_are_refused() {
        let too_big = masked(true, opcode::TEXT, &[b'x'; 2000]);
        let mut r = Reader::default();
        r.buf.extend(&too_big[..4]);
        assert_eq!(
            r.next(1024),
            Err(FrameError::TooBig),
            "known from the header"
        );
        let mut r = Reader::default();
        r.buf.extend(masked(false, opcode::TEXT, &[b'x'; 800]));
        r.buf
            .extend(masked(true, opcode::CONTINUATION, &[b'x'; 800]));
        assert_eq!(r.next(1024), Err(FrameError::TooBig), "fragments add up");
        let mut unmasked = Vec::new();
        frame(&mut unmasked, opcode::TEXT, b"x");
        let mut r = Reader::default();
        r.buf.extend(unmasked);
        assert!(matches!(r.next(1024), Err(FrameError::Protocol(_))));
        let mut r = Reader::default();
        r.buf.extend(masked(true, opcode::CONTINUATION, b"x"));
        assert!(matches!(r.next(1024), Err(FrameError::Protocol(_))));
        let mut r = Reader::default();
        r.buf.extend(masked(false, opcode::PING, b"x"));
        assert!(matches!(r.next(1024), Err(FrameError::Protocol(_))));
        // Any bytes at all: an answer or a wait, never a panic.
        for seed in 0..2000u32 {
            let mut r = Reader {
                buf: (0..64)
                    .map(|i| (seed.wrapping_mul(2_654_435_761).rotate_left(i) & 0xff) as u8)
                    .collect(),
                ..Reader::default()
            };
            for _ in 0..8 {
                if !matches!(r.next(1024), Ok(Some(_))) {
                    break;
                }
            }
        }
    }
}
