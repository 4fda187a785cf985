//! Slow clients are closed by the relay first: told where they can be
//! (WebSocket close 4008, SSE `event: error`), counted in
//! `tickrelay_slow_client_disconnects_total` and logged, one line each
//! (docs/PROTOCOL.md "Close codes", docs/RELIABILITY.md "Slow clients").
//!
//! Each stalled client has a small receive buffer (the relay's send buffer is
//! `send_buffer`, 128 KiB by default), so it fills in a fraction of a second.
//! Every assertion follows what it waits for: the counter, the log line,
//! and the client's own reads after it resumes.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{DEADLINE, FeedAddr, FeedWriter, Relay, poll_until};
use tickrelay::price::Price;
use tickrelay::wire::{Locate, Message};

/// The relay's write timeout in these tests, ms. The kernel keeps a closed
/// slow client's last frame for about twice that after the relay's verdict.
const WRITE_TIMEOUT_MS: &str = "1500";

const SESSION: &str = "SLOW";

fn tickers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("S{i:05}")).collect()
}

/// A relay on its own feed, `n` symbols listed and quoted once.
fn relay_with_symbols(n: usize) -> (Relay, FeedWriter, Vec<String>) {
    let feed = FeedAddr::unique();
    let relay = Relay::serve_feed(feed, &["--write-timeout-ms", WRITE_TIMEOUT_MS]);
    let mut w = FeedWriter::new(feed, SESSION);
    let names = tickers(n);
    let entries: Vec<(Locate, &str, i64)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (i as Locate, s.as_str(), 100_000))
        .collect();
    w.directory(&entries);
    let last = quote_all(&mut w, n, 1);
    relay.wait_snapshot_seq(SESSION, last);
    (relay, w, names)
}

/// One quote for each of the first `n` locates; returns the last sequence.
fn quote_all(w: &mut FeedWriter, n: usize, round: i64) -> u64 {
    let msgs: Vec<Message<'_>> = (0..n)
        .map(|i| Message::Quote {
            locate: i as Locate,
            ts: support::now_ns(),
            bid: Price(100_000 + round),
            ask: Price(100_100 + round),
            bid_size: 1,
            ask_size: 1,
        })
        .collect();
    w.send(&msgs)
}

/// Quotes every symbol, round after round, until stopped (or 60 s pass).
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<FeedWriter>>,
}

impl Feeder {
    fn start(mut w: FeedWriter, n: usize) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut round = 2;
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                // At most 100 quotes a millisecond.
                for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
                    let msgs: Vec<Message<'_>> = chunk
                        .iter()
                        .map(|&i| Message::Quote {
                            locate: i as Locate,
                            ts: support::now_ns(),
                            bid: Price(100_000 + round),
                            ask: Price(100_100 + round),
                            bid_size: 1,
                            ask_size: 1,
                        })
                        .collect();
                    w.send(&msgs);
                    // The feed's pace, part of the set-up: at most 100
                    // quotes a millisecond, which loopback multicast and
                    // the relay's receive buffer take without loss.
                    std::thread::sleep(Duration::from_millis(1));
                }
                round += 1;
            }
            w
        });
        Feeder {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> FeedWriter {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback connection with a small receive buffer, so the relay's writes
/// back up after a few hundred KiB.
fn small_client(relay: &Relay) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&relay.addr.into()).unwrap();
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp
}

fn slow_count(relay: &Relay, transport: &str) -> f64 {
    relay
        .metrics()
        .0
        .get(&format!(
            "tickrelay_slow_client_disconnects_total{{transport=\"{transport}\",reason=\"write_timeout\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
}

/// Waits until `n` clients of `transport` were closed for the write timeout.
fn wait_slow(relay: &Relay, transport: &str, n: f64) {
    poll_until(
        DEADLINE * 2,
        &format!("{n} {transport} write-timeout disconnects"),
        || (slow_count(relay, transport) >= n).then_some(()),
    );
}

/// The log lines of write-timeout closes of `transport`.
fn log_lines(relay: &Relay, transport: &str) -> usize {
    relay
        .stderr
        .text()
        .lines()
        .filter(|l| l.contains("client closed: write timeout") && l.contains(transport))
        .count()
}

/// Waits for `n` such log lines (the counter moves just before the line is
/// written, and the log is read through a pipe).
fn wait_log(relay: &Relay, transport: &str, n: usize) {
    poll_until(
        DEADLINE,
        &format!("{n} log lines of {transport} write timeouts"),
        || (log_lines(relay, transport) >= n).then_some(()),
    );
}

/// Reads until the relay's FIN; a reset or a timeout fails the test.
fn read_to_fin(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("reading to the relay's FIN after {} bytes: {e}", out.len()));
    out
}

#[test]
fn a_stalled_sse_client_is_closed_with_an_error_event_counted_and_logged() {
    let (relay, w, _) = relay_with_symbols(500);
    let s = small_client(&relay);
    stall_sse_and_check_the_error_event(&relay, w, s);
}

/// Opens `/v1/stream` on `s`, stalls it under a running feed until the relay
/// counts and logs it, then reads to the FIN and checks what a client that
/// reads again finds: a 200, its backlog of ticks, `event: error` with the
/// slow-consumer code, the end of the chunked body. Counted and logged once.
fn stall_sse_and_check_the_error_event(relay: &Relay, w: FeedWriter, mut s: TcpStream) {
    write!(s, "GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    relay.wait_metric("tickrelay_clients", |v| v >= 1.0);
    let feeder = Feeder::start(w, 500);
    wait_slow(relay, "sse", 1.0);
    feeder.stop();
    wait_log(relay, "sse", 1);

    // The client reads again: its backlog, the error event, the end of the
    // chunked body, then the relay's FIN.
    let raw = read_to_fin(&mut s);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the chunked body is ended: {}",
        &text[text.len().saturating_sub(300)..]
    );
    let at = text.rfind("event: ").expect("events");
    let last = &text[at..];
    assert!(
        last.starts_with("event: error\ndata: "),
        "last event: {last}"
    );
    let data = last["event: error\ndata: ".len()..].lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["code"], "slow_consumer");
    assert_eq!(v["close_code"], 4008);
    assert_eq!(v["message"], "slow consumer: write timeout");
    assert!(
        text.matches("event: tick").count() > 1,
        "a backlog before the error"
    );
    assert_eq!(slow_count(relay, "sse"), 1.0);
    assert_eq!(log_lines(relay, "sse"), 1);
}

