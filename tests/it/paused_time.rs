//! Timing tests on virtual time: the real relay started in this process
//! (`server::start`) on a current-thread runtime whose clock is paused.
//! Tokio jumps the clock to the next timer whenever every task is idle, so a
//! 30 s long poll takes milliseconds of real time and its wait is measured
//! exactly, without a loaded machine stretching it.
//!
//! Only timers that live on tokio are tested here: the long-poll deadline
//! and the HTTP connection timeouts. The ingest and fan-out are OS threads
//! on real time; the feed is written and awaited before the clock matters.
//!
//! Rules that keep this honest: the HTTP client is async (a blocking call
//! would stall the runtime the relay runs on), and the tests set no tokio
//! timer of their own to race the relay's. A loopback write lands in the
//! peer's buffer before it returns, so the relay sees each request before
//! the clock can jump.

use crate::support;
use support::{FeedAddr, FeedWriter};

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tickrelay::config::Settings;
use tickrelay::server::{self, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The relay, in this process, with a session `PAUSED` listing AAA and BBB
/// and one quote each applied.
struct InProcess {
    running: Running,
    addr: SocketAddr,
    /// The sequence of the last quote sent, seen in `/v1/snapshot`.
    seq: u64,
    _feed: FeedWriter,
}

impl InProcess {
    async fn start() -> InProcess {
        let group = FeedAddr::unique();
        let config = Settings {
            http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            feed_a: Some(group.arg()),
            interface: Some(Ipv4Addr::LOCALHOST),
            fanout_shards: Some(1),
            ..Default::default()
        }
        .validate()
        .expect("valid settings");
        let listener = server::bind(&config).await.expect("bind 127.0.0.1:0");
        // The feed sockets are open when this returns.
        let running = server::start(listener, config)
            .await
            .expect("start the relay");
        let addr = running.local_addr();
        let mut feed = FeedWriter::new(group, "PAUSED");
        feed.list(&["AAA", "BBB"]);
        let seq = feed.send(&[FeedWriter::quote_msg(0, 100), FeedWriter::quote_msg(1, 200)]);
        // The ingest thread applies the feed on real time: wait in real time
        // (a blocking sleep holds the runtime, so no virtual time passes).
        let real = std::time::Instant::now();
        loop {
            let r = get(addr, "/v1/snapshot?symbols=AAA,BBB").await;
            if r.status == 200 && r.json()["seq"].as_u64().is_some_and(|s| s >= seq) {
                break;
            }
            assert!(
                real.elapsed() < support::DEADLINE,
                "the relay never applied seq {seq}; last answer {} {}",
                r.status,
                r.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        InProcess {
            running,
            addr,
            seq,
            _feed: feed,
        }
    }

    /// Shuts the relay down: its threads are joined before the test ends.
    async fn stop(self) {
        self.running
            .wait(async {})
            .await
            .expect("the relay shut down cleanly");
    }
}

struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }
}

/// Reads until the relay closes the connection; what it sent, if anything.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    match tcp.read_to_end(&mut raw).await {
        Ok(_) => {}
        // A close with unread data in the relay's buffer is a reset.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read: {e}"),
    }
    raw
}

/// GET `path` over a fresh connection, `Connection: close`, read to the end.
async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send request");
    let raw = read_to_close(&mut tcp).await;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "answers here have a length: {head}"
    );
    Response {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    }
}

/// A long poll on a session with nothing new is held for its `timeout_ms`
/// (30 s, virtual) and answered 200 with no quotes, the same session and seq.
#[tokio::test(start_paused = true)]
async fn a_long_poll_with_nothing_new_answers_empty_at_its_timeout() {
    let real = std::time::Instant::now();
    let relay = InProcess::start().await;
    let seq = relay.seq;

    let t = Instant::now();
    let r = get(
        relay.addr,
        &format!("/v1/poll?symbols=AAA,BBB&since=PAUSED:{seq}&timeout_ms=30000"),
    )
    .await;
    let held = t.elapsed();

    assert_eq!(r.status, 200, "{}\n{}", r.head, r.text());
    let v = r.json();
    assert_eq!(v["quotes"].as_array().expect("quotes").len(), 0, "{v}");
    assert_eq!(v["session"], "PAUSED");
    assert_eq!(v["seq"].as_u64(), Some(seq));
    assert!(
        held >= Duration::from_secs(30),
        "held for the 30 s timeout, answered after {held:?} (virtual)"
    );
    // Nothing else runs a timer here: the clock jumps straight to the deadline.
    assert!(
        held < Duration::from_secs(31),
        "answered at the timeout, not later: {held:?} (virtual)"
    );
    relay.stop().await;
    println!(
        "long poll held {held:?} of virtual time; the test took {:?} of real time",
        real.elapsed()
    );
}

