//! The spine end to end: the real relay and the real `feed-simulator`
//! binary over real loopback sockets, each test asserting something a user
//! of the relay would notice. Every test uses its own multicast group and
//! port, so they run in parallel; every wait polls with a deadline.
//!
//! The relay runs in this process (`server::start`, [`Relay::in_process`])
//! where the feed, the table and the HTTP answers are the subject. The
//! command itself is spawned as the `tickrelay` binary: settings refused
//! with an exit status and a message on standard error, the layers of
//! flags, environment and file, `demo`, and SIGTERM.

use crate::support;

use std::time::Duration;

use serde::Deserialize;
use support::{
    DEADLINE, FeedAddr, FeedWriter, Relay, Sim, assert_snapshot_matches, poll_until, run_refused,
};
use tickrelay::price::Price;
use tickrelay::transport::snapshot::SnapshotBody;
use tickrelay::wire::{HEADER_LEN, header};

/// A market big enough to split into many packets and touch most symbols
/// (quotes and trades only: the books' `'L'`s are tests/it/book.rs's).
fn market(feed: FeedAddr, session: &str) -> Sim {
    Sim::new(feed)
        .flag("--book-depth", 0)
        .flag("--count", 20_000)
        .flag("--symbols", 300)
        .flag("--rate", 50_000)
        .flag("--session", session)
        .flag("--seed", 7)
}

#[test]
fn snapshot_holds_every_simulated_symbol_with_exactly_the_prices_sent() {
    let feed = FeedAddr::unique();
    let relay = Relay::in_process_feed(feed, &[]);
    let sent = market(feed, "SPINE1").run();
    assert_eq!(sent.last_seq(), 20_300, "300 directory entries + 20,000");

    let snapshot = relay.wait_snapshot_seq("SPINE1", sent.last_seq());
    assert_snapshot_matches(&snapshot, &sent);

    // Prices are exact decimal strings in JSON, never floats.
    let raw: serde_json::Value = relay.get("/v1/snapshot?symbols=AAPL").json();
    let bid = &raw["quotes"][0]["bid"];
    let text = bid
        .as_str()
        .unwrap_or_else(|| panic!("bid {bid} is not a string"));
    let (whole, frac) = text.split_once('.').expect("a decimal point");
    assert!(
        whole.bytes().all(|b| b.is_ascii_digit()) && frac.len() == 4,
        "{text}"
    );

    // Counters are published once per receive batch, just after the table.
    let m = poll_until(DEADLINE, "counters of the whole run", || {
        let m = relay.metrics();
        (m.sum("tickrelay_feed_applied_messages_total") >= 20_300.0
            && m.sum("tickrelay_symbols") == 300.0)
            .then_some(m)
    });
    assert_eq!(m.sum("tickrelay_feed_applied_messages_total"), 20_300.0);
    assert_eq!(m.sum("tickrelay_feed_lost_messages_total"), 0.0);
}

#[test]
fn a_and_b_lines_carrying_the_same_packets_apply_each_message_once() {
    let (a, b) = (FeedAddr::unique(), FeedAddr::unique());
    let relay = Relay::in_process(&[
        "--feed-a",
        &a.arg(),
        "--feed-b",
        &b.arg(),
        "--interface",
        "127.0.0.1",
    ]);
    let sent = market(a, "SPINEAB").flag("--line-b", b).run();
    let total = sent.last_seq() as f64;

    relay.wait_metric("tickrelay_feed_applied_messages_total", |v| v >= total);
    // Everything received is either applied or skipped as the other line's
    // copy (a copy still in flight is neither yet, on both sides).
    let m = poll_until(DEADLINE, "received = applied + duplicates", || {
        let m = relay.metrics();
        let received = m.sum("tickrelay_feed_messages_received_total");
        let accounted = m.sum("tickrelay_feed_applied_messages_total")
            + m.sum("tickrelay_feed_duplicate_messages_total");
        (received == accounted).then_some(m)
    });
    assert_eq!(m.sum("tickrelay_feed_applied_messages_total"), total);
    let dups = m.sum("tickrelay_feed_duplicate_messages_total");
    assert!(
        dups >= total * 0.9 && dups <= total,
        "about one duplicate per message: {dups} for {total}"
    );
    for line in ["a", "b"] {
        let got = m.labeled("tickrelay_feed_messages_received_total", "line", line);
        assert!(got >= total * 0.9, "line {line} received {got} of {total}");
    }
    assert_eq!(m.sum("tickrelay_feed_lost_messages_total"), 0.0);

    let snapshot = relay.wait_snapshot_seq("SPINEAB", sent.last_seq());
    assert_snapshot_matches(&snapshot, &sent);
}

