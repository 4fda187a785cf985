//! The chart and the tape of a delayed user, against the real relay: a user
//! whose token says `delay_ms` D gets, over REST, WebSocket and SSE, only
//! trades made at least D ago and no bar holding a later one, while a
//! real-time user on the same relay sees them at once; as the cutoff moves,
//! the delayed streams deliver every trade once, in order, and end with the
//! same bars as the real-time user. Nothing such a user is sent (a frame's
//! `seq`, an ETag) reveals anything fresher.
//!
//! A hand-written feed whose exchange timestamps are the wall clock, so the
//! cutoff (now − D) is meaningful.

use crate::chart::{trade_at, trade_of};
use crate::streaming::SseReader;
use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::jwt::{self, User};
use support::ws::{Strict, TEXT, masked};
use support::{FeedAddr, FeedWriter, Relay, get_with};
use tickrelay::clock::now_ns;

/// The delayed user's delay.
const DELAY_MS: u64 = 2_000;
const DELAY_NS: u64 = DELAY_MS * 1_000_000;
const SECOND: u64 = 1_000_000_000;

struct Market {
    relay: Relay,
    feed: FeedWriter,
    /// (time just before sending, sequence) of every message sent.
    sent: Vec<(u64, u64)>,
    /// (sequence, exchange time) of every trade of AAA.
    trades: Vec<(u64, u64)>,
}

impl Market {
    fn start() -> Market {
        let group = FeedAddr::unique();
        let relay = jwt::relay(
            group,
            &["--delay-resolution-ms", "100", "--stale-after-ms", "60000"],
        );
        let mut feed = FeedWriter::new(group, "CHDELAY");
        let before = now_ns();
        let seq = feed.list(&["AAA", "BBB"]);
        relay.wait_seq(seq);
        Market {
            relay,
            feed,
            sent: vec![(before, seq)],
            trades: Vec::new(),
        }
    }

    /// A trade of AAA made now (its exchange time the wall clock).
    fn trade(&mut self, price: i64) -> u64 {
        let ts = now_ns();
        let seq = self.feed.send(&[trade_at(0, ts, price, 100)]);
        self.sent.push((ts, seq));
        self.trades.push((seq, ts));
        self.relay.wait_seq(seq);
        seq
    }

    /// The newest sequence sent at least the delay before `t`.
    fn allowed(&self, t: u64) -> u64 {
        self.sent
            .iter()
            .filter(|(at, _)| at + DELAY_NS <= t)
            .map(|&(_, seq)| seq)
            .max()
            .unwrap_or(0)
    }

    /// AAA's trades made at least the delay before `t`.
    fn visible(&self, t: u64) -> Vec<u64> {
        let old = self.trades.iter().filter(|(_, ts)| ts + DELAY_NS <= t);
        old.map(|&(seq, _)| seq).collect()
    }
}

fn token(delay_ms: u64) -> String {
    let sub = format!("charter-{delay_ms}");
    User::named(&sub).delayed(delay_ms).token()
}

/// Checks what a delayed user got at `at`: no trade made less than the
/// delay before, no `seq` sent less than the delay before.
fn check_trades(m: &Market, what: &str, at: u64, body: &Value) {
    for t in body["trades"].as_array().unwrap() {
        let (seq, ts, _, _) = trade_of(t);
        assert!(
            ts + DELAY_NS <= at,
            "{what}: trade {seq} made {} ms before it was received",
            (at - ts) / 1_000_000
        );
    }
    let seq = body["seq"].as_u64().unwrap();
    assert!(seq <= m.allowed(at), "{what}: seq {seq} is fresher: {body}");
}

