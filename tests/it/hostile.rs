//! Hostile input against the real relay over loopback: the hardening
//! findings of issue #12 as regression tests, and the garbage classes the
//! fuzzers (fuzz/, docs/RELIABILITY.md) exercise, sent as real datagrams
//! and requests. Each asserts what a user would notice: the table, the
//! session, `/readyz`, the error bodies.
//!
//! The relay runs in this process ([`Relay::in_process`]), except in the
//! two tests that freeze it with SIGSTOP: those need it as a process.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{DEADLINE, FeedAddr, FeedWriter, Relay, Sim, assert_snapshot_matches, poll_until};
use tickrelay::price::Price;
use tickrelay::wire::{Message, Session, header};

/// A live relay with one symbol quoted in session `session`.
fn live_relay(session: &str) -> (Relay, FeedWriter, u64) {
    let feed = FeedAddr::unique();
    let relay = Relay::in_process_feed(feed, &["--stale-after-ms", "60000"]);
    let mut w = FeedWriter::new(feed, session);
    w.directory(&[(0, "GOOD", 100_0000)]);
    let seq = w.quote(0, 99_5000, 100_5000, (100, 200));
    relay.wait_snapshot_seq(session, seq);
    poll_until(DEADLINE, "/readyz 200", || {
        (relay.get("/readyz").status == 200).then_some(())
    });
    (relay, w, seq)
}

/// Finding (1): one 130-byte datagram — binary session bytes, sequence 1,
/// message count 0 and junk after the header — emptied the table and made
/// every later real packet a stale session. Now it is a decode error and the
/// session, table and readiness are untouched.
#[test]
fn a_binary_session_heartbeat_with_junk_does_not_reset_the_relay() {
    let (relay, mut w, _) = live_relay("LIVE1");
    let mut stray = [0u8; 130];
    for (i, b) in stray.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(0x81);
    }
    stray[10..18].copy_from_slice(&1u64.to_be_bytes());
    stray[18..20].copy_from_slice(&0u16.to_be_bytes());
    w.raw(&stray);

    let good = w.quote(0, 101_0000, 101_2500, (300, 400));
    let snap = relay.wait_snapshot_seq("LIVE1", good);
    assert_eq!(snap.quotes.len(), 1, "the table kept its symbol");
    assert_eq!(relay.get("/readyz").status, 200);
    let m = relay.metrics();
    assert_eq!(
        m.labeled(
            "tickrelay_feed_decode_errors_total",
            "reason",
            "bad_session"
        ),
        1.0,
        "{}",
        m.feed_lines()
    );
    assert_eq!(
        m.labeled(
            "tickrelay_feed_dropped_messages_total",
            "reason",
            "stale_session"
        ),
        0.0
    );
}

/// The same attack with a printable session id and a well-formed heartbeat
/// (or a framed packet of garbage): one packet of a new session is not
/// believed; two packets of garbage messages are not either.
#[test]
fn one_well_formed_packet_of_a_new_session_is_not_believed() {
    let (relay, mut w, _) = live_relay("LIVE2");
    w.raw(&header(Session::new("EVIL"), 1, 0));
    w.raw(&header(Session::new("EVIL2"), 1, 0xFFFF));
    let mut garbage = header(Session::new("EVIL3"), 1, 1).to_vec();
    garbage.extend_from_slice(&[0, 1, 0xc1]);
    w.raw(&garbage);
    let mut garbage2 = header(Session::new("EVIL3"), 2, 1).to_vec();
    garbage2.extend_from_slice(&[0, 1, 0xc1]);
    w.raw(&garbage2);

    let good = w.quote(0, 102_0000, 102_2500, (5, 6));
    let snap = relay.wait_snapshot_seq("LIVE2", good);
    assert_eq!(snap.quotes.len(), 1);
    assert_eq!(relay.get("/readyz").status, 200);
    let m = relay.wait_metric("tickrelay_feed_dropped_messages_total", |v| v >= 2.0);
    assert_eq!(
        m.labeled(
            "tickrelay_feed_dropped_messages_total",
            "reason",
            "unconfirmed_session"
        ),
        2.0,
        "the two garbage packets: {}",
        m.feed_lines()
    );
}

/// A real producer's new session is still followed, from its first packet,
/// as soon as its second arrives.
#[test]
fn a_real_new_session_is_followed_on_its_second_packet() {
    let (relay, w, _) = live_relay("OLD1");
    let mut next = FeedWriter::new(w_addr(&w), "NEXT1");
    next.directory(&[(3, "NEWSYM", 50_0000)]);
    let seq = next.quote(3, 49_0000, 51_0000, (7, 8));
    let snap = relay.wait_snapshot_seq("NEXT1", seq);
    assert_eq!(snap.quotes.len(), 1);
    assert_eq!(&*snap.quotes[0].symbol, "NEWSYM");
    assert_eq!(snap.quotes[0].bid_size, 7);
}

fn w_addr(w: &FeedWriter) -> FeedAddr {
    w.to
}

