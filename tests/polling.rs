//! Long polling end to end: the real relay over loopback, fed by packets
//! this test writes.

mod harness;
use harness::Producer;

use std::io::Write;
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tickrelay::price::Price;

fn json(r: &harness::Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

fn setup(extra: &[&str]) -> (harness::Relay, Producer, u64) {
    let group = harness::unique_group();
    let mut args = vec!["--feed-a".to_string(), group.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let relay = harness::Relay::start(&args);
    let mut feed = Producer::new(group, "POLLT");
    feed.directory(&["AAA", "BBB"]);
    let seq = feed.send(&[Producer::quote(0, 100), Producer::quote(1, 200)]);
    relay.wait_seq(seq);
    (relay, feed, seq)
}

#[test]
fn without_since_or_with_another_session_everything_comes_at_once() {
    let (relay, _feed, seq) = setup(&[]);
    for since in ["", "&since=OTHER:999999"] {
        let t = Instant::now();
        let r = harness::http_get(
            &relay.base,
            &format!("/v1/poll?symbols=AAA,BBB&timeout_ms=5000{since}"),
            &[],
        );
        assert!(t.elapsed() < Duration::from_secs(4), "answered at once");
        assert_eq!(r.status, 200);
        let v = json(&r);
        assert_eq!(v["session"], "POLLT");
        assert_eq!(v["seq"].as_u64().unwrap(), seq);
        assert_eq!(v["quotes"].as_array().unwrap().len(), 2);
        assert_eq!(r.header("cache-control"), Some("no-cache"));
    }
}

#[test]
fn changed_since_answers_at_once_with_only_the_changed() {
    let (relay, mut feed, seq) = setup(&[]);
    let s2 = feed.send(&[Producer::quote(1, 250)]);
    relay.wait_seq(s2);
    let r = harness::http_get(
        &relay.base,
        &format!("/v1/poll?symbols=AAA,BBB&since=POLLT:{seq}&timeout_ms=5000"),
        &[],
    );
    let v = json(&r);
    let quotes = v["quotes"].as_array().unwrap();
    assert_eq!(quotes.len(), 1);
    assert_eq!(quotes[0]["symbol"], "BBB");
    assert_eq!(quotes[0]["bid"], Price(250).to_string());
    assert_eq!(v["seq"].as_u64().unwrap(), s2);
}

#[test]
fn held_until_a_change_then_answered() {
    let (relay, mut feed, seq) = setup(&[]);
    let base = relay.base.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let r = harness::http_get(
            &base,
            &format!("/v1/poll?symbols=AAA&since=POLLT:{seq}&timeout_ms=20000"),
            &[],
        );
        (r, t.elapsed())
    });
    // Wait until the request is parked, then change an unrelated symbol, then AAA.
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness::metric(&relay.metrics(), "tickrelay_longpoll_waiters") < 1.0 {
        assert!(Instant::now() < deadline, "the poll never parked");
        std::thread::sleep(Duration::from_millis(10));
    }
    feed.send(&[Producer::quote(1, 999)]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiter.is_finished(),
        "a change to another symbol does not answer"
    );
    let s = feed.send(&[Producer::quote(0, 777)]);
    let (r, took) = waiter.join().unwrap();
    assert!(took < Duration::from_secs(15));
    let v = json(&r);
    assert_eq!(v["quotes"].as_array().unwrap().len(), 1);
    assert_eq!(v["quotes"][0]["bid"], Price(777).to_string());
    assert!(v["seq"].as_u64().unwrap() >= s);
    assert_eq!(
        harness::metric(&relay.metrics(), "tickrelay_longpoll_waiters"),
        0.0
    );
}

#[test]
fn empty_answer_at_timeout() {
    let (relay, _feed, seq) = setup(&[]);
    let t = Instant::now();
    let r = harness::http_get(
        &relay.base,
        &format!("/v1/poll?symbols=AAA,BBB&since=POLLT:{seq}&timeout_ms=300"),
        &[],
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "held for the timeout, took {took:?}"
    );
    let v = json(&r);
    assert_eq!(v["quotes"].as_array().unwrap().len(), 0);
    assert_eq!(v["seq"].as_u64().unwrap(), seq);
    assert_eq!(v["session"], "POLLT");
}

