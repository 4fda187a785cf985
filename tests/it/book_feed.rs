//! Depth of book end to end from the feed simulator's books (`--book-depth`,
//! default 10): a WebSocket client on `tickrelay.msgpack` applies every
//! `book` frame (its `prev` and checksum checked) and ends with the relay's
//! `/v1/book` and the simulator's `--final-state`; with 5 % loss on both
//! lines, a relay repairing from retransmission and a late joiner rebuilding
//! from the recovery loop end with every book exact.
//!
//! The hand-built cases (an insert at the top, a delete of the best level, a
//! level beyond `max_book_levels` counted, a `'B'` older than the live book
//! ignored and a newer one applied) are the table's unit tests
//! (`table::book::tests`); tests/it/book.rs has the hand-built feed over
//! every transport.

use crate::book::{Copy, rows_raw};
use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Levels a side every client here asks for.
const DEPTH: usize = 10;

/// The simulator's final state: each symbol's `{"bids","asks"}`, whole.
fn final_books(path: &std::path::Path) -> BTreeMap<String, Value> {
    let summary: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    summary["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let book = json!({"bids": q["bids"], "asks": q["asks"]});
            (q["symbol"].as_str().unwrap().to_owned(), book)
        })
        .collect()
}

/// `book` cut to `depth` levels a side, as rows.
fn cut(book: &Value, depth: usize) -> [Vec<crate::book::Row>; 2] {
    ["bids", "asks"].map(|side| {
        let mut r = rows_raw(book, side);
        r.truncate(depth);
        r
    })
}

/// Checks every symbol's whole book on `relay` (`/v1/book`, depth 50)
/// against the simulator's final state. The relay has applied the last
/// sequence already (support::assert_equals_final_state waited for it).
fn assert_books_equal_final(name: &str, relay: &support::Relay, want: &BTreeMap<String, Value>) {
    let mut with_levels = 0;
    for (sym, w) in want {
        let got: Value = relay.get(&format!("/v1/book/{sym}?depth=50")).json();
        assert_eq!(cut(&got, 50), cut(w, 50), "{name}: {sym}'s book");
        with_levels += usize::from(!w["bids"].as_array().unwrap().is_empty());
    }
    assert!(
        with_levels * 2 > want.len(),
        "{name}: only {with_levels} of {} books have levels",
        want.len()
    );
}

