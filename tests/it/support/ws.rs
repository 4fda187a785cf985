//! A strict WebSocket client over `std::net`: raw frames, masked as a
//! client must, and a check that the relay closes the TCP connection itself
//! after the closing handshake (it never closes its side first). It may
//! offer permessage-deflate (RFC 7692) and then inflates the relay's
//! compressed messages and compresses its own, with flate2 here, as the
//! answer's parameters say (a context reset per message where agreed);
//! when the answer names a `server_max_window_bits` under 15, every
//! message is also inflated in that window (`support::inflate`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::inflate::Windowed;

/// How soon after the closing handshake the relay's FIN must come: well
/// below the relay's own fallback waits (2 s for a client that never
/// answers a Close), so a slow machine does not fail it.
pub(crate) const AT_ONCE: Duration = Duration::from_millis(1_000);

/// A client frame: FIN and opcode byte as given, masked payload.
pub(crate) fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x5a, 0xc3, 0x7e];
    let mut out = vec![first];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 65_535 {
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

pub(crate) const TEXT: u8 = 0x81;
pub(crate) const CLOSE: u8 = 0x88;
pub(crate) const PING: u8 = 0x89;

pub(crate) fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A server frame: opcode and payload.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) op: u8,
    pub(crate) payload: Vec<u8>,
    /// RSV1 was set: the payload here is inflated.
    pub(crate) compressed: bool,
    /// The payload's bytes on the wire (before inflating).
    pub(crate) wire: usize,
}