/// Reads one HTTP answer with a `Content-Length` body; returns its head.
fn read_answer(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap_or_else(|| panic!("content-length in {head}"))
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head
}

#[test]
fn a_stalled_sse_client_on_a_reused_connection_gets_the_error_event_too() {
    // A browser that fetched a snapshot first, then opened an EventSource on
    // the same keep-alive connection: that stream is served by hyper.
    let (relay, w, _) = relay_with_symbols(500);
    let mut s = small_client(&relay);
    write!(
        s,
        "GET /v1/snapshot?symbols=S00000 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let head = read_answer(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    stall_sse_and_check_the_error_event(&relay, w, s);
}

#[test]
fn a_parked_long_poll_whose_answer_cannot_be_written_is_cut_counted_and_logged() {
    // 5,000 symbols: the answer (about 0.8 MB) is several times what the
    // relay's send buffer and the client's receive buffer hold together.
    let n = 5000;
    let (relay, mut w, _) = relay_with_symbols(n);
    let since = relay.wait_snapshot_seq(SESSION, 0);
    let mut s = small_client(&relay);
    // Parked until a change; then a 1 s window gathers every symbol's change.
    write!(
        s,
        "GET /v1/poll?since={}:{}&timeout_ms=60000&batch_ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n",
        since.session, since.seq
    )
    .unwrap();
    relay.wait_metric("tickrelay_longpoll_waiters", |v| v >= 1.0);
    let last = quote_all(&mut w, n, 2);
    relay.wait_snapshot_seq(SESSION, last);
    wait_slow(&relay, "poll", 1.0);
    wait_log(&relay, "poll", 1);

    // The client reads again: the answer's head and part of its body, then
    // the relay's FIN. An HTTP answer under way cannot carry an error; the
    // cut is the signal (fewer bytes than Content-Length).
    let raw = read_to_fin(&mut s);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the answer's head arrived");
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    let body = raw.len() - end - 4;
    assert!(
        length > 500_000 && body < length,
        "{body} of {length} body bytes before the FIN"
    );
    assert_eq!(slow_count(&relay, "poll"), 1.0);
}

/// A WebSocket upgrade and a `*` subscription; the 101 is read, nothing else.
fn stalled_ws(relay: &Relay) -> TcpStream {
    let mut s = small_client(relay);
    write!(
        s,
        "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let payload = br#"{"op":"subscribe","symbols":["*"]}"#;
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
    s
}

/// Reads server frames until a close frame; returns its code and reason.
fn close_frame(s: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at = 0;
    loop {
        // Parse what is here.
        while data.len() >= at + 2 {
            let (op, len0) = (data[at] & 0x0f, (data[at + 1] & 0x7f) as usize);
            let (len, head) = match len0 {
                126 if data.len() >= at + 4 => {
                    (u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize, 4)
                }
                127 if data.len() >= at + 10 => (
                    u64::from_be_bytes(data[at + 2..at + 10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n, 2),
            };
            if data.len() < at + head + len {
                break;
            }
            let payload = &data[at + head..at + head + len];
            if op == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
            at += head + len;
        }
        let n = s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("reading after {} bytes: {e}", data.len()));
        assert!(n > 0, "the relay closed without a close frame");
        data.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn three_hundred_stalled_ws_clients_are_each_closed_with_4008_counted_and_logged() {
    let (relay, w, _) = relay_with_symbols(200);
    let mut clients: Vec<TcpStream> = (0..300).map(|_| stalled_ws(&relay)).collect();
    relay.wait_metric("tickrelay_wildcard_subscriptions", |v| v >= 300.0);
    let feeder = Feeder::start(w, 200);
    wait_slow(&relay, "ws", 300.0);
    feeder.stop();
    wait_log(&relay, "ws", 300);

    // Each client reads again: its backlog, then the close frame.
    for (i, s) in clients.iter_mut().enumerate() {
        let (code, reason) = close_frame(s);
        assert_eq!(
            (code, reason.as_str()),
            (4008, "slow consumer: write timeout"),
            "client {i}"
        );
    }
    assert_eq!(slow_count(&relay, "ws"), 300.0);
    assert_eq!(log_lines(&relay, "ws"), 300);
}
