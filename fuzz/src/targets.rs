//! The fuzz targets. Each states the invariants it checks; a broken one
//! panics, and the engine keeps the input.

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

/// `http_head`: the raw HTTP head parser of `GET /v1/stream` connections
/// (`raw_stream::serve`, whose parser is private), reached through its
/// public function over a loopback TCP connection, answering through a
/// router with the relay's JSON error layer.
///
/// Invariants: never a panic; the answer starts with an HTTP/1.1 status
/// line; every error answer's body is the JSON error shape.
pub struct HttpHeadTarget {
    rt: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    app: axum::Router,
}

impl HttpHeadTarget {
    /// Binds a loopback listener for the target's connections.
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
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
        HttpHeadTarget { rt, listener, app }
    }
}

impl Default for HttpHeadTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for HttpHeadTarget {
    fn name(&self) -> &'static str {
        "http_head"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        let targets = [
            "/v1/stream",
            "/v1/stream?symbols=AAPL,MSFT",
            "/v1/stream?symbols=%FF%FE&x",
            "/v1/stream?symbols=a&symbols=b",
            "/v1/stream?%",
            "/elsewhere",
            "*",
            "http://host/v1/stream",
        ];
        let mut head = format!(
            "GET {} HTTP/1.{}\r\n",
            targets[rng.gen_range(0..targets.len())],
            rng.gen_range(0..2)
        );
        let headers = [
            "Host: localhost",
            "Accept: text/event-stream",
            "Last-Event-ID: S1:42",
            "Authorization: Bearer x",
            "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "Bad Header: x",
            "Content-Length: 5",
            ":",
        ];
        for _ in 0..rng.gen_range(0..6) {
            head.push_str(headers[rng.gen_range(0..headers.len())]);
            head.push_str("\r\n");
        }
        if rng.gen_ratio(7, 8) {
            head.push_str("\r\n");
        }
        head.into_bytes()
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.listener.local_addr().expect("bound");
        let app = self.app.clone();
        let listener = &self.listener;
        let answer = self.rt.block_on(async {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (server, remote) = listener.accept().await.expect("accept");
            let serving = tokio::spawn(tickrelay::raw_stream::serve(server, remote, app));
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
            return sig(&[0]);
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
            let body = http_body(&answer).expect("a readable body");
            let v: serde_json::Value =
                serde_json::from_slice(&body).expect("an error body is JSON");
            assert!(v["error"]["code"].is_string(), "error shape: {v}");
            assert!(v["error"]["message"].is_string(), "error shape: {v}");
        }
        sig(&[1, u64::from(status)])
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
    use tickrelay::transport::stream::{resume_point, sub_options};
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