/// A MessagePack `book` frame with JSON's decimal prices (the copy's input).
fn decimal_prices(mut f: Value) -> Value {
    for side in ["bids", "asks"] {
        for l in f[side].as_array_mut().into_iter().flatten() {
            let p = l[0].as_i64().expect("MessagePack prices are integers");
            l[0] = json!(format!("{}.{:04}", p / 10_000, p % 10_000));
        }
    }
    f
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next binary `book` frame within `within`, decoded; None on silence.
async fn next_book(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.ok()??.ok()?;
        match msg {
            WsMsg::Binary(b) => {
                let v: Value = rmp_serde::from_slice(&b).expect("a MessagePack map");
                if v["type"] == "book" {
                    return Some(v);
                }
            }
            WsMsg::Text(t) => panic!("a text frame on tickrelay.msgpack: {t}"),
            WsMsg::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_book_frames_applied_end_equal_to_the_rest_book_and_the_final_state() {
    let group = support::FeedAddr::unique();
    let final_path = support::scratch("book-msgpack.json");
    let relay = support::Relay::in_process(&["--feed-a".to_string(), group.to_string()]);
    let sim = support::spawn_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "30",
        "--rate",
        "1500",
        "--duration",
        "6",
        "--session",
        "BOOKMP",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    let symbols: Vec<String> =
        support::poll_until(Duration::from_secs(10), "the directory", || {
            let (status, v) = support::get_json(&relay.base, "/v1/symbols");
            let list: Vec<String> = v["symbols"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["symbol"].as_str().map(str::to_owned))
                .collect();
            (status == 200 && list.len() == 30).then_some(list)
        });
    let watched: Vec<&str> = symbols.iter().take(8).map(String::as_str).collect();

    let mut req = format!("{}/v1/ws", relay.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "tickrelay.msgpack".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let op = json!({"op":"subscribe","channel":"book","symbols":watched,"depth":DEPTH});
    ws.send(WsMsg::text(op.to_string())).await.unwrap();

    // Every frame applied while the simulator runs (Copy::apply checks
    // `prev` and the checksum of each).
    let mut copies: BTreeMap<String, Copy> = watched
        .iter()
        .map(|s| (s.to_string(), Copy::new(DEPTH)))
        .collect();
    let mut sim = Some(sim);
    let mut diffs = 0;
    loop {
        if let Some(f) = next_book(&mut ws, Duration::from_millis(500)).await {
            diffs += usize::from(f["snapshot"] == false);
            let sym = f["symbol"].as_str().unwrap().to_owned();
            copies
                .get_mut(&sym)
                .expect("a subscribed symbol")
                .apply(&decimal_prices(f));
            continue;
        }
        // Quiet: the run is over, or the books asked did not move.
        if let Some(mut s) = sim.take() {
            if s.try_wait().unwrap().is_none() {
                sim = Some(s);
                continue;
            }
            support::assert_equals_final_state(&relay, &final_path, false);
            continue; // the last frames
        }
        break;
    }
    assert!(diffs > 100, "only {diffs} diff frames in six seconds");

    // Equal to the relay's books and to the simulator's, cut to the depth.
    let want = final_books(&final_path);
    for (sym, c) in &copies {
        let rest: Value = relay.get(&format!("/v1/book/{sym}?depth={DEPTH}")).json();
        assert!(
            c.equals(&rest),
            "{sym}: the copy {c:?} is not /v1/book {rest}"
        );
        assert_eq!(
            [c.bids.clone(), c.asks.clone()],
            cut(&want[sym], DEPTH),
            "{sym}: the copy is not the final state's book"
        );
    }
    assert_books_equal_final("relay", &relay, &want);
}

#[test]
fn five_percent_loss_on_both_lines_ends_with_every_book_exact_and_a_late_joiner_too() {
    let (a, b) = (support::FeedAddr::unique(), support::FeedAddr::unique());
    let recovery = support::FeedAddr::unique();
    let server = format!("127.0.0.1:{}", support::free_udp_port());
    let final_path = support::scratch("book-loss.json");
    let lines: Vec<String> = vec![
        "--feed-a".into(),
        a.to_string(),
        "--feed-b".into(),
        b.to_string(),
    ];
    let stale: Vec<String> = vec!["--stale-after-ms".into(), "60000".into()];
    let repairing = support::Relay::in_process(
        &[
            &lines[..],
            &["--retransmit".to_string(), server.clone()][..],
            &stale[..],
        ]
        .concat(),
    );
    let sim = support::spawn_simulator(&[
        "--group",
        &a.to_string(),
        "--line-b",
        &b.to_string(),
        "--retransmit",
        &server,
        "--recovery",
        &recovery.to_string(),
        "--loss",
        "0.05",
        "--symbols",
        "100",
        "--rate",
        "2000",
        "--duration",
        "10",
        "--session",
        "BOOKLOSS",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    // The late joiner starts a few seconds into the session: its books
    // come from the loop's 'B's, the levels after them from the lines.
    support::poll_until(
        Duration::from_secs(30),
        "4,000 messages of the session",
        || {
            let seq = repairing.metrics().sum("tickrelay_feed_sequence");
            (seq >= 4_000.0).then_some(())
        },
    );
    let late = support::Relay::in_process(
        &[
            &lines[..],
            &["--recovery".to_string(), recovery.to_string()][..],
            &stale[..],
        ]
        .concat(),
    );
    support::wait_sim(sim, Duration::from_secs(40));
    let want = final_books(&final_path);
    support::assert_equals_final_state(&repairing, &final_path, false);
    assert_books_equal_final("repairing relay", &repairing, &want);
    support::assert_equals_final_state(&late, &final_path, true);
    assert_books_equal_final("late joiner", &late, &want);

    let m = repairing.metrics();
    assert!(
        m.get("tickrelay_feed_gaps_opened_total") > 0.0,
        "5 % on both lines opens gaps"
    );
    assert!(m.get("tickrelay_feed_gaps_repaired_total") > 0.0);
    assert!(m.get("tickrelay_book_messages_total") > 1_000.0);
    let l = late.metrics();
    // Its late join, then each loss on both lines rebuilt from the loop.
    assert!(l.get("tickrelay_feed_recoveries_total") >= 1.0);
    assert!(l.get("tickrelay_feed_packets_received_total{line=\"recovery\"}") > 0.0);
}