/// Checks a delayed bars answer or frame received at `at`: each bar holds
/// no more trades than were made in its second at least the delay before.
fn check_bars(m: &Market, what: &str, at: u64, body: &Value) {
    for b in body["bars"].as_array().unwrap() {
        let t = b["t"].as_u64().unwrap();
        let old = m
            .trades
            .iter()
            .filter(|(_, ts)| *ts >= t && *ts < t + SECOND && ts + DELAY_NS <= at)
            .count() as u64;
        assert!(
            b["n"].as_u64().unwrap() <= old,
            "{what}: bar {b} holds a trade made less than {DELAY_MS} ms before"
        );
    }
    let seq = body["seq"].as_u64().unwrap();
    assert!(seq <= m.allowed(at), "{what}: seq {seq} is fresher: {body}");
}

fn get(m: &Market, path: &str, tok: &str) -> (u64, support::http::Response) {
    let auth = format!("Bearer {tok}");
    let r = get_with(m.relay.addr, path, &[("Authorization", &auth)]);
    (now_ns(), r)
}

fn send(ws: &mut Strict, v: Value) {
    ws.send(&masked(TEXT, v.to_string().as_bytes()));
}

/// The next text frame as JSON, and when it was read.
fn next(ws: &mut Strict) -> (u64, Value) {
    loop {
        let f = ws.frame().expect("the relay closed");
        if f.op == 1 {
            let v: Value = serde_json::from_slice(&f.payload).unwrap();
            assert_ne!(v["type"], "error", "{v}");
            return (now_ns(), v);
        }
    }
}

/// What a delayed stream delivered: AAA's trades in order, its bars by
/// start.
#[derive(Default)]
struct Copy {
    trades: Vec<u64>,
    bars: BTreeMap<u64, Value>,
}

impl Copy {
    /// Takes a `trades` or `bars` frame received at `at`, checked.
    fn take(&mut self, m: &Market, what: &str, at: u64, v: &Value, kind: &str) {
        match kind {
            "trades" => {
                check_trades(m, what, at, v);
                assert_eq!(v["session"], "CHDELAY", "{what}: {v}");
                for t in v["trades"].as_array().unwrap() {
                    let seq = trade_of(t).0;
                    if let Some(last) = self.trades.last() {
                        assert!(seq > *last, "{what}: in order, once: {seq} after {last}");
                    }
                    self.trades.push(seq);
                }
            }
            "bars" => {
                check_bars(m, what, at, v);
                for b in v["bars"].as_array().unwrap() {
                    self.bars.insert(b["t"].as_u64().unwrap(), b.clone());
                }
            }
            _ => {}
        }
    }
}

/// Reads `ws` until `copy` holds `want` trades, checking every frame.
fn ws_until(m: &Market, ws: &mut Strict, copy: &mut Copy, want: &[u64], bars: &[Value]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while copy.trades != want || copy.bars.values().cloned().collect::<Vec<_>>() != bars {
        assert!(
            Instant::now() < deadline,
            "websocket: {:?} / {:?}, want {want:?} / {bars:?}",
            copy.trades,
            copy.bars
        );
        let (at, v) = next(ws);
        let kind = v["type"].as_str().unwrap_or("").to_owned();
        copy.take(m, "websocket", at, &v, &kind);
    }
}

/// The same over SSE.
fn sse_until(m: &Market, sse: &mut SseReader, copy: &mut Copy, want: &[u64], bars: &[Value]) {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while copy.trades != want || copy.bars.values().cloned().collect::<Vec<_>>() != bars {
        assert!(Instant::now() < deadline, "sse: {:?}", copy.trades);
        let ev = sse.next_event(&mut buf).expect("the stream ended");
        let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
        copy.take(m, "sse", now_ns(), &v, &ev.event);
    }
}

