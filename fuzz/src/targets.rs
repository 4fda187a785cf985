//! The fuzz targets. Each states the invariants it checks; a broken one
//! panics, and the engine keeps the input.
//! (Over 700 lines: five targets with their invariants and the small
//! models they check against, kept together so the engine's table of
//! targets reads as one list.)
//!

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use tickrelay::feed::sequencer::{Sequencer, SequencerConfig, Sink};
use tickrelay::price::Price;
use tickrelay::wire::{
    self, DecodeError, HEADER_LEN, Message, Packet, PacketBuilder, PacketKind, Session, StateQuote,
    StateTrade, decode_message,
};

use tickrelay::accept::MAX_HEAD;

use crate::engine::{Target, fnv};

/// Every target, by name.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(PacketTarget),
        Box::new(MessageTarget),
        Box::new(SequencerTarget),
        Box::new(HttpHeadTarget::new()),
        Box::new(ClientOpTarget),
    ]
}

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn Target>> {
    all().into_iter().find(|t| t.name() == name)
}

fn sig(parts: &[u64]) -> u64 {
    let mut bytes = Vec::with_capacity(parts.len() * 8);
    for p in parts {
        bytes.extend_from_slice(&p.to_le_bytes());
    }
    fnv(&bytes)
}

fn error_index(e: DecodeError) -> u64 {
    fnv(e.reason().as_bytes()) & 0xff
}

fn random_session(rng: &mut SmallRng) -> Session {
    match rng.gen_range(0..4) {
        0 => Session::new("S1"),
        1 => Session::new("S2"),
        2 => {
            let n = rng.gen_range(1..=10);
            let id: String = (0..n).map(|_| rng.gen_range(b'!'..=b'~') as char).collect();
            Session::new(&id)
        }
        _ => {
            let mut raw = [b' '; 10];
            rng.fill_bytes(&mut raw);
            Session(raw)
        }
    }
}

/// A message of any kind with random, often edge, values.
fn random_message(rng: &mut SmallRng) -> Message<'static> {
    fn int(rng: &mut SmallRng) -> u64 {
        match rng.gen_range(0..4) {
            0 => rng.gen_range(0..300),
            1 => u64::MAX - rng.gen_range(0..3),
            _ => rng.r#gen(),
        }
    }
    let locate = rng.r#gen();
    let ts = int(rng);
    match rng.gen_range(0..4) {
        0 => {
            let symbol: &'static str =
                ["AAPL", "MSFT", "X", "BRK.B", "ABCDEFGHIJKLMNOP"][rng.gen_range(0..5)];
            let name: &'static str = ["Apple Inc.", "", "Ünïcode Corp", "x"][rng.gen_range(0..4)];
            Message::Directory {
                locate,
                ts,
                symbol,
                name,
                prev_close: Price(int(rng) as i64),
            }
        }
        1 => Message::Quote {
            locate,
            ts,
            bid: Price(int(rng) as i64),
            ask: Price(int(rng) as i64),
            bid_size: rng.r#gen(),
            ask_size: rng.r#gen(),
        },
        2 => Message::Trade {
            locate,
            ts,
            price: Price(int(rng) as i64),
            size: rng.r#gen(),
            volume: int(rng),
        },
        _ => Message::State {
            locate,
            ts,
            quote: rng.r#gen::<bool>().then(|| StateQuote {
                seq: int(rng).max(1),
                bid: Price(int(rng) as i64),
                ask: Price(int(rng) as i64),
                bid_size: rng.r#gen(),
                ask_size: rng.r#gen(),
            }),
            trade: rng.r#gen::<bool>().then(|| StateTrade {
                seq: int(rng).max(1),
                last: Price(int(rng) as i64),
                last_size: rng.r#gen(),
                volume: int(rng),
            }),
        },
    }
}

/// `packet`: [`Packet::parse`] and [`decode_message`] on whole datagrams.
///
/// Invariants: a packet that parses has a valid session id; a heartbeat or
/// end of session is exactly the header; a data packet's framed messages
/// are exactly `count` and fill the datagram to the byte; every message
/// that decodes encodes back to the same message.
pub struct PacketTarget;