/// Without `timeout_ms` a poll is held for the default (25 s); a longer
/// `timeout_ms` than allowed is cut to the cap (120 s). Both wait at once:
/// the first one's answer does not disturb the other.
#[tokio::test(start_paused = true)]
async fn the_default_poll_timeout_and_the_cap_on_a_requested_one() {
    let real = std::time::Instant::now();
    let relay = InProcess::start().await;
    let seq = relay.seq;

    let t = Instant::now();
    let timed = |path: String| async move {
        let r = get(relay.addr, &path).await;
        (r, t.elapsed())
    };
    let ((default, default_held), (capped, capped_held)) = tokio::join!(
        timed(format!("/v1/poll?symbols=AAA&since=PAUSED:{seq}")),
        timed(format!(
            "/v1/poll?symbols=BBB&since=PAUSED:{seq}&timeout_ms=3600000"
        )),
    );
    for r in [&default, &capped] {
        assert_eq!(r.status, 200, "{}\n{}", r.head, r.text());
        let v = r.json();
        assert_eq!(v["quotes"].as_array().expect("quotes").len(), 0, "{v}");
        assert_eq!(v["seq"].as_u64(), Some(seq));
    }
    assert!(
        (Duration::from_secs(25)..Duration::from_secs(26)).contains(&default_held),
        "no timeout_ms: held for the default 25 s, was {default_held:?} (virtual)"
    );
    assert!(
        (Duration::from_secs(120)..Duration::from_secs(121)).contains(&capped_held),
        "timeout_ms=3600000: held for the 120 s cap, was {capped_held:?} (virtual)"
    );
    relay.stop().await;
    println!(
        "held {default_held:?} and {capped_held:?} of virtual time; the test took {:?} of real time",
        real.elapsed()
    );
}

/// A connection that never sends a request is closed, not kept: 10 s for
/// the first bytes that would pick SSE or WebSocket, then hyper's 30 s
/// header read timeout. One that sends part of a head and stops goes to
/// hyper at once, and is closed after the 30 s.
#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_no_whole_request_is_closed() {
    let real = std::time::Instant::now();
    let relay = InProcess::start().await;

    let t = Instant::now();
    let silent = async {
        let mut tcp = TcpStream::connect(relay.addr).await.expect("connect");
        let raw = read_to_close(&mut tcp).await;
        (raw, t.elapsed())
    };
    let partial = async {
        let mut tcp = TcpStream::connect(relay.addr).await.expect("connect");
        tcp.write_all(b"GET /v1/poll?symbols=AAA HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("send part of a head");
        let raw = read_to_close(&mut tcp).await;
        (raw, t.elapsed())
    };
    let ((silent_raw, silent_open), (partial_raw, partial_open)) = tokio::join!(silent, partial);
    println!(
        "silent: closed after {silent_open:?}, sent {:?}; partial head: closed after {partial_open:?}, sent {:?}",
        String::from_utf8_lossy(&silent_raw),
        String::from_utf8_lossy(&partial_raw)
    );
    assert!(
        (Duration::from_secs(40)..Duration::from_secs(41)).contains(&silent_open),
        "silent: closed after 10 s + 30 s, was {silent_open:?} (virtual)"
    );
    assert!(
        (Duration::from_secs(30)..Duration::from_secs(31)).contains(&partial_open),
        "partial head: closed after 30 s, was {partial_open:?} (virtual)"
    );
    relay.stop().await;
    println!("the test took {:?} of real time", real.elapsed());
}
