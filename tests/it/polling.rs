//! Long polling end to end: the real relay, run in this process
//! ([`support::Relay::in_process`]), over loopback, fed by packets this
//! test writes to a real multicast group.

use crate::support;
use support::FeedWriter;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use tickrelay::price::Price;

fn json(r: &support::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn setup(extra: &[&str]) -> (support::Relay, FeedWriter, u64) {
    let group = support::FeedAddr::unique();
    let mut args = vec!["--feed-a".to_string(), group.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let relay = support::Relay::in_process(&args);
    let mut feed = FeedWriter::new(group, "POLLT");
    feed.list(&["AAA", "BBB"]);
    let seq = feed.send(&[FeedWriter::quote_msg(0, 100), FeedWriter::quote_msg(1, 200)]);
    relay.wait_seq(seq);
    (relay, feed, seq)
}

#[test]
fn without_since_or_with_another_session_everything_comes_at_once() {
    let (relay, _feed, seq) = setup(&[]);
    for since in ["", "&since=OTHER:999999"] {
        let t = Instant::now();
        let r = support::http_get(
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
    let s2 = feed.send(&[FeedWriter::quote_msg(1, 250)]);
    relay.wait_seq(s2);
    let r = support::http_get(
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
    let poll = |symbol: &'static str| {
        let base = relay.base.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = support::http_get(
                &base,
                &format!("/v1/poll?symbols={symbol}&since=POLLT:{seq}&timeout_ms=20000"),
                &[],
            );
            (r, t.elapsed())
        })
    };
    let waiter = poll("AAA");
    // A witness parked on BBB: its answer proves a BBB change went through
    // the long-poll wake-ups before the AAA waiter is checked for silence.
    let witness = poll("BBB");
    // Wait until both are parked, then change the other symbol, then AAA.
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.metrics().get("tickrelay_longpoll_waiters") < 2.0 {
        assert!(Instant::now() < deadline, "the polls never parked");
        std::thread::sleep(Duration::from_millis(10));
    }
    let other = feed.send(&[FeedWriter::quote_msg(1, 999)]);
    let (r, _) = witness.join().unwrap();
    let v = json(&r);
    assert_eq!(v["quotes"][0]["symbol"], "BBB", "the witness was answered");
    assert!(v["seq"].as_u64().unwrap() >= other);
    assert!(
        !waiter.is_finished(),
        "a change to another symbol does not answer"
    );
    let parked = support::poll_until(support::DEADLINE, "the witness unparked", || {
        let n = relay.metrics().get("tickrelay_longpoll_waiters");
        (n < 2.0).then_some(n)
    });
    assert_eq!(
        parked, 1.0,
        "the AAA waiter is still parked after the BBB change was delivered"
    );
    let s = feed.send(&[FeedWriter::quote_msg(0, 777)]);
    let (r, took) = waiter.join().unwrap();
    assert!(took < Duration::from_secs(15));
    let v = json(&r);
    assert_eq!(v["quotes"].as_array().unwrap().len(), 1);
    assert_eq!(v["quotes"][0]["bid"], Price(777).to_string());
    assert!(v["seq"].as_u64().unwrap() >= s);
    assert_eq!(relay.metrics().get("tickrelay_longpoll_waiters"), 0.0);
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
    while relay.metrics().get("tickrelay_longpoll_waiters") < 20.0 {
        assert!(Instant::now() < deadline, "waiters did not park");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.metrics().get("tickrelay_longpoll_waiters") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "waiters leaked after the clients left"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        relay.metrics().get("tickrelay_clients{transport=\"poll\"}"),
        0.0
    );
}

#[test]
fn a_new_session_answers_a_parked_poll_with_everything() {
    let (relay, feed, seq) = setup(&[]);
    let base = relay.base.clone();
    let waiter = std::thread::spawn(move || {
        support::http_get(
            &base,
            &format!("/v1/poll?symbols=AAA,BBB&since=POLLT:{seq}&timeout_ms=20000"),
            &[],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.metrics().get("tickrelay_longpoll_waiters") < 1.0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut next = FeedWriter::new(feed.to, "POLLT2");
    next.list(&["AAA", "BBB"]);
    next.send(&[FeedWriter::quote_msg(0, 5), FeedWriter::quote_msg(1, 6)]);
    let mut v = json(&waiter.join().unwrap());
    assert_eq!(v["session"], "POLLT2");
    // The reset may answer before the new session's quotes are applied
    // (a busy machine): the client, now in the new session, polls again
    // from its cursor and gets them.
    let deadline = Instant::now() + support::DEADLINE;
    while v["quotes"].as_array().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no quotes of the new session: {v}"
        );
        let since = format!("POLLT2:{}", v["seq"].as_u64().unwrap());
        v = json(&support::http_get(
            &relay.base,
            &format!("/v1/poll?symbols=AAA,BBB&since={since}&timeout_ms=2000"),
            &[],
        ));
        assert_eq!(v["session"], "POLLT2");
    }
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
        let r = support::http_get(&relay.base, &format!("/v1/poll?{query}"), &[]);
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(json(&r)["error"]["code"], code, "{query}");
    }
    let r = support::http_get(&relay.base, "/v1/poll?symbols=NOPE", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(json(&r)["error"]["code"], "unknown_symbol");
}

#[test]
fn before_the_directory_arrives_symbols_are_not_ready_rather_than_unknown() {
    let group = support::FeedAddr::unique();
    let relay = support::Relay::in_process(&["--feed-a".to_string(), group.to_string()]);
    for path in [
        "/v1/snapshot?symbols=AAA",
        "/v1/poll?symbols=AAA",
        "/v1/stream?symbols=AAA",
    ] {
        let r = support::http_get(&relay.base, path, &[]);
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert_eq!(json(&r)["error"]["code"], "not_ready", "{path}");
    }
}

#[test]
fn batch_ms_gathers_changes_after_the_first_into_one_answer() {
    let (relay, mut feed, seq) = setup(&[]);
    let r = support::http_get(
        &relay.base,
        &format!("/v1/poll?symbols=AAA&since=POLLT:{seq}&batch_ms=abc"),
        &[],
    );
    assert_eq!(r.status, 400);
    let r = support::http_get(
        &relay.base,
        &format!("/v1/poll?symbols=AAA&since=POLLT:{seq}&batch_ms=2000"),
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("bad_batch_ms"), "{}", r.text());

    let base = relay.base.clone();
    let waiter = std::thread::spawn(move || {
        support::http_get(
            &base,
            &format!("/v1/poll?symbols=AAA,BBB&since=POLLT:{seq}&timeout_ms=20000&batch_ms=600"),
            &[],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.metrics().get("tickrelay_longpoll_waiters") < 1.0 {
        assert!(Instant::now() < deadline, "the poll never parked");
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = feed.send(&[FeedWriter::quote_msg(0, 111)]);
    // The second change comes after the first is applied, so the first
    // opened the window and the second falls in it.
    relay.wait_seq(first);
    let s = feed.send(&[FeedWriter::quote_msg(1, 222)]);
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