impl Frame {
    pub(crate) fn close_code(&self) -> Option<u16> {
        (self.op == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A strict client's connection: raw frames, and a check that the relay
/// closes the TCP connection itself.
pub(crate) struct Strict {
    pub(crate) tcp: TcpStream,
    pub(crate) buf: Vec<u8>,
    /// The relay's `Sec-WebSocket-Extensions` answer and the codec it asks.
    pub(crate) deflate: Option<Deflate>,
}

/// The client's side of permessage-deflate.
pub(crate) struct Deflate {
    pub(crate) answer: String,
    inflate: Decompress,
    /// With a `server_max_window_bits` under 15: an inflater in that window.
    windowed: Option<Windowed>,
    /// The relay keeps its window between messages.
    server_context: bool,
    compress: Compress,
    client_context: bool,
}

impl Deflate {
    fn new(answer: &str) -> Deflate {
        let has = |p: &str| answer.split(';').any(|x| x.trim() == p);
        assert!(answer.starts_with("permessage-deflate"), "{answer}");
        let window = answer.split(';').find_map(|x| {
            let bits = x.trim().strip_prefix("server_max_window_bits=")?;
            Some(bits.parse::<u32>().expect("window bits"))
        });
        Deflate {
            answer: answer.to_owned(),
            inflate: Decompress::new(false),
            windowed: window.filter(|&b| b < 15).map(Windowed::new),
            server_context: !has("server_no_context_takeover"),
            compress: Compress::new(Compression::default(), false),
            client_context: !has("client_no_context_takeover"),
        }
    }

    fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        if !self.server_context {
            // Strict: a relay that took context over would fail here.
            self.inflate.reset(false);
            if let Some(w) = self.windowed.as_mut() {
                w.reset();
            }
        }
        let windowed = self.windowed.as_mut().map(|w| w.message(payload));
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(input.len() * 8 + 64);
        let start = self.inflate.total_in();
        loop {
            let used = (self.inflate.total_in() - start) as usize;
            self.inflate
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
                .expect("the relay's message inflates");
            if (self.inflate.total_in() - start) as usize == input.len()
                && out.len() < out.capacity()
            {
                if let Some(w) = windowed {
                    assert_eq!(w, out, "inflated within the announced window");
                }
                return out;
            }
            out.reserve(out.capacity().max(1024));
        }
    }

    /// `payload` compressed as the next message, the tail removed.
    pub(crate) fn compress(&mut self, payload: &[u8]) -> Vec<u8> {
        if !self.client_context {
            self.compress.reset();
        }
        let mut out = Vec::with_capacity(payload.len() + 64);
        let start = self.compress.total_in();
        loop {
            let used = (self.compress.total_in() - start) as usize;
            self.compress
                .compress_vec(&payload[used..], &mut out, FlushCompress::Sync)
                .unwrap();
            if (self.compress.total_in() - start) as usize == payload.len()
                && out.len() < out.capacity()
            {
                break;
            }
            out.reserve(out.capacity().max(1024));
        }
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }
}

impl Strict {
    /// Opens `/v1/ws` (`query` appended) and checks the 101.
    pub(crate) fn connect(addr: SocketAddr, query: &str) -> Strict {
        Strict::connect_offering(addr, query, &[])
    }

    /// [`Strict::connect`] offering these `Sec-WebSocket-Extensions` lines;
    /// with the relay's answer, the client speaks permessage-deflate.
    pub(crate) fn connect_offering(addr: SocketAddr, query: &str, offers: &[&str]) -> Strict {
        Strict::connect_with(addr, query, offers, &[])
    }

    /// [`Strict::connect_offering`] asking for these subprotocols
    /// (`tickrelay.msgpack`).
    pub(crate) fn connect_with(
        addr: SocketAddr,
        query: &str,
        offers: &[&str],
        protocols: &[&str],
    ) -> Strict {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(super::DEADLINE)).unwrap();
        let extensions: String = offers
            .iter()
            .map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n"))
            .chain(
                protocols
                    .iter()
                    .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")),
            )
            .collect();
        write!(
            tcp,
            "GET /v1/ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
        )
        .unwrap();
        let mut s = Strict {
            tcp,
            buf: Vec::new(),
            deflate: None,
        };
        let end = loop {
            if let Some(i) = s.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(s.fill(), "the relay closed during the handshake");
        };
        let head = String::from_utf8_lossy(&s.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "the accept key: {head}"
        );
        s.buf.drain(..end);
        s.deflate = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("sec-websocket-extensions")
                    .then(|| v.trim())
            })
            .map(Deflate::new);
        s
    }

    /// Sends `payload` as one compressed text message (RSV1).
    pub(crate) fn send_compressed(&mut self, payload: &[u8]) {
        let d = self.deflate.as_mut().expect("permessage-deflate agreed");
        let body = d.compress(payload);
        self.send(&masked(TEXT | 0x40, &body));
    }

    /// Reads more; false at EOF.
    pub(crate) fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65_536];
        match self.tcp.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("reading from the relay: {e}"),
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).unwrap();
    }

    /// The next server frame; `None` at EOF.
    pub(crate) fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 2 {
                let b = &self.buf;
                let rsv1 = b[0] & 0x40 != 0;
                assert_eq!(b[0] & 0x30, 0, "RSV2 and RSV3 are never set");
                assert!(
                    !rsv1 || (self.deflate.is_some() && matches!(b[0] & 0x0F, 1 | 2)),
                    "RSV1 only on data frames, with permessage-deflate agreed: {:#x}",
                    b[0]
                );
                assert_eq!(b[0] & 0x80, 0x80, "the relay's frames are whole");
                assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
                let (len, at) = match b[1] & 0x7F {
                    126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                    127 if b.len() >= 10 => (
                        u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && b.len() >= at + len {
                    let mut frame = Frame {
                        op: b[0] & 0x0F,
                        payload: b[at..at + len].to_vec(),
                        compressed: rsv1,
                        wire: len,
                    };
                    self.buf.drain(..at + len);
                    if let (true, Some(d)) = (rsv1, self.deflate.as_mut()) {
                        frame.payload = d.inflate(&frame.payload);
                    }
                    return Some(frame);
                }
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "EOF inside a frame");
                return None;
            }
        }
    }

    /// The next text frame containing `needle`, past the relay's pings and
    /// feed-status frames (which come whenever the feed's status changes).
    pub(crate) fn text_with(&mut self, needle: &str) -> Frame {
        loop {
            let f = self
                .frame()
                .unwrap_or_else(|| panic!("EOF before a frame with {needle}"));
            if f.op == 0x1 && f.text().contains(needle) {
                return f;
            }
            let status = f.op == 0x1 && f.text().contains(r#""type":"feed""#);
            assert!(f.op == 0x9 || status, "{needle} expected: {f:?}");
        }
    }

    /// Frames up to the relay's Close (pings and data skipped); its code.
    pub(crate) fn until_close(&mut self) -> (u16, String) {
        loop {
            match self.frame() {
                Some(f) if f.op == 0x8 => {
                    let code = f.close_code().expect("the relay's Close carries a code");
                    let reason = String::from_utf8(f.payload[2..].to_vec())
                        .expect("the relay's close reason is UTF-8");
                    return (code, reason);
                }
                Some(_) => continue,
                None => panic!("EOF before the relay's Close frame"),
            }
        }
    }

    /// Nothing more from the relay but its FIN, within [`AT_ONCE`] of now
    /// (the client has done its part of the handshake).
    pub(crate) fn expect_fin_at_once(&mut self, what: &str) {
        let start = Instant::now();
        self.tcp.set_read_timeout(Some(super::DEADLINE)).unwrap();
        while self.fill() {}
        assert!(
            self.buf.is_empty(),
            "{what}: bytes after the Close frame: {:?}",
            self.buf
        );
        let took = start.elapsed();
        assert!(
            took < AT_ONCE,
            "{what}: the relay closed the TCP connection {took:?} after the closing handshake"
        );
    }

    /// The server started the close: answer it as a strict client does,
    /// then expect the FIN at once.
    pub(crate) fn answer_close(&mut self, code: u16, what: &str) {
        self.send(&masked(CLOSE, &code.to_be_bytes()));
        self.expect_fin_at_once(what);
    }
}