#[test]
fn a_client_that_goes_away_releases_its_waiter() {
    let (relay, _feed, seq) = setup(&[]);
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(s, "GET /v1/poll?symbols=AAA&since=POLLT:{seq}&timeout_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        conns.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness::metric(&relay.metrics(), "tickrelay_longpoll_waiters") < 20.0 {
        assert!(Instant::now() < deadline, "waiters did not park");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(5);
    while harness::metric(&relay.metrics(), "tickrelay_longpoll_waiters") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "waiters leaked after the clients left"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        harness::metric(&relay.metrics(), "tickrelay_clients{transport=\"poll\"}"),
        0.0
    );
}

#[test]
fn a_new_session_answers_a_parked_poll_with_everything() {
    let (relay, _feed, seq) = setup(&[]);
    let base = relay.base.clone();
    let waiter = std::thread::spawn(move || {
        harness::http_get(
            &base,
            &format!("/v1/poll?symbols=AAA,BBB&since=POLLT:{seq}&timeout_ms=20000"),
            &[],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness::metric(&relay.metrics(), "tickrelay_longpoll_waiters") < 1.0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let group: SocketAddrV4 = relay_group(&relay);
    let mut next = Producer::new(group, "POLLT2");
    next.directory(&["AAA", "BBB"]);
    next.send(&[Producer::quote(0, 5), Producer::quote(1, 6)]);
    let v = json(&waiter.join().unwrap());
    assert_eq!(v["session"], "POLLT2");
    assert!(!v["quotes"].as_array().unwrap().is_empty());
}

fn relay_group(relay: &harness::Relay) -> SocketAddrV4 {
    // The group is the one passed at start; read it back from the metrics-free
    // command line of the process.
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", relay.child.id())).unwrap();
    let args: Vec<&str> = cmdline.split('\0').collect();
    let i = args.iter().position(|a| *a == "--feed-a").unwrap();
    args[i + 1].parse().unwrap()
}

#[test]
fn bad_parameters_are_400_with_a_code() {
    let (relay, _feed, _) = setup(&["--max-symbols", "1"]);
    for (query, code) in [
        ("symbols=AAA&timeout_ms=soon", "bad_timeout"),
        ("symbols=AAA&since=garbage", "bad_since"),
        ("symbols=AAA,BBB", "too_many_symbols"),
        ("symbols=%3Cx%3E", "bad_symbol"),
    ] {
        let r = harness::http_get(&relay.base, &format!("/v1/poll?{query}"), &[]);
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert_eq!(json(&r)["error"]["code"], code, "{query}");
    }
    let r = harness::http_get(&relay.base, "/v1/poll?symbols=NOPE", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(json(&r)["error"]["code"], "unknown_symbol");
}

#[test]
fn before_the_directory_arrives_symbols_are_not_ready_rather_than_unknown() {
    let group = harness::unique_group();
    let relay = harness::Relay::start(&["--feed-a".to_string(), group.to_string()]);
    for path in [
        "/v1/snapshot?symbols=AAA",
        "/v1/poll?symbols=AAA",
        "/v1/stream?symbols=AAA",
    ] {
        let r = harness::http_get(&relay.base, path, &[]);
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(json(&r)["error"]["code"], "not_ready", "{path}");
    }
}

#[test]
fn batch_ms_gathers_changes_after_the_first_into_one_answer() {
    let (relay, mut feed, seq) = setup(&[]);
    let r = harness::http_get(
        &relay.base,
        &format!("/v1/poll?symbols=AAA&since=POLLT:{seq}&batch_ms=abc"),
        &[],
    );
    assert_eq!(r.status, 400);
    let r = harness::http_get(
        &relay.base,
        &format!("/v1/poll?symbols=AAA&since=POLLT:{seq}&batch_ms=2000"),
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("bad_batch_ms"), "{}", r.body);

    let base = relay.base.clone();
    let waiter = std::thread::spawn(move || {
        harness::http_get(
            &base,
            &format!("/v1/poll?symbols=AAA,BBB&since=POLLT:{seq}&timeout_ms=20000&batch_ms=600"),
            &[],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness::metric(&relay.metrics(), "tickrelay_longpoll_waiters") < 1.0 {
        assert!(Instant::now() < deadline, "the poll never parked");
        std::thread::sleep(Duration::from_millis(10));
    }
    feed.send(&[Producer::quote(0, 111)]);
    std::thread::sleep(Duration::from_millis(50));
    let s = feed.send(&[Producer::quote(1, 222)]);
    let v = json(&waiter.join().unwrap());
    let bids: Vec<&str> = v["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["bid"].as_str().unwrap())
        .collect();
    assert_eq!(
        bids,
        vec![Price(111).to_string(), Price(222).to_string()],
        "both changes of the window in one answer"
    );
    assert!(v["seq"].as_u64().unwrap() >= s);
}
