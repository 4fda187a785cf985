//! [`Session`]: the producer's session id, the first 10 bytes of every
//! packet header (docs/FEED.md).

use std::fmt;

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