#[test]
fn a_gap_is_counted_and_the_relay_moves_on() {
    let feed = FeedAddr::unique();
    let relay = Relay::in_process_feed(feed, &["--gap-hold-ms", "50", "--stale-after-ms", "60000"]);
    let sent = market(feed, "SPINEGAP").flag("--loss", 0.02).run();
    let total = sent.last_seq() as f64;

    // Every sequence number ends up applied, lost, or dropped because its
    // symbol's directory entry was lost.
    let m = poll_until(DEADLINE, "every message accounted for", || {
        let m = relay.metrics();
        let accounted = m.sum("tickrelay_feed_applied_messages_total")
            + m.sum("tickrelay_feed_lost_messages_total")
            + m.labeled(
                "tickrelay_feed_dropped_messages_total",
                "reason",
                "unknown_locate",
            );
        (accounted == total).then_some(m)
    });
    assert!(m.sum("tickrelay_feed_gaps_opened_total") > 0.0);
    let lost = m.sum("tickrelay_feed_lost_messages_total");
    assert!(lost > 0.0, "2% of packets were never sent");
    assert!(lost < total * 0.1, "lost {lost} of {total}");
    // It moved on past each gap: most of the session was applied.
    assert!(m.sum("tickrelay_feed_applied_messages_total") > total * 0.9);

    let r = relay.get("/v1/snapshot");
    assert_eq!(r.status, 200);
    let snapshot: SnapshotBody = r.json();
    assert_eq!(snapshot.session, "SPINEGAP");
    assert!(snapshot.quotes.len() > 250, "{}", snapshot.quotes.len());
    // With neither a recovery line nor a retransmission server, the relay
    // cannot know which symbols the lost messages touched: it says it is not
    // ready and how many symbols may be incomplete, instead of serving
    // possibly stale prices as if whole.
    // The count in /readyz is refreshed about once a second; the gauge at once.
    let body = poll_until(DEADLINE, "/readyz and the gauge to agree", || {
        let ready = relay.get("/readyz");
        assert_eq!(ready.status, 503, "{}", ready.text());
        let body: serde_json::Value = ready.json();
        let gauge = relay.metrics().sum("tickrelay_feed_incomplete_symbols");
        (body["incomplete_symbols"].as_f64() == Some(gauge)).then_some(body)
    });
    assert_eq!(body["status"], "recovering", "{body}");
    assert_eq!(body["lost_messages"].as_f64(), Some(lost), "{body}");
    assert!(body["incomplete_symbols"].as_u64() > Some(0), "{body}");
    // Short and long polls carry the same news in a header.
    for path in ["/v1/snapshot", "/v1/poll?timeout_ms=10"] {
        let r = relay.get(path);
        let feed = r.header("tickrelay-feed").unwrap_or_default().to_owned();
        assert!(
            feed.contains("status=recovering")
                && feed.contains("session=SPINEGAP")
                && feed.contains("complete=false")
                && feed.contains(&format!("lost={}", lost as u64)),
            "{path}: tickrelay-feed: {feed}"
        );
    }
    // A recovered half may change a symbol without moving its seq: once a
    // recovery began, the short-poll tag says so.
    let etag = relay
        .get("/v1/snapshot")
        .header("etag")
        .unwrap_or_default()
        .to_owned();
    assert!(
        etag.starts_with("\"SPINEGAP:") && etag.ends_with(":r1\""),
        "{etag}"
    );
}

