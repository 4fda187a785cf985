//! The chart and the tape streamed (WebSocket `trades` / `bars` channels,
//! SSE `?trades=` / `?bars=`): with the real simulator feeding the relay
//! while clients watch, every trade arrives exactly once and in order from
//! the history of the first frame on, ending equal to `/v1/trades` and to
//! the simulator's recording; bars end equal to `/v1/bars`, each closed bar
//! seen once with `closed: true`, also when it closes without a trade; a
//! client that stops reading is closed (4008) and resumes with `since`,
//! losing no trade; a symbol outside the user's claims gets nothing.
//!
//! Real sockets on loopback: the `feed-simulator` binary or a hand-written
//! feed, relays in this process, the sync WebSocket client of
//! `support::ws` and the SSE reader of `streaming`.

use crate::chart::{
    MINUTE, SECOND, bar_of, bars, quote_at, read_recording, trade_at, trade_of, trades,
};
use crate::streaming::SseReader;
use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::jwt::{self, User};
use support::ws::{Strict, TEXT, masked};
use support::{FeedAddr, FeedWriter, Relay, scratch, spawn_simulator, wait_sim};
use tickrelay::table::chart::Bar;
use tickrelay::transport::chart::BarsBody;

type Tape = Vec<(u64, u64, i64, u64)>;

fn send(ws: &mut Strict, v: Value) {
    ws.send(&masked(TEXT, v.to_string().as_bytes()));
}

/// The next data frame as JSON (MessagePack decoded to the same shape,
/// prices as integers); `None` once the relay closed.
fn next(ws: &mut Strict) -> Option<Value> {
    loop {
        let f = ws.frame()?;
        match f.op {
            1 => return Some(serde_json::from_slice(&f.payload).unwrap()),
            2 => return Some(rmp_serde::from_slice(&f.payload).unwrap()),
            8 => return None,
            _ => continue,
        }
    }
}

/// The next frame of `kind`.
fn next_of(ws: &mut Strict, kind: &str) -> Value {
    loop {
        let f = next(ws).unwrap_or_else(|| panic!("closed before a `{kind}` frame"));
        assert_ne!(f["type"], "error", "{f}");
        if f["type"] == kind {
            return f;
        }
    }
}

/// A relay on a fresh group, and the simulator feeding it in the
/// background for `seconds`, recording to the returned file.
fn live_market(
    session: &str,
    seconds: u32,
    extra: &[&str],
) -> (Relay, std::process::Child, std::path::PathBuf) {
    market_at(session, 2000, seconds, extra)
}