impl Target for PacketTarget {
    fn name(&self) -> &'static str {
        "packet"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        let session = random_session(rng);
        let seq = rng.gen_range(0..1_000_000);
        match rng.gen_range(0..6) {
            0 => wire::header(session, seq, 0).to_vec(),
            1 => wire::header(session, seq, 0xFFFF).to_vec(),
            2 => {
                // A header promising messages, then random bytes.
                let mut p = wire::header(session, seq, rng.r#gen()).to_vec();
                let n = rng.gen_range(0..200);
                p.extend((0..n).map(|_| rng.r#gen::<u8>()));
                p
            }
            _ => {
                let mut b = PacketBuilder::new(session, seq);
                let mut out = Vec::new();
                for _ in 0..rng.gen_range(1..8) {
                    let m = random_message(rng);
                    b.push(&m, &mut |p| out.push(p.to_vec()));
                }
                b.flush(&mut |p| out.push(p.to_vec()));
                out.swap_remove(0)
            }
        }
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        let packet = match Packet::parse(input) {
            Ok(p) => p,
            Err(e) => return sig(&[0, error_index(e)]),
        };
        assert!(packet.session.is_valid(), "parsed a bad session id");
        let mut framed = HEADER_LEN;
        let mut kinds = 0u64;
        let mut n = 0u64;
        for raw in packet.messages() {
            framed += 2 + raw.len();
            n += 1;
            match decode_message(raw) {
                Ok(m) => {
                    kinds |= 1 << (u64::from(kind_code(&m)) & 31);
                    round_trip(&m);
                }
                Err(e) => kinds |= 1 << (32 + (error_index(e) & 31)),
            }
        }
        match packet.kind {
            PacketKind::Data => {
                assert_eq!(n, u64::from(packet.count), "message count");
                assert_eq!(framed, input.len(), "framing must fill the datagram");
            }
            PacketKind::Heartbeat | PacketKind::EndOfSession => {
                assert_eq!(input.len(), HEADER_LEN, "a header alone");
                assert_eq!(n, 0);
            }
        }
        sig(&[1, packet.kind as u64, n.min(8), kinds])
    }
}

fn kind_code(m: &Message<'_>) -> u8 {
    match m {
        Message::Directory { .. } => b'D',
        Message::Quote { .. } => b'Q',
        Message::Trade { .. } => b'T',
        Message::State { .. } => b'S',
    }
}

fn round_trip(m: &Message<'_>) {
    let mut again = Vec::new();
    m.encode(&mut again);
    assert_eq!(
        decode_message(&again).as_ref(),
        Ok(m),
        "a decoded message must encode back to itself"
    );
}

/// `message`: [`decode_message`] on single MessagePack payloads.
///
/// Invariant: no panic; a decoded message encodes back to the same message.
pub struct MessageTarget;

impl Target for MessageTarget {
    fn name(&self) -> &'static str {
        "message"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        let m = random_message(rng);
        let mut out = Vec::new();
        m.encode(&mut out);
        match rng.gen_range(0..4) {
            // Extra trailing fields (the array grows; the relay ignores them).
            0 => {
                if let Some(first) = out.first_mut() {
                    if (0x90..0x9f).contains(first) {
                        *first += 1;
                        let _ = rmp::encode::write_uint(&mut out, rng.r#gen());
                    }
                }
            }
            // A field of the wrong type somewhere.
            1 => {
                let at = rng.gen_range(1..out.len().max(2)).min(out.len());
                out.insert(at, [0xc0, 0xc2, 0xca, 0xa1, 0xc4][rng.gen_range(0..5)]);
            }
            _ => {}
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        match decode_message(input) {
            Ok(m) => {
                round_trip(&m);
                sig(&[1, u64::from(kind_code(&m)), input.len().min(64) as u64 / 8])
            }
            Err(e) => sig(&[0, error_index(e), u64::from(*input.first().unwrap_or(&0))]),
        }
    }
}

/// What the sequencer target's sink saw.
#[derive(Default)]
struct Check {
    session: Option<Session>,
    ended: bool,
    /// The last sequence applied in the current session.
    last: Option<u64>,
    first: u64,
    applied: u64,
    /// Well-formed packets seen per session, by `(seq, end)`.
    seen: HashMap<Session, Vec<(u64, u64)>>,
}

impl Sink for Check {
    fn message(&mut self, seq: u64, _payload: &[u8]) {
        assert!(self.session.is_some(), "a message before any session");
        assert!(seq >= self.first, "a message before the session's first");
        if let Some(last) = self.last {
            assert!(
                seq > last,
                "sequence {seq} applied after {last}: twice or out of order"
            );
        }
        self.last = Some(seq);
        self.applied += 1;
    }

    fn new_session(&mut self, session: Session, first_seq: u64) {
        assert!(session.is_valid(), "a session from a bad id");
        if let Some(old) = self.session {
            assert_ne!(old, session, "the same session started twice");
            if !self.ended {
                // Leaving a live session needs two distinct packets of the new one.
                let mut seen = self.seen.get(&session).cloned().unwrap_or_default();
                seen.sort_unstable();
                seen.dedup();
                assert!(
                    seen.len() >= 2,
                    "left live session {old} for {session} on one packet"
                );
            }
        }
        self.session = Some(session);
        self.ended = false;
        self.last = None;
        self.first = first_seq;
    }

    fn end_of_session(&mut self, session: Session) {
        assert_eq!(Some(session), self.session);
        self.ended = true;
    }
}

/// `sequencer`: the [`Sequencer`] fed an arbitrary script of datagrams —
/// well-formed packets of a few sessions at nearby sequences, heartbeats,
/// ends of session, raw bytes — and clock steps, as the ingest loop feeds it
/// (a datagram reaches it only when [`Packet::parse`] accepts it).
///
/// Invariants: never a panic; within a session every sequence is applied at
/// most once and in increasing order, none below the session's first; a
/// live session is left only for a session with two distinct well-formed
/// packets; a datagram that fails to parse changes nothing.
pub struct SequencerTarget;

impl SequencerTarget {
    const SESSIONS: [&'static str; 3] = ["S1", "S2", "S3"];
}

impl Target for SequencerTarget {
    fn name(&self) -> &'static str {
        "sequencer"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        // A plausible script: mostly one session in order, with faults.
        let n = rng.gen_range(4..80);
        let mut out = Vec::with_capacity(n * 4);
        let mut seq: u8 = 1;
        for _ in 0..n {
            let op = match rng.gen_range(0..10) {
                0..=5 => 0,
                6 => 4,
                7 => 7,
                8 => 6,
                _ => rng.gen_range(0..8),
            };
            out.push(op);
            out.push(if rng.gen_ratio(1, 8) {
                rng.gen_range(0..4)
            } else {
                0
            });
            let s = if rng.gen_ratio(1, 6) {
                seq.wrapping_sub(rng.gen_range(0..4))
            } else {
                seq
            };
            out.push(s);
            let count = rng.gen_range(1..4);
            out.push(count);
            if op == 0 {
                seq = seq.wrapping_add(count);
            }
            if op == 6 {
                let junk = rng.gen_range(0..24);
                out.push(junk);
                out.extend((0..junk).map(|_| rng.r#gen::<u8>()));
            }
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        let mut s = Sequencer::new(SequencerConfig {
            gap_hold: Duration::from_millis(100),
            max_held_packets: 16,
        });
        let mut check = Check::default();
        let t0 = Instant::now();
        let mut now = t0;
        let mut it = input.iter().copied();
        let mut trace = 0u64;
        while let Some(op) = it.next() {
            let who = it.next().unwrap_or(0);
            let seq = u64::from(it.next().unwrap_or(1));
            let count = u16::from(it.next().unwrap_or(1) % 5);
            let session = match who % 5 {
                3 => Session(*b"BAD\x00      "),
                4 => Session::new("S1"),
                i => Session::new(Self::SESSIONS[usize::from(i)]),
            };
            let datagram: Vec<u8> = match op % 8 {
                0..=3 => {
                    let mut b = PacketBuilder::new(session, seq).with_max_messages(count.max(1));
                    let mut out = Vec::new();
                    for k in 0..count.max(1) {
                        let m = Message::Trade {
                            locate: 1,
                            ts: seq + u64::from(k),
                            price: Price(1),
                            size: 1,
                            volume: seq,
                        };
                        b.push(&m, &mut |p| out.push(p.to_vec()));
                    }
                    b.flush(&mut |p| out.push(p.to_vec()));
                    out.swap_remove(0)
                }
                4 => wire::header(session, seq, 0).to_vec(),
                5 => wire::header(session, seq, 0xFFFF).to_vec(),
                6 => {
                    // Raw bytes after a header of the chosen session.
                    let n = usize::from(it.next().unwrap_or(0) % 32);
                    let mut d = wire::header(session, seq, count).to_vec();
                    d.extend(it.by_ref().take(n));
                    d
                }
                _ => {
                    let step = Duration::from_millis(u64::from(who) * 4 + seq % 8);
                    now += step;
                    if count == 4 {
                        s.stalled(step);
                    }
                    s.on_tick(now, &mut check);
                    trace = trace.rotate_left(3) ^ 7;
                    continue;
                }
            };
            let before = (s.session(), check.applied);
            match Packet::parse(&datagram) {
                Ok(p) => {
                    // Only packets whose messages decode are evidence.
                    if p.messages_decode() {
                        check
                            .seen
                            .entry(p.session)
                            .or_default()
                            .push((p.seq, p.end_seq()));
                    }
                    s.on_packet(&p, &datagram, now, &mut check);
                    trace = trace.rotate_left(3) ^ (p.kind as u64 + 1);
                }
                Err(e) => {
                    // What the ingest does with it: count it, nothing else.
                    assert_eq!(before, (s.session(), check.applied));
                    trace = trace.rotate_left(3) ^ (error_index(e) + 8);
                }
            }
            assert_eq!(s.session(), check.session, "sink and sequencer agree");
        }
        let st = s.stats();
        sig(&[
            trace & 0xffff,
            st.gaps_opened.min(4),
            st.lost_messages.min(4),
            st.sessions_confirmed.min(3),
            st.unconfirmed_session_packets.min(3),
            st.stale_session_packets.min(3),
            u64::from(s.in_gap()),
        ])
    }
}

/// `http_head`: the request head parser of `GET /v1/stream` and `/v1/ws`
/// connections (`raw_stream::parse_head`), called directly on the bytes.
/// One complete head in [`ROUTE_EVERY`] is then answered by a router with
/// the relay's JSON error layer, in process; one input in [`TCP_EVERY`] goes
/// the whole way through `raw_stream::serve` over a loopback connection, for
/// its read loop and its own 400s. Which inputs take those paths depends
/// only on the input, so a replay takes the same path.
///
/// Invariants: never a panic. A complete head is at most `MAX_HEAD` bytes
/// and `MAX_HEADERS` headers, and parses the same from its own bytes. The
/// answer does not depend on how the bytes arrived: cut anywhere before the
/// head's end, the bytes so far ask for more; cut after it, the head is the
/// same. A refusal is final: more bytes do not turn it into a head. An
/// incomplete head is shorter than `MAX_HEAD`. Every error answer (routed or
/// over TCP) is the JSON error shape, under an HTTP/1.1 status line.
pub struct HttpHeadTarget {
    rt: tokio::runtime::Runtime,
    listener: Option<tokio::net::TcpListener>,
    app: axum::Router,
}

/// One complete head in this many is answered through the router.
pub const ROUTE_EVERY: u64 = 8;
/// One input in this many also goes through `raw_stream::serve` over TCP.
pub const TCP_EVERY: u64 = 4096;

impl HttpHeadTarget {
    /// A runtime and the router heads are answered by. The loopback listener
    /// is bound on the first input that needs it.
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let app = axum::Router::new()
            .route(
                "/v1/stream",
                axum::routing::get(
                    |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                        format!("data: {}\n\n", q.len())
                    },
                ),
            )
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "nothing here") })
            .layer(axum::middleware::from_fn(tickrelay::http::json_errors));
        HttpHeadTarget {
            rt,
            listener: None,
            app,
        }
    }

    /// The router's answer to a parsed head: its status, after checking an
    /// error's body is the JSON error shape.
    fn route(&self, request: axum::http::Request<()>) -> u16 {
        use tower::ServiceExt;
        let app = self.app.clone();
        let (status, body) = self.rt.block_on(async move {
            let request = request.map(|()| axum::body::Body::empty());
            let Ok(response) = app.oneshot(request).await;
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("a body under 1 MiB");
            (status, body)
        });
        if status >= 400 {
            check_error_body(&body);
        }
        status
    }

    /// `raw_stream::serve`'s answer to `input` sent over loopback TCP, after
    /// checking its shape; 0 when it closed without one.
    fn over_tcp(&mut self, input: &[u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = self.listener.get_or_insert_with(|| {
            self.rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("a loopback port")
        });
        let addr = listener.local_addr().expect("bound");
        let app = self.app.clone();
        let answer = self.rt.block_on(async {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (server, remote) = listener.accept().await.expect("accept");
            let serving = tokio::spawn(tickrelay::accept::serve(server, remote, app));
            let _ = client.write_all(input).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer));
            assert!(read.await.is_ok(), "no answer within 5 s");
            serving.await.expect("serve panicked");
            answer
        });
        if answer.is_empty() {
            return 0;
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 "),
            "not a status line: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
        let status: u16 = std::str::from_utf8(&answer[9..12.min(answer.len())])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a numeric status");
        if status >= 400 {
            check_error_body(&http_body(&answer).expect("a readable body"));
        }
        status
    }
}

impl Default for HttpHeadTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// `{"error":{"code":…,"message":…}}`, both strings.
fn check_error_body(body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).expect("an error body is JSON");
    assert!(v["error"]["code"].is_string(), "error shape: {v}");
    assert!(v["error"]["message"].is_string(), "error shape: {v}");
}