#[test]
fn malformed_datagrams_are_counted_by_reason_and_change_nothing() {
    let feed = FeedAddr::unique();
    let relay = Relay::in_process_feed(feed, &["--stale-after-ms", "60000"]);
    let mut w = FeedWriter::new(feed, "BAD1");
    w.directory(&[(0, "GOOD", 100_0000)]);
    let first_quote = w.quote(0, 99_5000, 100_5000, (100, 200));
    relay.wait_snapshot_seq("BAD1", first_quote);

    // Broken framing: the whole datagram is dropped, no sequence is used.
    let valid = w.framed(w.builder.next_seq(), &[&[0x93, 0x51, 0, 0]]);
    w.raw(&valid[..HEADER_LEN - 4]); // short header
    let mut count_overrun = valid.clone();
    count_overrun[18..20].copy_from_slice(&3u16.to_be_bytes());
    w.raw(&count_overrun);
    let mut length_overrun = valid.clone();
    length_overrun[20..22].copy_from_slice(&500u16.to_be_bytes());
    w.raw(&length_overrun);
    let mut trailing = valid.clone();
    trailing.push(0);
    w.raw(&trailing);
    let mut oversized = header(w.builder.session(), w.builder.next_seq(), 1).to_vec();
    oversized.resize(10_000, 0xAB);
    w.raw(&oversized);

    // Well-framed, bad messages: each uses its sequence number and is counted.
    w.send_payloads(&[&[0xc1]]); // not MessagePack
    w.send_payloads(&[&[0x92, b'Z', 1]]); // unknown type 'Z'
    let mut bad_locate = Vec::new();
    rmp::encode::write_array_len(&mut bad_locate, 7).unwrap();
    for v in [81u64, 70_000, 1, 1, 1, 1, 1] {
        rmp::encode::write_uint(&mut bad_locate, v).unwrap();
    }
    w.send_payloads(&[&bad_locate]); // locate does not fit 16 bits
    w.quote(777, 1, 2, (1, 1)); // no directory entry for locate 777

    // The relay still applies good data after all that.
    let good = w.quote(0, 101_0000, 101_2500, (300, 400));
    let snapshot = relay.wait_snapshot_seq("BAD1", good);
    assert_eq!(snapshot.quotes.len(), 1);
    let q = &snapshot.quotes[0];
    assert_eq!(
        (&*q.symbol, q.bid, q.ask, q.bid_size, q.ask_size, q.seq),
        (
            "GOOD",
            Some(Price(101_0000)),
            Some(Price(101_2500)),
            300,
            400,
            good
        )
    );

    // Counters are published once per receive batch, just after the table.
    let m = relay.wait_metric("tickrelay_feed_applied_messages_total", |v| v >= 3.0);
    for reason in [
        "short_header",
        "count_overrun",
        "length_overrun",
        "trailing_bytes",
        "oversized",
        "bad_msgpack",
        "unknown_type",
        "bad_field",
    ] {
        assert_eq!(
            m.labeled("tickrelay_feed_decode_errors_total", "reason", reason),
            1.0,
            "decode errors for {reason}:\n{}",
            m.feed_lines()
        );
    }
    assert_eq!(
        m.labeled(
            "tickrelay_feed_dropped_messages_total",
            "reason",
            "unknown_locate"
        ),
        1.0
    );
    assert_eq!(m.sum("tickrelay_feed_applied_messages_total"), 3.0);
    assert_eq!(m.sum("tickrelay_feed_lost_messages_total"), 0.0);
    assert_eq!(m.sum("tickrelay_feed_gaps_opened_total"), 0.0);

    // And a real feed afterwards (a new session) is applied exactly.
    let sent = Sim::new(feed)
        .flag("--count", 5_000)
        .flag("--symbols", 100)
        .flag("--rate", 50_000)
        .flag("--session", "GOOD1")
        .run();
    let snapshot = relay.wait_snapshot_seq("GOOD1", sent.last_seq());
    assert_snapshot_matches(&snapshot, &sent);
}

