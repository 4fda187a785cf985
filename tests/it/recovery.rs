//! Recovery end to end: a relay that joins mid-session, or loses messages
//! that gap repair cannot fill, rebuilds the exact state of every symbol —
//! from the producer's recovery loop, or from its retransmission history —
//! and says it is not ready until it has.
//!
//! Real sockets on loopback: the `feed-simulator` binary, one or two relays
//! (in this process, [`support::Relay::in_process`]), plain HTTP, SSE and
//! WebSocket clients.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Watches a late joiner until it first says ready, comparing it then with
/// a witness relay that has run since the session began: every symbol the
/// witness last changed at or before the late joiner's promised sequence
/// must be identical on both. Returns how long the late joiner took.
fn watch_until_ready(
    late: &support::Relay,
    witness: &support::Relay,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let mut saw_recovering = false;
    loop {
        let (status, body) = support::get_json(&late.base, "/readyz");
        if status == 503 && body["status"] == "recovering" {
            saw_recovering = true;
        }
        if status == 200 {
            let took = started.elapsed();
            let (_, mine) = support::get_json(&late.base, "/v1/snapshot");
            let promised = mine["seq"].as_u64().unwrap();
            // The witness may be a little behind: wait until it has applied
            // at least as much as the late joiner promises.
            let theirs = loop {
                let (_, theirs) = support::get_json(&witness.base, "/v1/snapshot");
                if theirs["seq"].as_u64() >= Some(promised) {
                    break theirs;
                }
                assert!(started.elapsed() < within, "the witness fell behind");
                std::thread::sleep(Duration::from_millis(5));
            };
            let mine = support::by_symbol(&mine);
            let mut compared = 0;
            for (sym, w) in support::by_symbol(&theirs) {
                if w["seq"].as_u64().unwrap() > promised {
                    continue;
                }
                let m = mine
                    .get(&sym)
                    .unwrap_or_else(|| panic!("ready, yet {sym} is not listed"));
                // Either unchanged since the promise (identical), or changed
                // after it on the late joiner (newer than the witness had).
                let never_ticked = w["bid"].is_null() && w["last"].is_null();
                if never_ticked {
                    // Only a directory entry's sequence, which the loop
                    // does not date (see support::assert_equals_final_state).
                    assert_eq!(m["bid"], Value::Null, "{sym}");
                    assert_eq!(m["last"], Value::Null, "{sym}");
                } else if m["seq"].as_u64().unwrap() <= promised {
                    assert_eq!(
                        m,
                        &w,
                        "ready at {promised}, yet {sym} differs from the witness (witness lost {}, late lost {})",
                        witness.metrics().get("tickrelay_feed_lost_messages_total"),
                        late.metrics()
                            .get("tickrelay_feed_backfill_lost_messages_total"),
                    );
                    compared += 1;
                }
            }
            assert!(compared > 100, "only {compared} symbols comparable");
            assert!(
                saw_recovering,
                "the late joiner said recovering before it was ready"
            );
            return took;
        }
        assert!(
            started.elapsed() < within,
            "late joiner not ready in {within:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(15));
    }
}

fn simulator(args: &[&str]) -> Child {
    support::spawn_simulator(args)
}

/// The relay as `tickrelay serve ARGS` runs, in this process; never stale
/// while a test inspects the end of a run.
fn relay(args: &[&str]) -> support::Relay {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--stale-after-ms".into(), "60000".into()]);
    support::Relay::in_process(&all)
}

/// How far into the session the late joiner starts, in feed sequence: 15 s
/// of the simulator's 2,000 messages a second, as a relay restarted during
/// the day would.
const LATE_AT: u64 = 15 * 2_000;

/// Waits until `witness`, which has run since the session began, has
/// applied [`LATE_AT`]: the history a late joiner has to rebuild.
fn wait_history(witness: &support::Relay) {
    support::poll_until(
        Duration::from_secs(60),
        &format!("the session to reach sequence {LATE_AT}"),
        || {
            let seq = witness.metrics().sum("tickrelay_feed_sequence");
            (seq as u64 >= LATE_AT).then_some(())
        },
    );
}

#[test]
fn a_late_joiner_rebuilds_the_whole_history_from_retransmission() {
    let group = support::FeedAddr::unique();
    let server = format!("127.0.0.1:{}", support::free_udp_port());
    let final_path = support::scratch("late-history.json");
    let witness = relay(&["--feed-a", &group.to_string()]);
    let sim = simulator(&[
        "--group",
        &group.to_string(),
        "--retransmit",
        &server,
        "--symbols",
        "500",
        "--rate",
        "2000",
        "--zipf",
        "1.2",
        "--duration",
        "20",
        "--session",
        "LATEHIST",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    wait_history(&witness);
    let late = relay(&["--feed-a", &group.to_string(), "--retransmit", &server]);
    let took = watch_until_ready(&late, &witness, Duration::from_secs(20));
    eprintln!("late joiner ready from history in {took:?}");
    let t = Instant::now();
    support::wait_sim(sim, Duration::from_secs(30));
    eprintln!("simulator done after {:?}", t.elapsed());
    support::assert_equals_final_state(&late, &final_path, true);
    eprintln!("final state after {:?}", t.elapsed());
    let m = late.metrics();
    assert!(m.get("tickrelay_feed_backfill_requests_total") > 0.0);
    assert!(m.get("tickrelay_feed_recovered_changes_total") > 0.0);
    assert_eq!(m.get("tickrelay_feed_backfill_lost_messages_total"), 0.0);
    assert_eq!(m.get("tickrelay_feed_recoveries_total"), 1.0);
    assert_eq!(m.get("tickrelay_feed_incomplete_symbols"), 0.0);
}

#[test]
fn a_late_joiner_rebuilds_the_state_from_the_recovery_loop() {
    let group = support::FeedAddr::unique();
    let recovery = support::FeedAddr::unique();
    let final_path = support::scratch("late-loop.json");
    let witness = relay(&["--feed-a", &group.to_string()]);
    let sim = simulator(&[
        "--group",
        &group.to_string(),
        "--recovery",
        &recovery.to_string(),
        "--symbols",
        "500",
        "--rate",
        "2000",
        "--zipf",
        "1.2",
        "--duration",
        "20",
        "--session",
        "LATELOOP",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    wait_history(&witness);
    let late = relay(&[
        "--feed-a",
        &group.to_string(),
        "--recovery",
        &recovery.to_string(),
    ]);
    watch_until_ready(&late, &witness, Duration::from_secs(20));
    support::wait_sim(sim, Duration::from_secs(30));
    support::assert_equals_final_state(&late, &final_path, true);
    let m = late.metrics();
    assert!(m.get("tickrelay_feed_recovered_changes_total") > 0.0);
    assert!(m.get("tickrelay_feed_packets_received_total{line=\"recovery\"}") > 0.0);
    assert_eq!(m.get("tickrelay_feed_recoveries_total"), 1.0);
}

/// Reads SSE `feed` events' data from a stream into `into`.
fn sse_feed_events(base: &str, into: Arc<Mutex<Vec<Value>>>) {
    let addr = base.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /v1/stream?symbols=AAPL HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut event = String::new();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ")
                && event == "feed"
                && let Ok(v) = serde_json::from_str(d)
            {
                into.lock().unwrap().push(v);
            }
        }
    });
}

/// Reads WebSocket `feed` frames into `into`.
fn ws_feed_events(base: &str, into: Arc<Mutex<Vec<Value>>>) {
    let url = format!("{}/v1/ws", base.replace("http://", "ws://"));
    std::thread::spawn(move || {
        use tokio_tungstenite::tungstenite;
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let stream = TcpStream::connect(addr).unwrap();
        let (mut ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
        ws.send(tungstenite::Message::text(
            r#"{"op":"subscribe","symbols":["AAPL"]}"#,
        ))
        .unwrap();
        while let Ok(msg) = ws.read() {
            if let tungstenite::Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["type"] == "feed" {
                    into.lock().unwrap().push(v);
                }
            }
        }
    });
}

#[test]
fn losses_on_both_lines_are_rebuilt_from_the_loop_and_told_to_clients() {
    let a = support::FeedAddr::unique();
    let b = support::FeedAddr::unique();
    let recovery = support::FeedAddr::unique();
    let final_path = support::scratch("loss-loop.json");
    let relay = relay(&[
        "--feed-a",
        &a.to_string(),
        "--feed-b",
        &b.to_string(),
        "--recovery",
        &recovery.to_string(),
        "--gap-hold-ms",
        "30",
    ]);
    // Clients connect once their symbol is listed.
    let sim = simulator(&[
        "--group",
        &a.to_string(),
        "--line-b",
        &b.to_string(),
        "--recovery",
        &recovery.to_string(),
        "--loss",
        "0.05",
        "--symbols",
        "300",
        "--rate",
        "2000",
        "--zipf",
        "1.0",
        "--duration",
        "6",
        "--session",
        "LOSSLOOP",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while support::get_json(&relay.base, "/v1/snapshot/AAPL").0 != 200 {
        assert!(Instant::now() < deadline, "no directory");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sse = Arc::new(Mutex::new(Vec::new()));
    let ws = Arc::new(Mutex::new(Vec::new()));
    sse_feed_events(&relay.base, sse.clone());
    ws_feed_events(&relay.base, ws.clone());
    support::wait_sim(sim, Duration::from_secs(30));
    support::assert_equals_final_state(&relay, &final_path, true);
    let m = relay.metrics();
    let lost = m.get("tickrelay_feed_lost_messages_total");
    assert!(lost > 0.0, "5% on both lines loses some messages on both");
    assert!(m.get("tickrelay_feed_recoveries_total") >= 1.0);
    for (name, events) in [("SSE", &sse), ("WebSocket", &ws)] {
        let events = events.lock().unwrap();
        assert!(
            events
                .iter()
                .any(|e| e["status"] == "recovering" && e["lost"].as_u64() > Some(0)),
            "{name} client was told of the loss: {events:?}"
        );
        let last = events.last().expect("feed events");
        assert_eq!(last["status"], "live", "{name}: {events:?}");
        assert_eq!(last["complete"], true, "{name}: {events:?}");
    }
}
