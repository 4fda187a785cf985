//! The chart and the tape end to end (`/v1/bars`, `/v1/trades`): what the
//! relay serves equals what the test computes itself from the simulator's
//! recorded session; a bar closes when feed time passes its end, for a
//! symbol that trades no more too; paging, ETag / 304, MessagePack, errors;
//! and a relay that joined late and replayed the session serves the same
//! bars, byte for byte, as one that ran from the start.
//!
//! Real sockets on loopback: the `feed-simulator` binary or a hand-written
//! feed, relays in this process ([`support::Relay::in_process`]), plain HTTP.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::jwt::{self, User};
use support::{FeedAddr, FeedWriter, Relay, Sim, free_udp_port, poll_until, scratch};
use tickrelay::price::Price;
use tickrelay::transport::chart::BarsBody;
use tickrelay::wire::Message;

pub(crate) const SECOND: u64 = 1_000_000_000;
pub(crate) const MINUTE: u64 = 60 * SECOND;

/// A trade as the simulator recorded it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) ts: u64,
    pub(crate) seq: u64,
    pub(crate) price: i64,
    pub(crate) size: u64,
}

/// A bar, computed here or read from the relay: prices in 1/10,000.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ohlcv {
    pub(crate) t: u64,
    pub(crate) o: i64,
    pub(crate) h: i64,
    pub(crate) l: i64,
    pub(crate) c: i64,
    pub(crate) v: u64,
    pub(crate) n: u64,
    pub(crate) closed: bool,
}

/// `"189.1300"` in 1/10,000, parsed here rather than by the relay's code.
pub(crate) fn units(text: &str) -> i64 {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = format!("{frac:0<4}");
    assert_eq!(frac.len(), 4, "{text}: four decimals at most");
    whole.parse::<i64>().unwrap() * 10_000 + frac.parse::<i64>().unwrap()
}

/// The recording's trades by symbol (in sequence order), its newest
/// exchange timestamp and its last sequence.
pub(crate) fn read_recording(path: &Path) -> (BTreeMap<String, Vec<Recorded>>, u64, u64) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut trades: BTreeMap<String, Vec<Recorded>> = BTreeMap::new();
    let (mut newest, mut last) = (0, 0);
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let ts: u64 = cells[0].parse().unwrap();
        let seq: u64 = cells[1].parse().unwrap();
        newest = newest.max(ts);
        last = last.max(seq);
        if cells[2] == "T" {
            // ts,seq,type,locate,symbol,name,prev_close,bid,ask,bid_size,ask_size,price,size,volume
            // then side,orders (empty for a trade) in the current header.
            assert!(matches!(cells.len(), 14 | 16), "{line}");
            trades
                .entry(cells[4].to_owned())
                .or_default()
                .push(Recorded {
                    ts,
                    seq,
                    price: units(cells[11]),
                    size: cells[12].parse().unwrap(),
                });
        }
    }
    (trades, newest, last)
}

/// The bars of `interval` that `trades` (in sequence order) make, closed
/// once `feed_time` reaches their end.
pub(crate) fn bars_of(trades: &[Recorded], interval: u64, feed_time: u64) -> Vec<Ohlcv> {
    let mut bars: BTreeMap<u64, Ohlcv> = BTreeMap::new();
    for t in trades {
        let start = t.ts / interval * interval;
        let b = bars.entry(start).or_insert(Ohlcv {
            t: start,
            o: t.price,
            h: t.price,
            l: t.price,
            c: t.price,
            v: 0,
            n: 0,
            closed: feed_time >= start + interval,
        });
        b.h = b.h.max(t.price);
        b.l = b.l.min(t.price);
        b.c = t.price;
        b.v += t.size;
        b.n += 1;
    }
    bars.into_values().collect()
}

