//! Reading the server's frames without decoding them, so the generator's
//! cost stays small next to the server's: a JSON frame is scanned for
//! `"ts":` keys (one per quote; the key cannot occur unescaped inside a
//! JSON string) and a MessagePack frame is walked without building values.

/// What a frame is, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Ticks,
    Snapshot,
    /// A `book` frame (depth of book).
    Book,
    Control,
    /// A `bars` frame: one delivery per bar.
    Bars,
}

/// Every `"ts":N` in a JSON text: one per quote.
pub(super) fn json_timestamps(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    let finder = FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\"ts\":"));
    finder.find_iter(body).map(move |at| {
        body[at + 5..]
            .iter()
            .skip_while(|b| b.is_ascii_whitespace())
            .take_while(|b| b.is_ascii_digit())
            .fold(0u64, |n, &d| {
                n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
            })
    })
}

/// How many bars a JSON `bars` frame carries: one `"t":` key each.
pub(super) fn json_bars(body: &[u8]) -> usize {
    memchr::memmem::find_iter(body, b"\"t\":").count()
}

/// The kind of a JSON WebSocket frame from its first bytes. A frame with no
/// `type` (a bare quote, as nchan relays it) counts as ticks.
pub(super) fn json_kind(body: &[u8]) -> Kind {
    if body.starts_with(b"{\"type\":\"ticks\"") || body.starts_with(b"{\"type\":\"trades\"") {
        Kind::Ticks
    } else if body.starts_with(b"{\"type\":\"bars\"") {
        Kind::Bars
    } else if body.starts_with(b"{\"type\":\"snapshot\"") {
        Kind::Snapshot
    } else if body.starts_with(b"{\"type\":\"book\"") {
        Kind::Book
    } else if body.starts_with(b"{\"type\":") {
        Kind::Control
    } else {
        Kind::Ticks
    }
}

/// A MessagePack reader that walks values without building them.
struct Mp<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Mp<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        let bytes = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(bytes.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x80..=0x8f => Some(usize::from(b & 0x0f)),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x90..=0x9f => Some(usize::from(b & 0x0f)),
            0xdc => Some(self.be(2)? as usize),
            0xdd => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => self.be(1).map(|v| v as i8 as u64),
            0xd1 => self.be(2).map(|v| v as i16 as u64),
            0xd2 => self.be(4).map(|v| v as i32 as u64),
            0xd3 => self.be(8),
            _ => None,
        }
    }

    /// Skips one value (depth-limited: the server's frames are shallow).
    fn skip(&mut self, depth: u8) -> Option<()> {
        if depth > 8 {
            return None;
        }
        let b = self.byte()?;
        let n = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => return self.skip_n(2 * usize::from(b & 0x0f), depth),
            0x90..=0x9f => return self.skip_n(usize::from(b & 0x0f), depth),
            0xa0..=0xbf => usize::from(b & 0x1f),
            0xc4 | 0xd9 => self.be(1)? as usize,
            0xc5 | 0xda => self.be(2)? as usize,
            0xc6 | 0xdb => self.be(4)? as usize,
            0xc7 => self.be(1)? as usize + 1,
            0xc8 => self.be(2)? as usize + 1,
            0xc9 => self.be(4)? as usize + 1,
            0xca | 0xce | 0xd2 => 4,
            0xcb | 0xcf | 0xd3 => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xdc => {
                let n = self.be(2)? as usize;
                return self.skip_n(n, depth);
            }
            0xdd => {
                let n = self.be(4)? as usize;
                return self.skip_n(n, depth);
            }
            0xde => {
                let n = self.be(2)? as usize;
                return self.skip_n(2 * n, depth);
            }
            0xdf => {
                let n = self.be(4)? as usize;
                return self.skip_n(2 * n, depth);
            }
            0xc1 => return None,
        };
        self.take(n).map(|_| ())
    }

    fn skip_n(&mut self, n: usize, depth: u8) -> Option<()> {
        for _ in 0..n {
            self.skip(depth + 1)?;
        }
        Some(())
    }
}

/// Reads a MessagePack envelope: returns its `type` and pushes each quote's
/// `ts` onto `out`.
pub(super) fn msgpack_envelope(body: &[u8], out: &mut Vec<u64>) -> Option<String> {
    let mut r = Mp { buf: body, pos: 0 };
    let mut kind = None;
    for _ in 0..r.map_len()? {
        match r.str()? {
            b"type" => kind = Some(String::from_utf8_lossy(r.str()?).into_owned()),
            b"quotes" => {
                for _ in 0..r.array_len()? {
                    for _ in 0..r.map_len()? {
                        if r.str()? == b"ts" {
                            out.push(r.uint()?);
                        } else {
                            r.skip(0)?;
                        }
                    }
                }
            }
            _ => r.skip(0)?,
        }
    }
    kind
}

pub(super) fn msgpack_is_snapshot(body: &[u8]) -> bool {
    let mut r = Mp { buf: body, pos: 0 };
    r.map_len().is_some() && r.str() == Some(b"type") && r.str() == Some(b"snapshot")
}

pub(super) fn json_field_u64(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(body, key)? + key.len();
    let digits: Vec<u8> = body[at..]
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[test]
    fn json_timestamps_find_every_quote() {
        let frame = br#"{"type":"ticks","seq":9,"quotes":[{"symbol":"A","ts":123},{"symbol":"B\"ts\":1","ts": 456}]}"#;
        assert_eq!(json_timestamps(frame).collect::<Vec<_>>(), vec![123, 456]);
        assert_eq!(json_kind(frame), Kind::Ticks);
        assert_eq!(json_kind(br#"{"type":"snapshot"}"#), Kind::Snapshot);
        assert_eq!(json_kind(br#"{"type":"pong"}"#), Kind::Control);
        assert_eq!(json_kind(br#"{"symbol":"A","ts":1}"#), Kind::Ticks);
    }

    #[test]
    fn msgpack_envelope_reads_type_and_timestamps() {
        #[derive(Serialize)]
        struct Q {
            symbol: &'static str,
            bid: Option<i64>,
            volume: u64,
            ts: u64,
        }
        #[derive(Serialize)]
        struct Env {
            r#type: &'static str,
            seq: u64,
            quotes: Vec<Q>,
        }
        let env = Env {
            r#type: "ticks",
            seq: 7,
            quotes: vec![
                Q {
                    symbol: "ts",
                    bid: None,
                    volume: 1 << 40,
                    ts: 1_764_300_000_123_456_789,
                },
                Q {
                    symbol: "B",
                    bid: Some(-5),
                    volume: 3,
                    ts: 42,
                },
            ],
        };
        let bytes = rmp_serde::to_vec_named(&env).unwrap();
        let mut out = Vec::new();
        assert_eq!(msgpack_envelope(&bytes, &mut out).as_deref(), Some("ticks"));
        assert_eq!(out, vec![1_764_300_000_123_456_789, 42]);
        assert!(msgpack_envelope(&bytes[..bytes.len() - 3], &mut Vec::new()).is_none());
    }
}
