//! Delayed data against the real relay: a user whose token says
//! `delay_ms` D sees the market as it was D ago on every transport —
//! WebSocket, SSE, long poll, snapshot — and nothing it is sent (a quote,
//! an envelope's `seq`, an ETag, an answer to a resume point taken from a
//! real-time user) reveals anything fresher. A real-time user on the same
//! relay gets the same quotes at once: the delay is the view's doing.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::feed::now_ns;
use support::ws::{Strict, TEXT, masked};
use support::{FeedAddr, FeedWriter, Relay, get_with, scratch};
use tickrelay::auth::{Claims, Rights, mint_hs256};

const SECRET: &str = "a-test-secret-of-more-than-32-bytes!!";
/// The delayed user's delay.
const DELAY_MS: u64 = 2_000;
const DELAY_NS: u64 = DELAY_MS * 1_000_000;

struct World {
    relay: Relay,
    feed: FeedWriter,
    /// (time just before sending, sequence) of every message sent.
    sent: Vec<(u64, u64)>,
}

impl World {
    fn start(extra: &[&str]) -> World {
        let dir = scratch(&format!("delayed-{}", support::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret: PathBuf = dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let group = FeedAddr::unique();
        let s = secret.to_str().unwrap().to_owned();
        let mut args = vec!["--jwt-secret-file", &s, "--delay-resolution-ms", "100"];
        args.extend_from_slice(extra);
        let relay = Relay::in_process_feed(group, &args);
        let mut feed = FeedWriter::new(group, "DELAYED");
        let before = now_ns();
        let seq = feed.list(&["AAPL", "MSFT"]);
        // The directory first: a door opened before it answers 503.
        relay.wait_seq(seq);
        World {
            relay,
            feed,
            sent: vec![(before, seq)],
        }
    }

    fn quote(&mut self, locate: u16, n: i64) -> u64 {
        let before = now_ns();
        let seq = self.feed.send(&[FeedWriter::quote_msg(locate, n)]);
        self.sent.push((before, seq));
        seq
    }

    fn addr(&self) -> SocketAddr {
        self.relay.addr
    }
}

fn token(delay_ms: u64) -> String {
    let claims = Claims {
        sub: format!("user-{delay_ms}"),
        exp: tickrelay::clock::now_ms() / 1000 + 600,
        nbf: None,
        iat: None,
        iss: None,
        aud: None,
        tickrelay: Rights {
            delay_ms,
            class: Some("nonpro".into()),
            ..Rights::default()
        },
    };
    mint_hs256(SECRET.as_bytes(), &claims).unwrap()
}

/// What one observer got: when, the envelope's `seq`, and each quote's
/// (`seq`, `ts`).
#[derive(Debug, Clone)]
struct Seen {
    at: u64,
    seq: u64,
    quotes: Vec<(u64, u64)>,
}

fn seen(at: u64, body: &Value) -> Seen {
    Seen {
        at,
        seq: body["seq"].as_u64().unwrap_or(0),
        quotes: body["quotes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| (q["seq"].as_u64().unwrap(), q["ts"].as_u64().unwrap()))
            .collect(),
    }
}

/// The newest sequence sent at least the delay before `t`: all a user
/// delayed that long may know of at `t`.
fn allowed(sent: &[(u64, u64)], t: u64) -> u64 {
    sent.iter()
        .filter(|(at, _)| at + DELAY_NS <= t)
        .map(|&(_, seq)| seq)
        .max()
        .unwrap_or(0)
}

/// Every quote was sent at least the delay after its exchange time, and
/// no envelope promised a sequence sent less than the delay before.
fn assert_delayed(what: &str, seen: &[Seen], sent: &[(u64, u64)]) {
    for s in seen {
        for &(seq, ts) in &s.quotes {
            assert!(
                seq == 0 || s.at >= ts + DELAY_NS,
                "{what}: quote seq {seq} (exchange time {ts}) received {} ms after it",
                (s.at.saturating_sub(ts)) / 1_000_000
            );
        }
        let limit = allowed(sent, s.at);
        assert!(
            s.seq <= limit,
            "{what}: envelope seq {} at a time only seq {limit} was {DELAY_MS} ms old",
            s.seq
        );
    }
}

/// The newest quote `seq` among what was seen.
fn newest(seen: &[Seen]) -> u64 {
    seen.iter()
        .flat_map(|s| s.quotes.iter().map(|q| q.0))
        .max()
        .unwrap_or(0)
}

fn ws_observer(addr: SocketAddr, token: &str, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Seen>>>) {
    let mut ws = Strict::connect(addr, &format!("?token={token}"));
    ws.tcp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sub = r#"{"op":"subscribe","symbols":["AAPL","MSFT"]}"#;
    ws.send(&masked(TEXT, sub.as_bytes()));
    while !stop.load(Ordering::Relaxed) {
        let mut chunk = [0u8; 65_536];
        match std::io::Read::read(&mut ws.tcp, &mut chunk) {
            Ok(0) => break,
            Ok(n) => ws.buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        let at = now_ns();
        while let Some(f) = complete_frame(&mut ws) {
            if f.0 == 1 {
                let v: Value = serde_json::from_slice(&f.1).unwrap();
                if v.get("quotes").is_some() {
                    out.lock().unwrap().push(seen(at, &v));
                }
            }
        }
    }
}

/// A whole frame from the buffer (op, payload), without reading.
fn complete_frame(ws: &mut Strict) -> Option<(u8, Vec<u8>)> {
    let b = &ws.buf;
    if b.len() < 2 {
        return None;
    }
    let (len, at) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < at + len {
        return None;
    }
    let f = (b[0] & 0x0F, b[at..at + len].to_vec());
    ws.buf.drain(..at + len);
    Some(f)
}

/// Opens an SSE stream; the reader past the headers (status checked).
fn sse_open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> BufReader<TcpStream> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{resume}\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(tcp);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains(" 200 "), "{path}: {line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            return r;
        }
    }
}

/// The data of the next SSE event carrying quotes, if one comes before a
/// read times out. `line` keeps a line read in part across calls.
fn sse_next(r: &mut BufReader<TcpStream>, line: &mut String) -> Option<Value> {
    loop {
        match r.read_line(line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if !line.ends_with('\n') {
            continue;
        }
        // Chunk-size lines and blank lines carry no field.
        let data = line.trim_end().strip_prefix("data: ").map(str::to_owned);
        line.clear();
        if let Some(d) = data {
            let v: Value = serde_json::from_str(&d).unwrap_or(Value::Null);
            if v.get("quotes").is_some() {
                return Some(v);
            }
        }
    }
}

fn sse_observer(addr: SocketAddr, token: &str, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Seen>>>) {
    let mut r = sse_open(
        addr,
        &format!("/v1/stream?symbols=AAPL,MSFT&token={token}"),
        None,
    );
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(v) = sse_next(&mut r, &mut line) {
            out.lock().unwrap().push(seen(now_ns(), &v));
        }
    }
}

fn poll_observer(addr: SocketAddr, token: &str, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Seen>>>) {
    let auth = format!("Bearer {token}");
    let mut since = String::new();
    while !stop.load(Ordering::Relaxed) {
        let path = format!("/v1/poll?symbols=AAPL,MSFT&timeout_ms=500{since}");
        let r = get_with(addr, &path, &[("Authorization", &auth)]);
        let at = now_ns();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let v: Value = r.json();
        since = format!("&since={}:{}", v["session"].as_str().unwrap(), v["seq"]);
        out.lock().unwrap().push(seen(at, &v));
    }
}

fn snapshot_observer(
    addr: SocketAddr,
    token: &str,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Seen>>>,
) {
    let auth = format!("Bearer {token}");
    while !stop.load(Ordering::Relaxed) {
        let r = get_with(
            addr,
            "/v1/snapshot?symbols=AAPL,MSFT",
            &[("Authorization", &auth)],
        );
        let at = now_ns();
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = r.json();
        // The ETag names the newest seq of the answer: no fresher either.
        let etag = r.header("etag").unwrap().trim_matches('"').to_owned();
        let tag_seq: u64 = etag.split(':').nth(1).unwrap().parse().unwrap();
        out.lock().unwrap().push(Seen {
            at,
            seq: tag_seq,
            quotes: Vec::new(),
        });
        out.lock().unwrap().push(seen(at, &v));
        std::thread::sleep(Duration::from_millis(100));
    }
}

type Observer = fn(SocketAddr, &str, Arc<AtomicBool>, Arc<Mutex<Vec<Seen>>>);

#[test]
fn a_delayed_user_sees_nothing_fresher_than_its_delay_on_any_transport() {
    let mut w = World::start(&[]);
    let delayed = token(DELAY_MS);
    let live = token(0);
    let stop = Arc::new(AtomicBool::new(false));
    let observers: [(&str, Observer, &str); 5] = [
        ("websocket", ws_observer, &delayed),
        ("sse", sse_observer, &delayed),
        ("long poll", poll_observer, &delayed),
        ("snapshot", snapshot_observer, &delayed),
        ("real-time websocket", ws_observer, &live),
    ];
    let runs: Vec<_> = observers
        .iter()
        .map(|&(name, observe, token)| {
            let out = Arc::new(Mutex::new(Vec::new()));
            let (addr, token, stop, o) = (w.addr(), token.to_owned(), stop.clone(), out.clone());
            let thread = std::thread::spawn(move || observe(addr, &token, stop, o));
            (name, out, thread)
        })
        .collect();
    // Six seconds of quotes, ten a second, alternating symbols.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(6) {
        w.quote((n % 2) as u16, 1_000_000 + n as i64);
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let end = now_ns();
    stop.store(true, Ordering::Relaxed);
    for (name, out, thread) in runs {
        thread
            .join()
            .unwrap_or_else(|_| panic!("{name} observer failed"));
        let seen = out.lock().unwrap().clone();
        if name.starts_with("real-time") {
            // The witness that the feed is live: quotes reach a real-time
            // user well within the delay.
            let prompt = seen
                .iter()
                .flat_map(|s| s.quotes.iter().map(move |q| s.at.saturating_sub(q.1)))
                .filter(|&lag| lag < DELAY_NS / 4)
                .count();
            assert!(prompt > 20, "the real-time user got {prompt} prompt quotes");
            continue;
        }
        assert_delayed(name, &seen, &w.sent);
        // And the delayed user is served, about the delay behind.
        let behind = allowed(&w.sent, end - 1_000_000_000);
        assert!(
            newest(&seen) >= behind,
            "{name}: newest quote seen {} but seq {behind} was {} ms old at the end",
            newest(&seen),
            DELAY_MS + 1_000
        );
    }
}

#[test]
fn resuming_with_a_real_time_position_reveals_nothing_fresher() {
    let mut w = World::start(&[]);
    let delayed = token(DELAY_MS);
    // Quotes for three seconds: the delayed view holds the first ones.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) {
        w.quote((n % 2) as u16, 1_000_000 + n as i64);
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let fresh = w.sent.last().unwrap().1;
    let session = "DELAYED";
    let check = |what: &str, body: &Value| {
        let s = seen(now_ns(), body);
        assert!(!s.quotes.is_empty(), "{what}: the view's quotes: {body}");
        assert_delayed(what, &[s], &w.sent);
    };
    // SSE with Last-Event-ID from a real-time user.
    let id = format!("{session}:{fresh}");
    let mut r = sse_open(
        w.addr(),
        &format!("/v1/stream?symbols=AAPL,MSFT&token={delayed}"),
        Some(&id),
    );
    let mut data = String::new();
    let first = sse_next(&mut r, &mut data).expect("a first event");
    check("sse resume", &first);
    // Long poll with that `since`: answered at once from the view.
    let auth = format!("Bearer {delayed}");
    let r = get_with(
        w.addr(),
        &format!("/v1/poll?symbols=AAPL,MSFT&since={id}&timeout_ms=100"),
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 200);
    check("poll resume", &r.json());
    // WebSocket subscribe with that `since`.
    let mut ws = Strict::connect(w.addr(), &format!("?token={delayed}"));
    let sub = format!(r#"{{"op":"subscribe","symbols":["AAPL","MSFT"],"since":"{id}"}}"#);
    ws.send(&masked(TEXT, sub.as_bytes()));
    let snap = loop {
        let f = ws.frame().expect("the snapshot");
        if f.op == 1 && f.text().contains(r#""type":"snapshot""#) {
            break f;
        }
    };
    check(
        "websocket resume",
        &serde_json::from_slice(&snap.payload).unwrap(),
    );
}

#[test]
fn a_delay_the_relay_does_not_keep_is_refused() {
    let w = World::start(&["--max-delay-ms", "60000"]);
    let auth = format!("Bearer {}", token(120_000));
    let r = get_with(w.addr(), "/v1/snapshot", &[("Authorization", &auth)]);
    assert_eq!(r.status, 403, "{}", r.text());
    let v: Value = r.json();
    assert_eq!(v["error"]["code"], "not_entitled");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_delay_ms")
    );
    // Within the kept delay: served.
    let auth = format!("Bearer {}", token(30_000));
    let r = get_with(w.addr(), "/v1/snapshot", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    // A relay that keeps no delayed view refuses every delayed user.
    let w = World::start(&["--max-delay-ms", "0"]);
    let r = get_with(w.addr(), "/v1/snapshot", &[("Authorization", &auth)]);
    assert_eq!(r.status, 403, "{}", r.text());
}
