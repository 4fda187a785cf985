//! A strict WebSocket client over `std::net`: raw frames, masked as a
//! client must, and a check that the relay closes the TCP connection itself
//! after the closing handshake (it never closes its side first).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
}

impl Strict {
    /// Opens `/v1/ws` (`query` appended) and checks the 101.
    pub(crate) fn connect(addr: SocketAddr, query: &str) -> Strict {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(super::DEADLINE)).unwrap();
        write!(
            tcp,
            "GET /v1/ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut s = Strict {
            tcp,
            buf: Vec::new(),
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
        s
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
                assert_eq!(b[0] & 0x70, 0, "no reserved bits without an extension");
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
                    let frame = Frame {
                        op: b[0] & 0x0F,
                        payload: b[at..at + len].to_vec(),
                    };
                    self.buf.drain(..at + len);
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