/// [`live_market`] at `rate` messages a second.
fn market_at(
    session: &str,
    rate: u32,
    seconds: u32,
    extra: &[&str],
) -> (Relay, std::process::Child, std::path::PathBuf) {
    let group = FeedAddr::unique();
    let mut args = vec![
        "--feed-a".to_string(),
        group.arg(),
        "--stale-after-ms".into(),
        "60000".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let relay = Relay::in_process(&args);
    let file = scratch(&format!(
        "chartstream-{session}-{}.csv",
        support::unique_suffix()
    ));
    let sim = spawn_simulator(&[
        "--group",
        &group.arg(),
        "--symbols",
        "4",
        "--rate",
        &rate.to_string(),
        "--duration",
        &seconds.to_string(),
        "--session",
        session,
        "--record",
        file.to_str().unwrap(),
    ]);
    (relay, sim, file)
}

/// Waits until `symbol` has traded at least `n` times on the relay.
fn wait_trades(relay: &Relay, symbol: &str, n: usize) {
    support::poll_until(Duration::from_secs(20), "trades on the tape", || {
        // 503 until the directory is in.
        let r = relay.get(&format!("/v1/trades/{symbol}"));
        let v: Value = if r.status == 200 {
            r.json()
        } else {
            Value::Null
        };
        (v["trades"].as_array().map_or(0, Vec::len) >= n).then_some(())
    });
}

/// Reads trades frames of `ws` into `got` (per symbol, in arrival order)
/// until `done` says so, each symbol's frames continuing from its last.
fn read_trades(
    ws: &mut Strict,
    got: &mut BTreeMap<String, Tape>,
    mut done: impl FnMut(&BTreeMap<String, Tape>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(got) {
        assert!(Instant::now() < deadline, "the trades did not arrive");
        let f = next_of(ws, "trades");
        take_trades(&f, got);
    }
}

/// Adds a trades frame's trades to `got`, checking it continues each
/// symbol's tape in order and its `seq` covers them.
fn take_trades(f: &Value, got: &mut BTreeMap<String, Tape>) {
    let tape = got
        .entry(f["symbol"].as_str().unwrap().to_owned())
        .or_default();
    for t in f["trades"].as_array().unwrap() {
        let t = trade_of(t);
        if let Some(last) = tape.last() {
            assert!(t.0 > last.0, "in order, once: {t:?} after {last:?}");
        }
        tape.push(t);
    }
    if let Some(last) = tape.last() {
        assert!(
            f["seq"].as_u64().unwrap() >= last.0,
            "seq covers the frame: {f}"
        );
    }
}

/// Every symbol's recorded trades, as the relay shows them.
fn recorded_tapes(file: &std::path::Path) -> BTreeMap<String, Tape> {
    let (recorded, _, _) = read_recording(file);
    recorded
        .into_iter()
        .map(|(s, ts)| {
            (
                s,
                ts.iter().map(|t| (t.seq, t.ts, t.price, t.size)).collect(),
            )
        })
        .collect()
}

/// (a) WebSocket, JSON: history then live, every trade once, no gap at the
/// seam; the end equals `/v1/trades` and the recording.
#[test]
fn ws_trades_history_then_live_are_every_trade_once_equal_to_rest_and_the_recording() {
    let (relay, sim, file) = live_market("CSWS", 3, &[]);
    let symbols = ["AAPL", "MSFT", "AMZN", "NVDA"];
    for s in symbols {
        wait_trades(&relay, s, 5);
    }
    let mut ws = Strict::connect(relay.addr, "");
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"trades","symbols":symbols,"history":5}),
    );
    let sub = next_of(&mut ws, "subscribed");
    assert_eq!(sub["channel"], "trades");
    let mut got: BTreeMap<String, Tape> = BTreeMap::new();
    for _ in symbols {
        let first = next_of(&mut ws, "trades");
        assert_eq!(first["snapshot"], true, "{first}");
        assert_eq!(
            first["trades"].as_array().unwrap().len(),
            5,
            "history 5: {first}"
        );
        take_trades(&first, &mut got);
    }
    wait_sim(sim, Duration::from_secs(30));
    let want = recorded_tapes(&file);
    relay.wait_seq(read_recording(&file).2);
    read_trades(&mut ws, &mut got, |got| {
        symbols.iter().all(|s| {
            let (mine, all) = (&got[*s], &want[*s]);
            mine.last() == all.last()
        })
    });
    for s in symbols {
        let all = &want[s];
        let mine = &got[s];
        let from = all
            .iter()
            .position(|t| *t == mine[0])
            .expect("history is recorded trades");
        assert_eq!(
            mine,
            &all[from..].to_vec(),
            "{s}: history and live, once each, no gap"
        );
        assert_eq!(
            &trades(&relay, &format!("/v1/trades/{s}?limit={}", mine.len())),
            mine,
            "{s}: the stream ends equal to REST"
        );
    }
}

/// (b) The same over SSE: `trades` events, history then live.
#[test]
fn sse_trades_history_then_live_are_every_trade_once() {
    let (relay, sim, file) = live_market("CSSSE", 3, &[]);
    wait_trades(&relay, "MSFT", 5);
    let (code, mut sse) = SseReader::open(&relay.base, "/v1/stream?trades=MSFT&history=3", None);
    assert_eq!(code, 200);
    let mut buf = Vec::new();
    let mut got: BTreeMap<String, Tape> = BTreeMap::new();
    let first = sse.event_of(&mut buf, "trades");
    let first: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(first["snapshot"], true);
    assert_eq!(first["trades"].as_array().unwrap().len(), 3);
    take_trades(&first, &mut got);
    wait_sim(sim, Duration::from_secs(30));
    let want = &recorded_tapes(&file)["MSFT"];
    while got["MSFT"].last() != want.last() {
        let ev = sse.event_of(&mut buf, "trades");
        take_trades(&serde_json::from_str(&ev.data).unwrap(), &mut got);
    }
    let mine = &got["MSFT"];
    let from = want.iter().position(|t| *t == mine[0]).unwrap();
    assert_eq!(mine, &want[from..].to_vec());
}