/// What `parse_head` said, reduced to what the invariants compare.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    More,
    Refused(tickrelay::accept::HeadError),
    Head {
        len: usize,
        method: String,
        uri: String,
        version: axum::http::Version,
        headers: Vec<(String, Vec<u8>)>,
    },
}

fn parsed(buf: &[u8]) -> Parsed {
    use tickrelay::accept::parse_head;
    match parse_head(buf) {
        Ok(None) => Parsed::More,
        Err(e) => Parsed::Refused(e),
        Ok(Some(h)) => Parsed::Head {
            len: h.len,
            method: h.request.method().to_string(),
            uri: h.request.uri().to_string(),
            version: h.request.version(),
            headers: h
                .request
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        },
    }
}

impl Target for HttpHeadTarget {
    fn name(&self) -> &'static str {
        "http_head"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        let methods = ["GET", "GET", "GET", "POST", "G\u{7f}T", "get"];
        let targets = [
            "/v1/stream",
            "/v1/stream?symbols=AAPL,MSFT",
            "/v1/stream?symbols=%FF%FE&x",
            "/v1/stream?symbols=a&symbols=b",
            "/v1/stream?%",
            "/v1/ws?format=msgpack",
            "/elsewhere",
            "*",
            "http://host/v1/stream",
            "/v1/stream?a=\u{e9}",
        ];
        let versions = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "];
        let eol = if rng.gen_ratio(1, 8) { "\n" } else { "\r\n" };
        let mut head = format!(
            "{} {} {}{eol}",
            methods[rng.gen_range(0..methods.len())],
            targets[rng.gen_range(0..targets.len())],
            versions[rng.gen_range(0..versions.len())],
        );
        let headers = [
            "Host: localhost",
            "Accept: text/event-stream",
            "Last-Event-ID: S1:42",
            "LAST-EVENT-ID: S1:43",
            "Authorization: Bearer x",
            "Upgrade: websocket",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "X-Obs: caf\u{e9}",
            "X-Folded: a\r\n b",
            "Bad Header: x",
            "Content-Length: 5",
            ":",
        ];
        // Now and then more headers than the parser takes.
        let n = if rng.gen_ratio(1, 16) {
            rng.gen_range(40..60)
        } else {
            rng.gen_range(0..6)
        };
        for _ in 0..n {
            head.push_str(headers[rng.gen_range(0..headers.len())]);
            head.push_str(eol);
        }
        if rng.gen_ratio(7, 8) {
            head.push_str(eol);
        }
        // Now and then a head about the size limit.
        if rng.gen_ratio(1, 32) {
            let n = MAX_HEAD - head.len() + rng.gen_range(0..16) - 8;
            head.push_str("X-Big: ");
            head.extend(std::iter::repeat_n('b', n));
            head.push_str("\r\n\r\n");
        }
        let mut bytes = head.into_bytes();
        // Bytes after the head: a body, a WebSocket frame, a second request.
        if rng.gen_ratio(1, 4) {
            let after: [&[u8]; 3] = [
                b"hello",
                b"\x81\x85\x00\x00\x00\x00hello",
                b"GET / HTTP/1.1\r\n\r\n",
            ];
            bytes.extend_from_slice(after[rng.gen_range(0..after.len())]);
        }
        bytes
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        use tickrelay::accept::{MAX_HEADERS, parse_head};
        let whole = parsed(input);
        // Cut points that depend only on the input.
        let h = fnv(input);
        let cuts = [h as usize, (h >> 21) as usize, (h >> 42) as usize];
        let s = match &whole {
            Parsed::Head {
                len,
                method,
                version,
                headers,
                ..
            } => {
                let len = *len;
                assert!(
                    len > 0 && len <= input.len() && len <= MAX_HEAD,
                    "head length {len}"
                );
                assert!(headers.len() <= MAX_HEADERS, "{} headers", headers.len());
                assert_eq!(
                    parsed(&input[..len]),
                    whole,
                    "the head alone parses differently"
                );
                for c in cuts {
                    let cut = c % len;
                    assert_eq!(parsed(&input[..cut]), Parsed::More, "cut at {cut} of {len}");
                }
                let after = input.len() - len;
                let mut extended = input.to_vec();
                extended.extend_from_slice(b"\r\n\r\n");
                assert_eq!(parsed(&extended), whole, "bytes after the head changed it");
                let routed = if h % ROUTE_EVERY == 0 {
                    let Ok(Some(head)) = parse_head(input) else {
                        unreachable!("parsed above")
                    };
                    self.route(head.request)
                } else {
                    0
                };
                vec![
                    1,
                    u64::from(method == "GET"),
                    u64::from(*version == axum::http::Version::HTTP_11),
                    (headers.len() as u64).min(4),
                    u64::from(after > 0),
                    u64::from(routed),
                ]
            }
            Parsed::More => {
                assert!(
                    input.len() < MAX_HEAD,
                    "{} bytes and still asking",
                    input.len()
                );
                if !input.is_empty() {
                    let cut = cuts[0] % input.len();
                    assert_eq!(parsed(&input[..cut]), Parsed::More, "cut at {cut}");
                }
                vec![2]
            }
            Parsed::Refused(e) => {
                let mut extended = input.to_vec();
                extended.extend_from_slice(b"\r\n\r\n");
                assert!(
                    matches!(parsed(&extended), Parsed::Refused(_)),
                    "a refused head ({e}) was taken with more bytes"
                );
                // The refusal is the one a reader that stops at the first
                // answer gives, whatever the segments.
                let first = cuts
                    .iter()
                    .map(|c| c % (input.len() + 1))
                    .filter_map(|cut| match parsed(&input[..cut]) {
                        Parsed::More => None,
                        other => Some(other),
                    })
                    .next();
                if let Some(other) = first {
                    assert_eq!(other, whole, "a prefix was refused differently");
                }
                vec![3, fnv(e.reason().as_bytes()) & 0xff]
            }
        };
        let mut s = s;
        if h % TCP_EVERY == 0 {
            s.push(u64::from(self.over_tcp(input)) << 16);
        }
        sig(&s)
    }
}