#[test]
fn an_unchanged_watchlist_answers_304_and_a_change_answers_200() {
    let feed = FeedAddr::unique();
    let relay = Relay::in_process_feed(feed, &["--stale-after-ms", "60000"]);
    let mut w = FeedWriter::new(feed, "ETAG1");
    w.directory(&[(0, "AAA", 10_0000), (1, "BBB", 20_0000)]);
    let s = w.quote(0, 10_1000, 10_2000, (100, 100));
    relay.wait_snapshot_seq("ETAG1", s);

    let first = relay.get("/v1/snapshot?symbols=AAA");
    assert_eq!(first.status, 200);
    let etag = first.header("etag").expect("an ETag").to_string();
    assert_eq!(etag, format!("\"ETAG1:{s}\""));

    let again = relay.get_with("/v1/snapshot?symbols=AAA", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    // Another symbol ticks: the watchlist of AAA is still unchanged.
    let other = w.quote(1, 20_1000, 20_2000, (100, 100));
    relay.wait_snapshot_seq("ETAG1", other);
    let still = relay.get_with("/v1/snapshot?symbols=AAA", &[("If-None-Match", &etag)]);
    assert_eq!(still.status, 304);
    let both = relay.get_with("/v1/snapshot?symbols=AAA,BBB", &[("If-None-Match", &etag)]);
    assert_eq!(both.status, 200);
    assert_eq!(
        both.header("etag"),
        Some(format!("\"ETAG1:{other}\"").as_str())
    );

    // AAA changes: 200 with a new ETag and the new price.
    let changed = w.quote(0, 10_3000, 10_4000, (500, 600));
    relay.wait_snapshot_seq("ETAG1", changed);
    let fresh = relay.get_with("/v1/snapshot?symbols=AAA", &[("If-None-Match", &etag)]);
    assert_eq!(fresh.status, 200);
    assert_eq!(
        fresh.header("etag"),
        Some(format!("\"ETAG1:{changed}\"").as_str())
    );
    let body: SnapshotBody = fresh.json();
    assert_eq!(body.quotes[0].bid, Some(Price(10_3000)));
    assert_eq!(body.quotes[0].seq, changed);

    // The single-symbol form has the same validator.
    let one = relay.get("/v1/snapshot/AAA");
    assert_eq!(one.status, 200);
    assert_eq!(one.header("etag"), fresh.header("etag"));
}

/// The MessagePack snapshot as raw integers, to check prices are not strings.
#[derive(Debug, Deserialize)]
struct RawBody {
    seq: u64,
    quotes: Vec<RawQuote>,
}

#[derive(Debug, Deserialize)]
struct RawQuote {
    symbol: String,
    bid: Option<i64>,
    last: Option<i64>,
    prev_close: i64,
}

#[test]
fn msgpack_snapshot_holds_the_same_quotes_as_json() {
    let feed = FeedAddr::unique();
    let relay = Relay::in_process_feed(feed, &["--stale-after-ms", "60000"]);
    let mut w = FeedWriter::new(feed, "MSGP1");
    w.directory(&[(0, "AAA", 189_1200), (1, "BBB", 5), (2, "CCC", 0)]);
    w.quote(0, 189_1200, 189_1400, (300, 200));
    w.quote(1, -15, 7, (1, u32::MAX));
    let last = w.trade(0, 189_1300, 100, 4_512_300);
    relay.wait_snapshot_seq("MSGP1", last);

    let json = relay.get("/v1/snapshot");
    let packed = relay.get_with("/v1/snapshot", &[("Accept", "application/msgpack")]);
    assert_eq!(packed.status, 200);
    assert_eq!(packed.header("content-type"), Some("application/msgpack"));
    let from_json: SnapshotBody = json.json();
    let from_msgpack: SnapshotBody =
        rmp_serde::from_slice(&packed.body).expect("a MessagePack snapshot");
    assert_eq!(from_msgpack, from_json);
    assert_eq!(from_json.quotes.len(), 3);

    let raw: RawBody = rmp_serde::from_slice(&packed.body).expect("prices as integers");
    assert_eq!(raw.seq, last);
    let aaa = &raw.quotes[0];
    assert_eq!(
        (aaa.symbol.as_str(), aaa.bid, aaa.last, aaa.prev_close),
        ("AAA", Some(189_1200), Some(189_1300), 189_1200)
    );
    assert_eq!(raw.quotes[1].bid, Some(-15));
    assert_eq!(raw.quotes[2].bid, None, "CCC never quoted");
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

#[test]
fn bad_requests_get_clear_errors() {
    let feed = FeedAddr::unique();
    let relay = Relay::in_process_feed(feed, &["--max-symbols", "3", "--stale-after-ms", "60000"]);
    let mut w = FeedWriter::new(feed, "ERR1");
    let s = w.directory(&[(0, "AAA", 1), (1, "BBB", 2), (2, "CCC", 3), (3, "DDD", 4)]);
    relay.wait_snapshot_seq("ERR1", s);

    let error = |path: &str, status: u16| -> ErrorDetail {
        let r = relay.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        r.json::<ErrorBody>().error
    };

    let e = error("/v1/snapshot?symbols=AAA,NOPE", 404);
    assert_eq!(e.code, "unknown_symbol");
    assert!(e.message.contains("NOPE"), "{}", e.message);
    assert_eq!(error("/v1/snapshot/NOPE", 404).code, "unknown_symbol");

    let e = error("/v1/snapshot?symbols=AAA,BBB,CCC,DDD", 400);
    assert_eq!(e.code, "too_many_symbols");
    assert!(e.message.contains('3'), "names the limit: {}", e.message);
    // At the limit is fine.
    assert_eq!(relay.get("/v1/snapshot?symbols=AAA,BBB,CCC").status, 200);

    assert_eq!(error("/v1/snapshot?symbols=A$B", 400).code, "bad_symbol");
    assert_eq!(
        error("/v1/snapshot?symbols=%3Cscript%3E", 400).code,
        "bad_symbol"
    );
    assert_eq!(error("/v1/nothing-here", 404).code, "not_found");
}

#[test]
fn readyz_waits_for_the_directory_and_healthz_is_always_up() {
    let feed = FeedAddr::unique();
    let relay = Relay::in_process_feed(feed, &["--stale-after-ms", "60000"]);
    assert_eq!(relay.get("/healthz").status, 200);
    let r = relay.get("/readyz");
    assert_eq!(r.status, 503, "no feed yet: {}", r.text());
    assert_eq!(r.json::<ErrorBody>().error.code, "not_ready");

    let mut w = FeedWriter::new(feed, "READY1");
    w.directory(&[(0, "AAA", 1), (1, "BBB", 2)]);
    let ready = poll_until(DEADLINE, "/readyz 200", || {
        Some(relay.get("/readyz")).filter(|r| r.status == 200)
    });
    let body: serde_json::Value = ready.json();
    assert_eq!(body["symbols"], 2);
    assert_eq!(body["session"], "READY1");
    assert_eq!(relay.get("/healthz").status, 200);
}

#[test]
fn a_feed_address_off_the_host_is_refused_naming_the_setting() {
    let (status, stderr) = run_refused(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--feed-a",
            "10.0.0.1:5000",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(stderr.contains("feed_a"), "{stderr}");
    assert!(stderr.contains("--feed-a"), "{stderr}");
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused() {
    let path = support::scratch_dir().join(format!("unknown-{}.toml", support::unique_suffix()));
    std::fs::write(
        &path,
        "http = \"127.0.0.1:0\"\nfeed_z = \"239.255.0.9:1\"\n",
    )
    .unwrap();
    let (status, stderr) = run_refused(&["serve", "--config", path.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&path);
    assert!(!status.success());
    assert!(stderr.contains("feed_z"), "names the unknown key: {stderr}");
}

#[test]
fn an_http_port_in_use_is_refused_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let feed = FeedAddr::unique().arg();
    let (status, stderr) = run_refused(&["serve", "--http", &addr, "--feed-a", &feed], &[]);
    assert!(!status.success());
    assert!(stderr.contains("--http"), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    drop(taken);
}

#[test]
fn a_bad_environment_variable_is_refused_naming_the_setting() {
    let feed = FeedAddr::unique().arg();
    let (status, stderr) = run_refused(
        &["serve", "--http", "127.0.0.1:0", "--feed-a", &feed],
        &[("TICKRELAY_GAP_HOLD_MS", "0")],
    );
    assert!(!status.success());
    assert!(stderr.contains("gap_hold_ms"), "{stderr}");
}

#[test]
fn flags_beat_environment_beats_file() {
    let [file_port, env_port, flag_port] = [(); 3].map(|_| support::free_tcp_port());
    let feed = FeedAddr::unique();
    let path = support::scratch_dir().join(format!("layers-{}.toml", support::unique_suffix()));
    std::fs::write(
        &path,
        format!(
            "http = \"127.0.0.1:{file_port}\"\nfeed_a = \"{feed}\"\ninterface = \"127.0.0.1\"\n"
        ),
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let env_http = format!("127.0.0.1:{env_port}");
    let env = [("TICKRELAY_HTTP", env_http.as_str())];
    let flag_http = format!("127.0.0.1:{flag_port}");

    let port = |args: &[&str], env: &[(&str, &str)]| {
        let relay = Relay::start(args, env).unwrap_or_else(|e| panic!("{e}"));
        relay.addr.port()
    };
    assert_eq!(
        port(&["serve", "--config", config, "--http", &flag_http], &env),
        flag_port,
        "the flag wins"
    );
    assert_eq!(
        port(&["serve", "--config", config], &env),
        env_port,
        "env beats file"
    );
    assert_eq!(
        port(&["serve", "--config", config], &[]),
        file_port,
        "the file applies"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn demo_serves_a_non_empty_snapshot_within_seconds() {
    let feed = FeedAddr::unique().arg();
    // A recovery loop of its own: the demo's default one would be shared
    // with any other demo the suite runs at the same time.
    let recovery = FeedAddr::unique().arg();
    let relay = Relay::start(
        &[
            "demo",
            "--http",
            "127.0.0.1:0",
            "--feed-a",
            &feed,
            "--recovery",
            &recovery,
        ],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    poll_until(DEADLINE, "demo /readyz 200", || {
        (relay.get("/readyz").status == 200).then_some(())
    });
    let snapshot = poll_until(DEADLINE, "a non-empty demo snapshot", || {
        let body: SnapshotBody = relay.get("/v1/snapshot").json();
        (!body.quotes.is_empty() && body.quotes.iter().any(|q| q.bid.is_some())).then_some(body)
    });
    assert!(snapshot.seq > 0);
    assert!(snapshot.quotes.iter().any(|q| &*q.symbol == "AAPL"));
}

#[test]
fn sigterm_stops_the_relay_cleanly() {
    let feed = FeedAddr::unique();
    let mut relay = Relay::serve_feed(feed, &["--shutdown-grace-ms", "2000"]);
    let mut w = FeedWriter::new(feed, "TERM1");
    let s = w.directory(&[(0, "AAA", 1)]);
    relay.wait_snapshot_seq("TERM1", s);
    relay.sigterm();
    let status = relay
        .wait_exit(Duration::from_secs(20))
        .expect("the relay exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