/// Bars of one frame into `copy` (by start), counting closed ones.
fn take_bars(f: &Value, copy: &mut BTreeMap<u64, Value>, closed: &mut BTreeMap<u64, u32>) {
    for b in f["bars"].as_array().unwrap() {
        let t = b["t"].as_u64().unwrap();
        if let Some(old) = copy.get(&t) {
            assert_ne!(old["closed"], true, "a closed bar is sent once: {b}");
        }
        if b["closed"] == true {
            *closed.entry(t).or_default() += 1;
        }
        copy.insert(t, b.clone());
    }
}

/// (c) Bars live on WebSocket, JSON and MessagePack: the client's copy
/// ends equal to `/v1/bars`, each closed bar seen once with `closed: true`.
#[test]
fn ws_bars_live_end_equal_to_rest_each_closed_bar_once() {
    let (relay, sim, file) = live_market("CSBARS", 4, &[]);
    wait_trades(&relay, "AAPL", 3);
    let mut json_ws = Strict::connect(relay.addr, "");
    let mut pack_ws = Strict::connect_with(relay.addr, "", &[], &["tickrelay.msgpack"]);
    for ws in [&mut json_ws, &mut pack_ws] {
        send(
            ws,
            json!({"op":"subscribe","channel":"bars","interval":"1s","symbols":["AAPL"],"history":2}),
        );
        assert_eq!(next_of(ws, "subscribed")["channel"], "bars");
    }
    wait_sim(sim, Duration::from_secs(30));
    relay.wait_seq(read_recording(&file).2);
    // The whole feed is in: REST holds the final bars. A client's copy
    // starts at its history (a slow start may leave older bars out of
    // it) and from there on must equal REST, bar for bar.
    let path = "/v1/bars/AAPL?interval=1s";
    let rest = bars(&relay, path);
    let from = |first: Option<&u64>| {
        let first = *first.expect("the history frame carried bars");
        rest.iter()
            .filter(|b| b.t >= first)
            .cloned()
            .collect::<Vec<_>>()
    };
    // JSON: read until the copy equals REST.
    let (mut copy, mut closed) = (BTreeMap::new(), BTreeMap::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mine: Vec<_> = copy.values().map(bar_of).collect();
        if !copy.is_empty() && mine == from(copy.keys().next()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bars {mine:?} never equalled {rest:?}"
        );
        let f = next_of(&mut json_ws, "bars");
        assert_eq!(f["interval"], "1s");
        take_bars(&f, &mut copy, &mut closed);
    }
    assert!(closed.values().all(|n| *n == 1), "{closed:?}");
    let first = *copy.keys().next().unwrap();
    let closed_in_rest = rest.iter().filter(|b| b.closed && b.t >= first).count();
    assert!(
        closed.len() >= closed_in_rest,
        "every closed bar was seen closed"
    );
    // MessagePack: integer prices, the same bars as REST.
    let want: BarsBody = relay.get(path).json();
    let mut copy: BTreeMap<u64, Bar> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(first) = copy.keys().next() {
            let mine: Vec<Bar> = copy.values().copied().collect();
            let theirs: Vec<Bar> = want
                .bars
                .iter()
                .filter(|b| b.t >= *first)
                .copied()
                .collect();
            if mine == theirs {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "MessagePack bars {copy:?} never equalled REST {:?}",
            want.bars
        );
        let f = pack_ws.frame().expect("open");
        if f.op != 2 {
            continue;
        }
        #[derive(serde::Deserialize)]
        struct Frame {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            bars: Vec<Bar>,
        }
        let f: Frame = rmp_serde::from_slice(&f.payload).unwrap();
        if f.kind == "bars" {
            for b in f.bars {
                copy.insert(b.t, b);
            }
        }
    }
}