/// The body of an HTTP/1.1 answer, chunked or with a length.
fn http_body(answer: &[u8]) -> Option<Vec<u8>> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let mut rest = &answer[split..];
    if !head.contains("transfer-encoding: chunked") {
        return Some(rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// `client_op`: WebSocket client operations, JSON and MessagePack, decoded
/// as the `/v1/ws` handler decodes them (`ClientOp` from serde_json or
/// rmp-serde) and then checked as it checks them (symbol list, mode and
/// `max_hz`, resume token).
///
/// Invariant: never a panic.
pub struct ClientOpTarget;

impl Target for ClientOpTarget {
    fn name(&self) -> &'static str {
        "client_op"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        use serde_json::{Value, json};
        let symbols: Vec<Value> = (0..rng.gen_range(0..5))
            .map(|_| {
                json!(
                    ["AAPL", "*", "", "msft", "<x>", "ABCDEFGHIJKLMNOPQR", "A,B"]
                        [rng.gen_range(0..7)]
                )
            })
            .collect();
        let max_hz = [
            json!(null),
            json!(1),
            json!(0),
            json!(-1),
            json!(1e-300),
            json!(1e300),
            json!(0.5),
            json!("10"),
        ][rng.gen_range(0..8)]
        .clone();
        let name = ["subscribe", "nope", "SUBSCRIBE"][rng.gen_range(0..3)];
        let mode = ["conflate", "every", "", "EVERY"][rng.gen_range(0..4)];
        let since = ["S1:42", "S1:", ":", "S1:18446744073709551616", "x"][rng.gen_range(0..5)];
        let op = match rng.gen_range(0..5) {
            0 => json!({"op": "ping"}),
            1 => json!({"op": "unsubscribe", "symbols": symbols}),
            2 => json!({"op": name, "symbols": symbols}),
            _ => json!({
                "op": "subscribe",
                "symbols": symbols,
                "mode": mode,
                "max_hz": max_hz,
                "since": since,
            }),
        };
        // Half JSON text, half MessagePack binary (as maps, like browsers send).
        if rng.r#gen() {
            serde_json::to_vec(&op).unwrap_or_default()
        } else {
            let mut out = vec![0xB1]; // marks MessagePack for `run`
            out.extend(rmp_serde::to_vec_named(&op).unwrap_or_default());
            out
        }
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        use tickrelay::transport::ws::ClientOp;
        // Both decoders see every input; the marker only shapes generation.
        let body = input.strip_prefix(&[0xB1]).unwrap_or(input);
        let json = serde_json::from_slice::<ClientOp>(body);
        let msgpack = rmp_serde::from_slice::<ClientOp>(body);
        let mut s = vec![u64::from(json.is_ok()), u64::from(msgpack.is_ok())];
        for op in [json.ok(), msgpack.ok()].into_iter().flatten() {
            s.push(check_op(op));
        }
        sig(&s)
    }
}

/// The checks `/v1/ws` makes on a decoded operation.
fn check_op(op: tickrelay::transport::ws::ClientOp) -> u64 {
    use tickrelay::transport::subscriptions::{resume_point, sub_options};
    use tickrelay::transport::ws::ClientOp;
    match op {
        ClientOp::Ping => 1,
        ClientOp::Unsubscribe { symbols } => {
            2 + u64::from(tickrelay::api::parse_symbol_list(&symbols, 100).is_ok())
        }
        ClientOp::Subscribe {
            symbols,
            mode,
            max_hz,
            since,
            ..
        } => {
            let list = tickrelay::api::parse_symbol_list(&symbols, 100).is_ok();
            // A positive max_hz below about 5e-20 (1e-300, say) once made
            // `SubOptions::new` overflow a Duration; it is refused now
            // (reproducer: fuzz/corpus/client_op/known-tiny-max-hz.json).
            let opts = sub_options(mode.as_deref(), max_hz).is_ok();
            let resume = resume_point(since.as_deref(), Session::new("S1")).is_some();
            8 + u64::from(list) + 2 * u64::from(opts) + 4 * u64::from(resume)
        }
    }
}
