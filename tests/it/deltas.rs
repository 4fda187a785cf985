//! Deltas against the real relay: a WebSocket subscribed with
//! `"delta": true` (and an SSE stream with `delta=1`) gets whole quotes in
//! its snapshot, then only `symbol`, `seq` and the fields that changed;
//! merging them gives exactly the relay's snapshot. Without the flag,
//! quotes stay whole.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use serde_json::{Map, Value};
use support::ws::{Strict, TEXT, masked};
use support::{FeedAddr, FeedWriter, Relay, get};

/// Merges a quote (whole or delta) into the client's copies.
fn merge(copies: &mut Map<String, Value>, q: &Value) {
    let symbol = q["symbol"].as_str().unwrap().to_owned();
    let copy = copies
        .entry(symbol)
        .or_insert_with(|| Value::Object(Map::new()));
    for (k, v) in q.as_object().unwrap() {
        copy[k] = v.clone();
    }
}

/// The relay's snapshot of `symbols`, by symbol.
fn snapshot(relay: &Relay, symbols: &str) -> Map<String, Value> {
    let body: Value = get(relay.addr, &format!("/v1/snapshot?symbols={symbols}")).json();
    let mut out = Map::new();
    for q in body["quotes"].as_array().unwrap() {
        out.insert(q["symbol"].as_str().unwrap().to_owned(), q.clone());
    }
    out
}

/// Waits until the relay has applied the feed up to `seq`.
fn applied(relay: &Relay, symbols: &str, seq: u64) {
    support::poll_until(support::DEADLINE, "the feed applied", || {
        let r = get(relay.addr, &format!("/v1/snapshot?symbols={symbols}"));
        (r.status == 200 && r.json::<Value>()["seq"].as_u64() >= Some(seq)).then_some(())
    });
}

/// Next WebSocket text frame with quotes (past pings, `subscribed`, feed).
fn ws_quotes(ws: &mut Strict) -> Value {
    loop {
        let f = ws.frame().expect("a frame");
        if f.op == 1 {
            let v: Value = serde_json::from_slice(&f.payload).unwrap();
            if v.get("quotes").is_some() {
                return v;
            }
        }
    }
}

#[test]
fn websocket_deltas_carry_only_what_changed_and_merge_to_the_snapshot() {
    let group = FeedAddr::unique();
    let relay = Relay::in_process_feed(group, &[]);
    let mut feed = FeedWriter::new(group, "DELTAS");
    feed.list(&["AAPL", "MSFT"]);
    feed.quote(0, 1_890_000, 1_891_000, (100, 200));
    feed.quote(1, 4_100_000, 4_101_000, (300, 400));
    let first = feed.trade(0, 1_890_500, 50, 50);
    applied(&relay, "AAPL,MSFT", first);
    let mut delta = Strict::connect(relay.addr, "");
    let mut whole = Strict::connect(relay.addr, "");
    let sub = r#"{"op":"subscribe","symbols":["AAPL","MSFT"],"delta":true}"#;
    delta.send(&masked(TEXT, sub.as_bytes()));
    let plain = r#"{"op":"subscribe","symbols":["AAPL","MSFT"]}"#;
    whole.send(&masked(TEXT, plain.as_bytes()));
    let mut copies = Map::new();
    // The snapshot is whole, quotes ticked or not.
    let snap = ws_quotes(&mut delta);
    assert_eq!(snap["type"], "snapshot");
    for q in snap["quotes"].as_array().unwrap() {
        assert!(
            q.get("prev_close").is_some() && q.get("volume").is_some(),
            "{q}"
        );
        merge(&mut copies, q);
    }
    ws_quotes(&mut whole);
    // Only the bid moves; then only the ask size; then a trade.
    let s1 = feed.quote(0, 1_890_100, 1_891_000, (100, 200));
    let t = ws_quotes(&mut delta);
    let q = &t["quotes"][0];
    let mut keys: Vec<&str> = q.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["bid", "seq", "symbol", "ts"], "{q}");
    assert_eq!(
        (q["symbol"].as_str(), q["seq"].as_u64()),
        (Some("AAPL"), Some(s1))
    );
    merge(&mut copies, q);
    let w = ws_quotes(&mut whole);
    assert!(
        w["quotes"][0].get("ask").is_some(),
        "without delta, whole: {w}"
    );
    feed.quote(1, 4_100_000, 4_101_000, (300, 450));
    let t = ws_quotes(&mut delta);
    let q = &t["quotes"][0];
    assert!(
        q.get("ask_size").is_some() && q.get("bid").is_none() && q.get("ask").is_none(),
        "{q}"
    );
    merge(&mut copies, q);
    let last = feed.trade(1, 4_100_500, 10, 10);
    let t = ws_quotes(&mut delta);
    let q = &t["quotes"][0];
    assert!(
        q.get("last").is_some() && q.get("volume").is_some() && q.get("bid").is_none(),
        "{q}"
    );
    merge(&mut copies, q);
    assert_eq!(t["seq"].as_u64(), Some(last));
    // The merged copies are the relay's quotes.
    assert_eq!(copies, snapshot(&relay, "AAPL,MSFT"));
}

#[test]
fn sse_deltas_merge_to_the_snapshot() {
    let group = FeedAddr::unique();
    let relay = Relay::in_process_feed(group, &[]);
    let mut feed = FeedWriter::new(group, "DELTAS");
    feed.list(&["AAPL"]);
    let first = feed.quote(0, 1_890_000, 1_891_000, (100, 200));
    applied(&relay, "AAPL", first);
    let mut tcp = TcpStream::connect(relay.addr).unwrap();
    tcp.set_read_timeout(Some(support::DEADLINE)).unwrap();
    write!(
        tcp,
        "GET /v1/stream?symbols=AAPL&delta=1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(tcp);
    let mut copies = Map::new();
    let mut events = 0;
    let mut line = String::new();
    let mut sent = false;
    let mut last = 0;
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while events < 4 {
        // Comments (keep-alives) arrive on their own: bound the wait by time.
        assert!(
            std::time::Instant::now() < deadline,
            "no frame promised seq {last} within {:?} ({events} events)",
            support::DEADLINE
        );
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended");
        let Some(data) = line.trim_end().strip_prefix("data: ") else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap();
        let Some(quotes) = v["quotes"].as_array() else {
            continue;
        };
        for q in quotes {
            if events > 0 {
                assert!(q.get("prev_close").is_none(), "a delta is not whole: {q}");
            }
            merge(&mut copies, q);
        }
        events += 1;
        if !sent {
            // After the snapshot: three changes, each of one field or two.
            feed.quote(0, 1_890_100, 1_891_000, (100, 200));
            feed.quote(0, 1_890_100, 1_891_000, (150, 200));
            last = feed.trade(0, 1_890_050, 7, 7);
            sent = true;
        }
        // Done when a frame promises the last change, or carries it: a
        // frame drained before the fan-out published its batch carries the
        // newest quote under an older promise, and the change's own mark
        // then finds nothing newer to send.
        let merged_seq = copies.get("AAPL").and_then(|q| q["seq"].as_u64());
        if sent && (v["seq"].as_u64() >= Some(last) || merged_seq >= Some(last)) {
            break;
        }
    }
    assert_eq!(copies, snapshot(&relay, "AAPL"));
}