/// Garbage classes the packet and sequencer fuzzers generate, sent as
/// datagrams to a live relay: each is counted, none changes the table or
/// the session, and good data still applies after them.
#[test]
fn fuzzer_garbage_classes_change_nothing() {
    let (relay, mut w, _) = live_relay("LIVE3");
    let next = w.builder.next_seq();
    let live = Session::new("LIVE3");
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    // Heartbeat and end of session of the live session with trailing bytes.
    for count in [0u16, 0xFFFF] {
        let mut d = header(live, next, count).to_vec();
        d.extend_from_slice(b"junk");
        datagrams.push(d);
    }
    // Session ids that are not printable ASCII, space-padded.
    for id in [
        *b"\0\0\0\0\0\0\0\0\0\0",
        *b"          ",
        *b" LIVE3    ",
        *b"LI VE3    ",
        *b"LIVE3\t    ",
    ] {
        datagrams.push(header(Session(id), next, 0).to_vec());
    }
    // Framing: a length past the end, a count past the end, a zero-length
    // message and its missing neighbour.
    let mut d = header(live, next, 1).to_vec();
    d.extend_from_slice(&[0xff, 0xff, 1, 2, 3]);
    datagrams.push(d);
    let mut d = header(live, next, 3).to_vec();
    d.extend_from_slice(&[0, 0]);
    datagrams.push(d);
    // Random bytes, seeded.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for n in [0usize, 1, 19, 20, 21, 64, 1400, 9001] {
        let mut d = Vec::with_capacity(n);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            d.push(x as u8);
        }
        datagrams.push(d);
    }
    for d in &datagrams {
        w.raw(d);
    }
    let good = w.quote(0, 103_0000, 103_2500, (9, 9));
    let snap = relay.wait_snapshot_seq("LIVE3", good);
    assert_eq!(snap.quotes.len(), 1);
    assert_eq!(snap.quotes[0].bid_size, 9);
    assert_eq!(relay.get("/readyz").status, 200);
    let m = relay.metrics();
    assert!(
        m.sum("tickrelay_feed_decode_errors_total") >= 15.0,
        "{}",
        m.feed_lines()
    );
    assert_eq!(m.sum("tickrelay_feed_lost_messages_total"), 0.0);
    assert_eq!(m.sum("tickrelay_feed_gaps_opened_total"), 0.0);
}

/// Finding (2): frozen ~300 ms mid-run with loss, duplicates and reordering
/// on both lines and retransmission on, the relay lost messages (the
/// retransmission socket was read last, and the gap hold ran on while the
/// relay was stopped). Now nothing is lost and the state is exact. Whether
/// a gap is open at the instant of a stop is chance here; the next test
/// makes it certain.
#[test]
fn a_300ms_stall_mid_run_loses_nothing() {
    let a = FeedAddr::unique();
    let b = FeedAddr::unique();
    let server = format!("127.0.0.1:{}", support::free_udp_port());
    // Built before the clock matters (a no-op when fresh).
    support::feed_simulator_bin();
    let relay = Relay::serve_feed(
        a,
        &[
            "--feed-b",
            &b.arg(),
            "--retransmit",
            &server,
            "--stale-after-ms",
            "60000",
        ],
    );
    // Quotes and trades only, the finding's load (books triple the
    // messages of the same run).
    let sim = Sim::new(a)
        .flag("--book-depth", 0)
        .flag("--line-b", b.arg())
        .flag("--retransmit", &server)
        .flag("--loss", 0.05)
        .flag("--duplicate", 0.05)
        .flag("--reorder", 0.05)
        .flag("--symbols", 200)
        .flag("--count", 40_000)
        .flag("--rate", 20_000)
        .flag("--session", "STALL1")
        .flag("--seed", 12);
    let run = std::thread::spawn(move || sim.run());
    let pid = relay.pid().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig}");
    };
    // Three stops of 300 ms, spread over the two-second run.
    for applied in [8_000.0, 18_000.0, 28_000.0] {
        poll_until(DEADLINE, "the run under way", || {
            (relay.metrics().sum("tickrelay_feed_applied_messages_total") > applied).then_some(())
        });
        signal("-STOP");
        // The stall is the subject: the relay is frozen for 300 ms.
        std::thread::sleep(Duration::from_millis(300));
        signal("-CONT");
    }
    let sent = run.join().expect("the simulator run");
    let snap = relay.wait_snapshot_seq("STALL1", sent.last_seq());
    let m = relay.metrics();
    assert!(
        m.sum("tickrelay_feed_gaps_opened_total") > 0.0,
        "loss opened gaps"
    );
    assert_eq!(
        m.sum("tickrelay_feed_lost_messages_total"),
        0.0,
        "nothing lost across the stall:\n{}",
        m.feed_lines()
    );
    assert_snapshot_matches(&snap, &sent);
}