/// A bar closes when feed time passes its end with no other trade of its
/// symbol: the subscriber is told, once.
#[test]
fn a_bar_closing_without_a_trade_reaches_the_subscriber() {
    let group = FeedAddr::unique();
    let relay = Relay::in_process_feed(group, &["--stale-after-ms", "60000"]);
    let mut feed = FeedWriter::new(group, "CSCLOSE");
    feed.list(&["AAA", "BBB"]);
    let t0 = 1_800_000_000 * SECOND;
    relay.wait_seq(feed.send(&[trade_at(0, t0 + SECOND / 5, 10_0000, 100)]));
    let mut ws = Strict::connect(relay.addr, "");
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"bars","interval":"1s","symbols":["AAA"],"history":1}),
    );
    let first = next_of(&mut ws, "bars");
    assert_eq!(first["bars"][0]["closed"], false, "{first}");
    // BBB moves feed time past AAA's second; AAA never trades again.
    relay.wait_seq(feed.send(&[quote_at(1, t0 + SECOND)]));
    let closing = next_of(&mut ws, "bars");
    assert_eq!(closing["bars"].as_array().unwrap().len(), 1, "{closing}");
    assert_eq!(closing["bars"][0]["closed"], true, "{closing}");
    assert_eq!(closing["bars"][0]["n"], 1);
    // A minute on by the feed's clock: nothing more of that second.
    relay.wait_seq(feed.send(&[quote_at(1, t0 + MINUTE)]));
    send(&mut ws, json!({"op":"ping"}));
    assert_eq!(
        next(&mut ws).unwrap()["type"],
        "pong",
        "no second close of the same bar"
    );
}

/// (d) A client that stops reading is closed with 4008; it resumes with
/// `since` and, with what it had read, has every trade once.
#[test]
fn a_client_that_stops_reading_gets_4008_and_resumes_with_since_losing_no_trade() {
    let (relay, sim, file) = market_at(
        "CSSLOW",
        60_000,
        5,
        &["--write-timeout-ms", "1000", "--trade-history", "100000"],
    );
    wait_trades(&relay, "AAPL", 1);
    let symbols = ["AAPL", "MSFT", "AMZN", "NVDA"];
    let mut ws = Strict::connect(relay.addr, "");
    // Every quote too: bytes enough to fill the socket nobody reads.
    send(&mut ws, json!({"op":"subscribe","symbols":["*"]}));
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"trades","symbols":symbols}),
    );
    // Not reading: the relay closes it once its socket stayed full for the
    // write timeout. Then everything it had sent is read, to its Close.
    relay.wait_metric("tickrelay_slow_client_disconnects_total", |n| n >= 1.0);
    let (mut got, mut from): (BTreeMap<String, Tape>, BTreeMap<String, u64>) = Default::default();
    let code = loop {
        match ws.frame() {
            Some(f) if f.op == 8 => break f.close_code().unwrap(),
            Some(f) if f.op == 1 => {
                let v: Value = serde_json::from_slice(&f.payload).unwrap();
                if v["type"] == "trades" {
                    if v["snapshot"] == true {
                        let s = v["symbol"].as_str().unwrap().to_owned();
                        from.insert(s, v["seq"].as_u64().unwrap());
                    }
                    take_trades(&v, &mut got);
                }
            }
            Some(_) => {}
            None => panic!("EOF before the Close"),
        }
    };
    assert_eq!(code, 4008, "slow consumer");
    assert_eq!(
        from.len(),
        4,
        "each symbol's first frame came before the stall"
    );
    wait_sim(sim, Duration::from_secs(60));
    let want = recorded_tapes(&file);
    relay.wait_seq(read_recording(&file).2);
    // Resume each symbol after the last trade it got.
    let mut ws = Strict::connect(relay.addr, "");
    for s in symbols {
        let since = got.get(s).and_then(|t| t.last()).map_or(from[s], |t| t.0);
        send(
            &mut ws,
            json!({"op":"subscribe","channel":"trades","symbols":[s],"since":since}),
        );
    }
    read_trades(&mut ws, &mut got, |got| {
        symbols
            .iter()
            .all(|s| got.get(*s).and_then(|t| t.last()) == want[*s].last())
    });
    for s in symbols {
        let after: Tape = want[s].iter().filter(|t| t.0 > from[s]).copied().collect();
        assert_eq!(got[s], after, "{s}: every trade once, across the close");
    }
}