#[test]
fn a_delayed_user_gets_trades_and_bars_only_up_to_its_cutoff_on_every_door() {
    let mut m = Market::start();
    let (late, live) = (token(DELAY_MS), token(0));
    // Before anything trades: the delayed tape is empty, and its ETag.
    let (_, r) = get(&m, "/v1/trades/AAA", &late);
    assert_eq!(r.status, 200, "trades are served delayed: {}", r.text());
    let sent_first = now_ns();
    m.trade(10_0000);
    let (at, r) = get(&m, "/v1/trades/AAA", &late);
    let tag = r.header("etag").unwrap().to_owned();
    check_trades(&m, "rest", at, &r.json());
    m.trade(10_1000);
    let (_, r) = get(&m, "/v1/trades/AAA", &live);
    assert_eq!(r.json::<Value>()["trades"].as_array().unwrap().len(), 2);
    let auth = format!("Bearer {late}");
    let r = get_with(
        m.relay.addr,
        "/v1/trades/AAA",
        &[("Authorization", &auth), ("If-None-Match", &tag)],
    );
    // Unless this test was so slow that the first trade became visible.
    if now_ns() < sent_first + DELAY_NS {
        assert_eq!(
            r.status, 304,
            "a new trade the user may not see yet moved its ETag"
        );
    }
    let (at, r) = get(&m, "/v1/bars/AAA?interval=1s", &late);
    check_bars(&m, "rest bars", at, &r.json());

    // Streams of both users, opened while the trades are fresh.
    let mut ws = Strict::connect(m.relay.addr, &format!("?token={late}"));
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"trades","symbols":["AAA"],"history":10}),
    );
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"bars","interval":"1s","symbols":["AAA"],"history":10}),
    );
    let (_, mut sse) = SseReader::open(
        &m.relay.base,
        &format!("/v1/stream?trades=AAA&bars=AAA&interval=1s&history=10&token={late}"),
        None,
    );
    let mut rt = Strict::connect(m.relay.addr, &format!("?token={live}"));
    send(
        &mut rt,
        json!({"op":"subscribe","channel":"trades","symbols":["AAA"],"history":10}),
    );
    let (_, first) = loop {
        let f = next(&mut rt);
        if f.1["type"] == "trades" {
            break f;
        }
    };
    assert_eq!(
        first["trades"].as_array().unwrap().len(),
        2,
        "real time: at once"
    );
    assert_eq!(first["session"], "CHDELAY");

    // A third trade a little later; then every trade reaches the delayed
    // streams once the cutoff passes it, each in order, and the bars end
    // as the real-time user's.
    m.trade(9_9000);
    let all: Vec<u64> = m.trades.iter().map(|t| t.0).collect();
    let last_ts = m.trades.last().unwrap().1;
    support::poll_until(Duration::from_secs(10), "the cutoff passes", || {
        (now_ns() > last_ts + DELAY_NS + SECOND).then_some(())
    });
    let rest = |tok: &str| -> Vec<Value> {
        let (at, r) = get(&m, "/v1/bars/AAA?interval=1s", tok);
        let v: Value = r.json();
        if tok == late {
            check_bars(&m, "rest bars", at, &v);
        }
        v["bars"].as_array().unwrap().clone()
    };
    let bars = rest(&live);
    assert_eq!(rest(&late), bars, "the delayed chart caught up");
    let mut copy = Copy::default();
    ws_until(&m, &mut ws, &mut copy, &all, &bars);
    let mut copy = Copy::default();
    sse_until(&m, &mut sse, &mut copy, &all, &bars);
    let (at, r) = get(&m, "/v1/trades/AAA", &late);
    let v: Value = r.json();
    check_trades(&m, "rest", at, &v);
    assert_eq!(m.visible(at), all);
    let got: Vec<u64> = v["trades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| trade_of(t).0)
        .collect();
    assert_eq!(got, all, "REST caught up");
    // A resume by `since` from the first trade: the rest, nothing fresher.
    let mut again = Strict::connect(m.relay.addr, &format!("?token={late}"));
    let since = format!("CHDELAY:{}", all[0]);
    send(
        &mut again,
        json!({"op":"subscribe","channel":"trades","symbols":["AAA"],"since":since}),
    );
    m.trade(10_2000);
    let (at, resumed) = loop {
        let f = next(&mut again);
        if f.1["type"] == "trades" {
            break f;
        }
    };
    check_trades(&m, "resume", at, &resumed);
    let got: Vec<u64> = resumed["trades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| trade_of(t).0)
        .collect();
    assert_eq!(got, all[1..], "the trades after since, not the new one");
}