pub(crate) fn bar_of(v: &Value) -> Ohlcv {
    let price = |k: &str| units(v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")));
    Ohlcv {
        t: v["t"].as_u64().unwrap(),
        o: price("o"),
        h: price("h"),
        l: price("l"),
        c: price("c"),
        v: v["v"].as_u64().unwrap(),
        n: v["n"].as_u64().unwrap(),
        closed: v["closed"].as_bool().unwrap(),
    }
}

pub(crate) fn trade_of(v: &Value) -> (u64, u64, i64, u64) {
    (
        v["seq"].as_u64().unwrap(),
        v["ts"].as_u64().unwrap(),
        units(v["price"].as_str().unwrap()),
        v["size"].as_u64().unwrap(),
    )
}

/// `GET path` as JSON, expecting 200.
pub(crate) fn ok_json(relay: &Relay, path: &str) -> Value {
    let r = relay.get(path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

pub(crate) fn bars(relay: &Relay, path: &str) -> Vec<Ohlcv> {
    ok_json(relay, path)["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(bar_of)
        .collect()
}

pub(crate) fn trades(relay: &Relay, path: &str) -> Vec<(u64, u64, i64, u64)> {
    ok_json(relay, path)["trades"]
        .as_array()
        .unwrap()
        .iter()
        .map(trade_of)
        .collect()
}

/// The newest `n` of `all`.
fn newest<T: Clone>(all: &[T], n: usize) -> Vec<T> {
    all[all.len().saturating_sub(n)..].to_vec()
}

/// Pages back from the newest: `fetch(before)` answers the page before a
/// bound, `key` is an item's bound for the next page; all pages, oldest
/// first, until an empty one.
fn page_back<T>(fetch: impl Fn(u64) -> Vec<T>, key: impl Fn(&T) -> u64) -> Vec<T> {
    let mut all: Vec<T> = Vec::new();
    let mut before = u64::MAX;
    loop {
        let page = fetch(before);
        let Some(first) = page.first() else {
            return all;
        };
        before = key(first);
        all.splice(0..0, page);
    }
}

/// The error code of a refused request, checking its status.
fn refused(relay: &Relay, path: &str, status: u16) -> String {
    let r = relay.get(path);
    assert_eq!(r.status, status, "{path}: {}", r.text());
    let v: Value = r.json();
    v["error"]["code"].as_str().unwrap().to_owned()
}

/// Four minutes of a recorded market replayed to a relay keeping 120
/// one-second bars and 300 trades: every 1 s, 1 min and 5 min bar and
/// every kept trade of five symbols (the busiest, the quietest that
/// traded, three between) equals what this test computes from the
/// recording; paging walks back through all of it; bad requests are
/// refused with their codes; MessagePack carries the same bars.
#[test]
fn bars_and_tape_equal_those_computed_from_the_recorded_session() {
    let file = scratch("chart-session.csv");
    Sim::new(FeedAddr::unique())
        .flag("--symbols", 12)
        .flag("--rate", 1_000)
        .flag("--seed", 21)
        .flag("--session", "CHREC")
        .flag("--fast-forward", 240)
        .flag("--record", file.display())
        .run();
    let (recorded, feed_time, last) = read_recording(&file);

    let group = FeedAddr::unique();
    let server = format!("127.0.0.1:{}", free_udp_port());
    let relay = Relay::in_process(&[
        "--feed-a",
        &group.arg(),
        "--retransmit",
        &server,
        "--bars-1s",
        "120",
        "--trade-history",
        "300",
        "--stale-after-ms",
        "60000",
    ]);
    let replayed = Sim::new(group)
        .flag("--replay", file.display())
        .flag("--speed", 0)
        .flag("--rate", 40_000)
        .flag("--retransmit", &server)
        .flag("--session", "CHART1")
        .run();
    assert_eq!(replayed.last_seq(), last);
    relay.wait_seq(last);

    let mut by_count: Vec<(&String, &Vec<Recorded>)> = recorded.iter().collect();
    by_count.sort_by_key(|(s, t)| (std::cmp::Reverse(t.len()), (*s).clone()));
    assert!(by_count.len() >= 5, "{} symbols traded", by_count.len());
    let n = by_count.len();
    let picked = [0, n / 4, n / 2, 3 * n / 4, n - 1].map(|i| by_count[i]);
    assert!(
        bars_of(picked[0].1, MINUTE, feed_time).len() >= 4,
        "four minutes of the busiest symbol"
    );
    assert!(
        picked[0].1.len() > 300,
        "the busiest symbol outgrows the tape: {} trades",
        picked[0].1.len()
    );
    for (symbol, sent) in picked {
        let second = bars_of(sent, SECOND, feed_time);
        let minute = bars_of(sent, MINUTE, feed_time);
        let five = bars_of(sent, 5 * MINUTE, feed_time);
        assert_eq!(
            bars(&relay, &format!("/v1/bars/{symbol}?interval=1s")),
            newest(&second, 120),
            "{symbol}: 1 s bars"
        );
        assert_eq!(
            bars(&relay, &format!("/v1/bars/{symbol}?interval=1m")),
            minute,
            "{symbol}: 1 min bars"
        );
        assert_eq!(
            bars(&relay, &format!("/v1/bars/{symbol}?interval=5m")),
            five,
            "{symbol}: 5 min bars, built from the minutes"
        );
        let tape: Vec<(u64, u64, i64, u64)> = sent
            .iter()
            .map(|t| (t.seq, t.ts, t.price, t.size))
            .collect();
        assert_eq!(
            trades(&relay, &format!("/v1/trades/{symbol}")),
            newest(&tape, 300),
            "{symbol}: the tape"
        );
        let body = ok_json(&relay, &format!("/v1/bars/{symbol}?interval=1m&limit=2"));
        assert_eq!(body["symbol"], symbol.as_str());
        assert_eq!(body["interval"], "1m");
        assert_eq!(body["session"], "CHART1");
        assert_eq!(body["seq"], last);
        assert_eq!(body["complete"], true);
        assert_eq!(body["bars"].as_array().unwrap().len(), 2);
    }

    // Paging back through the busiest symbol, 25 bars and 40 trades a page.
    let busiest = picked[0].0;
    let pages = page_back(
        |before| {
            bars(
                &relay,
                &format!("/v1/bars/{busiest}?interval=1s&limit=25&before={before}"),
            )
        },
        |b| b.t,
    );
    assert_eq!(
        pages,
        bars(&relay, &format!("/v1/bars/{busiest}?interval=1s"))
    );
    assert_eq!(pages.len(), 120);
    let taped = page_back(
        |before| {
            trades(
                &relay,
                &format!("/v1/trades/{busiest}?limit=40&before_seq={before}"),
            )
        },
        |t| t.0,
    );
    assert_eq!(taped, trades(&relay, &format!("/v1/trades/{busiest}")));
    assert_eq!(taped.len(), 300);

    // MessagePack: the same answer, prices as integers.
    let path = format!("/v1/bars/{busiest}?interval=1m");
    let packed = relay.get_with(&path, &[("Accept", "application/msgpack")]);
    assert_eq!(packed.header("content-type"), Some("application/msgpack"));
    let packed: BarsBody = rmp_serde::from_slice(&packed.body).unwrap();
    let json: BarsBody = relay.get(&path).json();
    assert_eq!(packed, json);
    assert_eq!(packed.bars[0].o, Price(recorded[busiest][0].price));

    for (path, status, code) in [
        ("/v1/bars/{S}?interval=1s&limit=121", 400, "bad_history"),
        ("/v1/bars/{S}?interval=1m&limit=0", 400, "bad_history"),
        ("/v1/bars/{S}?interval=1h&limit=25", 400, "bad_history"),
        ("/v1/trades/{S}?limit=301", 400, "bad_history"),
        ("/v1/trades/{S}?limit=ten", 400, "bad_history"),
        ("/v1/bars/{S}?interval=2m", 400, "bad_interval"),
        ("/v1/bars/{S}?before=yesterday", 400, "bad_request"),
        ("/v1/trades/{S}?before_seq=-1", 400, "bad_request"),
        ("/v1/bars/NOSUCH", 404, "unknown_symbol"),
        ("/v1/trades/NOSUCH", 404, "unknown_symbol"),
    ] {
        let path = path.replace("{S}", busiest);
        assert_eq!(refused(&relay, &path, status), code, "{path}");
    }
    let _ = std::fs::remove_file(&file);
}

/// A trade of `locate` at exchange time `ts`.
pub(crate) fn trade_at(locate: u16, ts: u64, price: i64, size: u32) -> Message<'static> {
    Message::Trade {
        locate,
        ts,
        price: Price(price),
        size,
        volume: 0,
    }
}

/// A quote of `locate` at exchange time `ts`.
pub(crate) fn quote_at(locate: u16, ts: u64) -> Message<'static> {
    Message::Quote {
        locate,
        ts,
        bid: Price(99_0000),
        ask: Price(101_0000),
        bid_size: 1,
        ask_size: 1,
    }
}

/// AAA trades twice in one second and then never again; BBB's quotes move
/// feed time on. AAA's bar closes once feed time reaches its end, the
/// 1-minute bar a minute later; the ETag stays while nothing AAA's chart
/// shows changes, and moves when its bar closes or it trades.
#[test]
fn a_bar_closes_when_feed_time_passes_its_end_without_another_trade() {
    let group = FeedAddr::unique();
    let relay = Relay::in_process_feed(group, &["--stale-after-ms", "60000"]);
    let mut feed = FeedWriter::new(group, "CLOSE");
    feed.list(&["AAA", "BBB"]);
    let t0 = 1_800_000_000 * SECOND;
    let s1 = feed.send(&[trade_at(0, t0 + SECOND / 5, 10_0000, 100)]);
    let s2 = feed.send(&[trade_at(0, t0 + SECOND * 7 / 10, 10_5000, 50)]);
    relay.wait_seq(s2);

    let path = "/v1/bars/AAA?interval=1s";
    let first = relay.get(path);
    let etag = first.header("etag").expect("an ETag").to_owned();
    let body: Value = first.json();
    assert_eq!(
        body["complete"], true,
        "a relay there from the session's start"
    );
    assert_eq!(
        body["bars"],
        serde_json::json!([{"t": t0, "o": "10.0000", "h": "10.5000", "l": "10.0000",
            "c": "10.5000", "v": 150, "n": 2, "closed": false}])
    );
    assert_eq!(
        ok_json(&relay, "/v1/trades/AAA")["trades"],
        serde_json::json!([
            {"seq": s1, "ts": t0 + SECOND / 5, "price": "10.0000", "size": 100},
            {"seq": s2, "ts": t0 + SECOND * 7 / 10, "price": "10.5000", "size": 50},
        ])
    );
    let again = |etag: &str| relay.get_with(path, &[("If-None-Match", etag)]);
    assert_eq!(again(&etag).status, 304);

    // BBB within AAA's second: nothing AAA shows changes.
    let s3 = feed.send(&[quote_at(1, t0 + SECOND * 9 / 10)]);
    relay.wait_seq(s3);
    assert_eq!(
        again(&etag).status,
        304,
        "BBB's quote changes nothing of AAA's"
    );

    // BBB at the end of AAA's second: the bar closes, AAA never traded again.
    let s4 = feed.send(&[quote_at(1, t0 + SECOND)]);
    relay.wait_seq(s4);
    let closed = again(&etag);
    assert_eq!(closed.status, 200, "the bar closed: a new ETag");
    let body: Value = closed.json();
    assert_eq!(body["bars"][0]["closed"], true);
    assert_eq!(body["bars"][0]["n"], 2);
    let etag = closed.header("etag").unwrap().to_owned();
    assert_eq!(again(&etag).status, 304);
    let minute = "/v1/bars/AAA?interval=1m";
    assert_eq!(ok_json(&relay, minute)["bars"][0]["closed"], false);

    // A minute later by the feed's clock (BBB trades): the minute closes too.
    let s5 = feed.send(&[trade_at(1, t0 + MINUTE, 20_0000, 1)]);
    relay.wait_seq(s5);
    assert_eq!(ok_json(&relay, minute)["bars"][0]["closed"], true);
    assert_eq!(
        again(&etag).status,
        304,
        "AAA's seconds were closed already"
    );
    let bbb = ok_json(&relay, "/v1/bars/BBB?interval=1s");
    assert_eq!(bbb["bars"][0]["closed"], false, "BBB's own bar is open");

    // AAA trades again: a new bar, a new ETag.
    let s6 = feed.send(&[trade_at(0, t0 + MINUTE + SECOND, 11_0000, 10)]);
    relay.wait_seq(s6);
    let moved = again(&etag);
    assert_eq!(moved.status, 200);
    let body: Value = moved.json();
    assert_eq!(body["bars"].as_array().unwrap().len(), 2);
    assert_eq!(body["seq"], s6);
}

/// The final state's last sequence.
fn last_seq_of(path: &Path) -> u64 {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["next_seq"].as_u64().unwrap() - 1
}

/// `complete` of a symbol's bars on `relay`.
fn complete(relay: &Relay, symbol: &str) -> bool {
    ok_json(relay, &format!("/v1/bars/{symbol}?interval=1s"))["complete"]
        .as_bool()
        .unwrap()
}

/// One relay from the session's start; one joining about ten seconds late
/// that replays the session from the retransmission server (which keeps
/// all of it); one joining late with no server to replay from. The first
/// two serve the same bars of every interval and the same trades, byte
/// for byte, and say `complete: true`; the third says `complete: false`.
#[test]
fn a_late_joiner_that_replays_the_session_serves_the_same_bars_byte_for_byte() {
    let group = FeedAddr::unique();
    let server = format!("127.0.0.1:{}", free_udp_port());
    let final_path = scratch("chart-late.json");
    let relay = |extra: &[&str]| {
        let mut args = vec![
            "--feed-a".to_owned(),
            group.arg(),
            "--stale-after-ms".into(),
            "60000".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Relay::in_process(&args)
    };
    let witness = relay(&["--retransmit", &server]);
    let sim = support::spawn_simulator(&[
        "--group",
        &group.arg(),
        "--retransmit",
        &server,
        "--history",
        "1000000",
        "--symbols",
        "20",
        "--rate",
        "2000",
        "--duration",
        "22",
        "--session",
        "CHARTLATE",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    poll_until(
        Duration::from_secs(60),
        "ten seconds of the session",
        || (witness.metrics().sum("tickrelay_feed_sequence") >= 20_000.0).then_some(()),
    );
    let late = relay(&["--retransmit", &server]);
    let blind = relay(&[]);
    support::wait_sim(sim, Duration::from_secs(60));
    let last = last_seq_of(&final_path);
    for r in [&witness, &late, &blind] {
        r.wait_seq(last);
    }
    let symbols: Vec<String> = ok_json(&witness, "/v1/symbols")["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(symbols.len(), 20);
    poll_until(
        support::DEADLINE,
        "the late joiner's history complete",
        || complete(&late, &symbols[0]).then_some(()),
    );
    let mut compared = 0;
    for symbol in &symbols {
        let mut paths: Vec<String> = ["1s", "1m", "5m", "15m", "1h"]
            .iter()
            .map(|i| format!("/v1/bars/{symbol}?interval={i}"))
            .collect();
        paths.push(format!("/v1/trades/{symbol}"));
        for path in paths {
            let (a, b) = (witness.get(&path), late.get(&path));
            assert_eq!((a.status, b.status), (200, 200), "{path}");
            assert_eq!(
                a.text(),
                b.text(),
                "{path}: the late joiner differs from the relay there from the start"
            );
            assert_eq!(a.header("etag"), b.header("etag"), "{path}");
            compared += 1;
        }
        let v: Value = witness
            .get(&format!("/v1/bars/{symbol}?interval=1s"))
            .json();
        assert_eq!(v["complete"], true, "{symbol}");
        assert!(!v["bars"].as_array().unwrap().is_empty(), "{symbol} traded");
        assert!(
            !complete(&blind, symbol),
            "{symbol}: no replay, partial history"
        );
    }
    assert_eq!(compared, 20 * 6);
    let m = late.metrics();
    assert!(
        m.get("tickrelay_feed_backfill_requests_total") > 0.0,
        "it replayed"
    );
    assert_eq!(m.get("tickrelay_feed_backfill_lost_messages_total"), 0.0);
}

/// The chart's routes pass the door: a user's token must carry the `bars`
/// (or `trades`) channel and the symbol.
#[test]
fn the_chart_routes_ask_the_users_entitlements() {
    let group = FeedAddr::unique();
    let relay = jwt::relay(group, &[]);
    let mut feed = FeedWriter::new(group, "ENTITLED");
    feed.list(&["AAA", "BBB"]);
    let seq = feed.send(&[trade_at(0, 1_800_000_000 * SECOND, 10_0000, 1)]);
    relay.wait_seq(seq);
    let token = |symbols: &[&str], channels: &[&str]| {
        User::named("chartist")
            .symbols(symbols)
            .channels(channels)
            .bearer()
    };
    let status = |path: &str, auth: &str| {
        let r = relay.get_with(path, &[("Authorization", auth)]);
        let code = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null)["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (r.status, code)
    };
    let quotes_only = token(&["*"], &["quotes"]);
    let bars_only = token(&["*"], &["bars"]);
    let b_only = token(&["B*"], &["bars", "trades"]);
    let refused = (403, "not_entitled".to_owned());
    let ok = (200, String::new());
    assert_eq!(status("/v1/bars/AAA", &quotes_only), refused);
    assert_eq!(status("/v1/trades/AAA", &quotes_only), refused);
    assert_eq!(status("/v1/bars/AAA", &bars_only), ok);
    assert_eq!(status("/v1/trades/AAA", &bars_only), refused);
    assert_eq!(status("/v1/bars/AAA", &b_only), refused);
    assert_eq!(status("/v1/trades/BBB", &b_only), ok);
    assert_eq!(relay.get("/v1/bars/AAA").status, 401, "no token");
}