/// (e) Trades and bars of a symbol outside the user's claims: named in
/// `subscribed.denied`, nothing sent; without the channel, an error frame.
#[test]
fn a_symbol_outside_the_users_claims_is_denied() {
    let group = FeedAddr::unique();
    let relay = jwt::relay(group, &[]);
    let mut feed = FeedWriter::new(group, "CSENT");
    feed.list(&["AAA", "BBB"]);
    let t0 = 1_800_000_000 * SECOND;
    relay.wait_seq(feed.send(&[trade_at(0, t0, 10_0000, 1), trade_at(1, t0, 20_0000, 1)]));
    let token = |channels: &[&str]| {
        User::named("taper")
            .symbols(&["B*"])
            .channels(channels)
            .token()
    };
    let mut ws = Strict::connect(
        relay.addr,
        &format!("?token={}", token(&["trades", "bars"])),
    );
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"trades","symbols":["AAA","BBB"],"history":5}),
    );
    let sub = next_of(&mut ws, "subscribed");
    assert_eq!(sub["denied"], json!(["AAA"]), "{sub}");
    assert_eq!(sub["symbols"], json!(["BBB"]));
    let first = next_of(&mut ws, "trades");
    assert_eq!(first["symbol"], "BBB");
    relay.wait_seq(feed.send(&[
        trade_at(0, t0 + 1, 10_0001, 1),
        trade_at(1, t0 + 1, 20_0001, 1),
    ]));
    let live = next_of(&mut ws, "trades");
    assert_eq!(live["symbol"], "BBB", "nothing of AAA: {live}");

    let mut ws = Strict::connect(relay.addr, &format!("?token={}", token(&["quotes"])));
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"bars","symbols":["BBB"]}),
    );
    let refused = next(&mut ws).unwrap();
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "not_entitled");
    let (code, _) = SseReader::open(
        &relay.base,
        &format!("/v1/stream?trades=AAA&token={}", token(&["trades"])),
        None,
    );
    assert_eq!(code, 403, "SSE: refused before the stream");
}

/// (d) over SSE: a trades subscriber that stops reading gets the final
/// `event: error` (close code 4008) behind what it had not read; it
/// resumes each symbol with `since` = `SESSION:SEQ` (the session its frames
/// carry) and, with what it had read, has every trade once.
#[test]
fn an_sse_trades_subscriber_that_stops_reading_gets_4008_and_resumes_with_since() {
    let (relay, sim, file) = market_at(
        "CSSSLOW",
        60_000,
        5,
        &["--write-timeout-ms", "1000", "--trade-history", "100000"],
    );
    wait_trades(&relay, "AAPL", 1);
    let symbols = ["AAPL", "MSFT", "AMZN", "NVDA"];
    // Every quote too: bytes enough to fill the socket nobody reads.
    let (code, mut sse) = SseReader::open(
        &relay.base,
        &format!("/v1/stream?symbols=*&trades={}", symbols.join(",")),
        None,
    );
    assert_eq!(code, 200);
    relay.wait_metric("tickrelay_slow_client_disconnects_total", |n| n >= 1.0);
    // Everything it had been sent, to the final error.
    let mut buf = Vec::new();
    let (mut got, mut from): (BTreeMap<String, Tape>, BTreeMap<String, u64>) = Default::default();
    let mut session = None;
    let error = loop {
        let ev = sse
            .next_event(&mut buf)
            .expect("the stream ended without an error");
        match ev.event.as_str() {
            "error" => break serde_json::from_str::<Value>(&ev.data).unwrap(),
            "trades" => {
                let v: Value = serde_json::from_str(&ev.data).unwrap();
                assert_eq!(v["session"], "CSSSLOW", "{v}");
                session = v["session"].as_str().map(str::to_owned);
                if v["snapshot"] == true {
                    let s = v["symbol"].as_str().unwrap().to_owned();
                    from.insert(s, v["seq"].as_u64().unwrap());
                }
                take_trades(&v, &mut got);
            }
            _ => {}
        }
    };
    assert_eq!(error["code"], "slow_consumer", "{error}");
    assert_eq!(error["close_code"], 4008, "{error}");
    assert_eq!(from.len(), 4, "each symbol's first frame came first");
    let session = session.expect("trades frames carry the session");
    wait_sim(sim, Duration::from_secs(60));
    let want = recorded_tapes(&file);
    relay.wait_seq(read_recording(&file).2);
    for s in symbols {
        let last = got.get(s).and_then(|t| t.last()).map_or(from[s], |t| t.0);
        let path = format!("/v1/stream?trades={s}&since={session}:{last}");
        let (code, mut sse) = SseReader::open(&relay.base, &path, None);
        assert_eq!(code, 200);
        let mut buf = Vec::new();
        while got.get(s).and_then(|t| t.last()) != want[s].last() {
            let ev = sse.event_of(&mut buf, "trades");
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            assert_ne!(v["gap"], true, "{s}: the tape kept every trade: {v}");
            take_trades(&v, &mut got);
        }
        let after: Tape = want[s].iter().filter(|t| t.0 > from[s]).copied().collect();
        assert_eq!(got[s], after, "{s}: every trade once, across the close");
    }
}