/// Finding (2), made deterministic: the relay is stopped while a gap is
/// open and its retransmission request answered. The answer and more line
/// packets wait in the kernel while it is stopped. Before, line A was read
/// first on resume and the gap's hold had run out during the stop: the
/// message was given up with its repair sitting unread. Now the pause does
/// not count and the retransmission socket is read first.
#[test]
fn a_gap_open_across_a_stop_is_repaired_not_lost() {
    let feed = FeedAddr::unique();
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(DEADLINE)).unwrap();
    let relay = Relay::serve_feed(
        feed,
        &[
            "--retransmit",
            &server.local_addr().unwrap().to_string(),
            "--gap-hold-ms",
            "100",
            "--stale-after-ms",
            "60000",
        ],
    );
    let mut w = FeedWriter::new(feed, "FROZEN");
    w.directory(&[(0, "AAA", 10_0000)]);
    let first = w.quote(0, 9_0000, 11_0000, (1, 1));
    relay.wait_snapshot_seq("FROZEN", first);

    // The packet with the trade is built and kept back: a gap.
    let mut kept = Vec::new();
    let trade = Message::Trade {
        locate: 0,
        ts: support::now_ns(),
        price: Price(10_1234),
        size: 77,
        volume: 77,
    };
    let missing = w.builder.push(&trade, &mut |p| kept.push(p.to_vec()));
    w.builder.flush(&mut |p| kept.push(p.to_vec()));
    assert_eq!(kept.len(), 1);
    w.quote(0, 9_1000, 11_1000, (2, 2));

    let mut req = [0u8; 64];
    let (n, relay_addr) = server
        .recv_from(&mut req)
        .expect("a retransmission request");
    assert_eq!(n, 20);
    assert_eq!(u64::from_be_bytes(req[10..18].try_into().unwrap()), missing);

    let pid = relay.pid().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    server.send_to(&kept[0], relay_addr).unwrap();
    let mut last = 0;
    for i in 0..20 {
        last = w.quote(0, 9_2000 + i, 11_2000 + i, (3, 3));
    }
    // The stop is the subject: 300 ms frozen, three times the gap hold
    // (100 ms), so the hold would run out during it if the pause counted.
    std::thread::sleep(Duration::from_millis(300));
    signal("-CONT");

    let snap = relay.wait_snapshot_seq("FROZEN", last);
    let m = relay.metrics();
    assert_eq!(
        m.sum("tickrelay_feed_lost_messages_total"),
        0.0,
        "the repair was waiting in the kernel:\n{}",
        m.feed_lines()
    );
    let q = &snap.quotes[0];
    assert_eq!((q.last, q.last_size), (Some(Price(10_1234)), 77));
}

/// One HTTP/1.1 request with any method and an empty body: the answer,
/// its body as JSON.
fn request(addr: SocketAddr, method: &str, path: &str) -> (support::Response, serde_json::Value) {
    let r = support::try_request(addr, method, path, &[("Content-Length", "0")])
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: {} body is not JSON ({e}): {:?}",
            r.status,
            r.text()
        )
    });
    (r, json)
}

/// Finding (5): a wrong method answered 405 with an empty body, and
/// `/v1/snapshot/%FF%FE` a plain-text extractor rejection. Every error is
/// now `{"error":{"code","message"}}` with a fitting status.
#[test]
fn every_error_answer_is_the_json_error_shape() {
    let (relay, _w, _) = live_relay("HTTP1");
    let cases: &[(&str, &str, u16, &str)] = &[
        ("POST", "/v1/snapshot", 405, "method_not_allowed"),
        ("DELETE", "/v1/symbols", 405, "method_not_allowed"),
        ("PUT", "/metrics", 405, "method_not_allowed"),
        ("POST", "/v1/ws", 405, "method_not_allowed"),
        ("GET", "/v1/snapshot/%FF%FE", 400, "bad_request"),
        // Query extractor rejections (a repeated parameter).
        (
            "GET",
            "/v1/snapshot?symbols=A&symbols=B",
            400,
            "bad_request",
        ),
        ("GET", "/v1/symbols?token=a&token=b", 400, "bad_request"),
        // The handler's own check, in the same shape.
        ("GET", "/v1/poll?timeout_ms=soon", 400, "bad_timeout"),
        ("GET", "/v1/nope", 404, "not_found"),
    ];
    for &(method, path, status, code) in cases {
        let (r, body) = request(relay.addr, method, path);
        assert_eq!(r.status, status, "{method} {path}: {body}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{method} {path}: {:?}",
            r.headers
        );
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {path}: {body}"
        );
        if status == 405 {
            assert!(
                r.header("allow").is_some(),
                "405 keeps Allow: {:?}",
                r.headers
            );
        }
    }
    // A WebSocket request without the upgrade is an error in the same shape.
    let (r, body) = request(relay.addr, "GET", "/v1/ws");
    assert!(r.status >= 400, "{}", r.status);
    assert!(body["error"]["code"].is_string(), "{body}");
}

/// Found while writing the client_op fuzz target: a tiny positive `max_hz`
/// (1e-300) passed the `max_hz` check and then overflowed a Duration in
/// `SubOptions::new`, panicking the connection's task. Now it is refused.
#[test]
fn a_tiny_max_hz_is_refused_not_a_panic() {
    let r = std::panic::catch_unwind(|| {
        tickrelay::transport::subscriptions::sub_options(None, Some(1e-300)).is_ok()
    });
    assert_eq!(
        r.ok(),
        Some(false),
        "max_hz 1e-300 is refused, without a panic"
    );
}
