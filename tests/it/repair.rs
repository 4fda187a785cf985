//! Gap repair end to end: the simulator drops packets on the line and serves
//! retransmission requests; the relay (in this process,
//! [`support::Relay::in_process`]) asks for what it missed and ends with
//! exactly the simulator's final state, nothing lost.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn lost_packets_are_repaired_by_retransmission() {
    let group = support::FeedAddr::unique();
    let server = format!("127.0.0.1:{}", support::free_udp_port());
    let relay = support::Relay::in_process(&[
        "--feed-a".to_string(),
        group.to_string(),
        "--retransmit".into(),
        server.clone(),
        // Long enough for the repairs on a machine busy with other tests.
        "--gap-hold-ms".into(),
        "2000".into(),
    ]);
    let dir = std::env::temp_dir().join(format!("tickrelay-repair-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let final_path = dir.join("final.json");
    support::run_simulator(&[
        "--group",
        &group.to_string(),
        "--retransmit",
        &server,
        "--loss",
        "0.05",
        "--symbols",
        "100",
        "--count",
        "20000",
        "--rate",
        "20000",
        "--session",
        "REPAIR1",
        "--seed",
        "3",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    let summary: Value = serde_json::from_slice(&std::fs::read(&final_path).unwrap()).unwrap();
    let last = summary["next_seq"].as_u64().unwrap() - 1;
    relay.wait_seq(last);
    let m = relay.metrics();
    assert!(
        m.get("tickrelay_feed_gaps_opened_total") > 0.0,
        "the loss opened gaps"
    );
    assert!(m.get("tickrelay_feed_retransmit_requests_total") > 0.0);
    assert!(m.get("tickrelay_feed_gaps_repaired_total") > 0.0);
    assert!(m.get("tickrelay_feed_packets_received_total{line=\"retransmit\"}") > 0.0);
    assert_eq!(
        m.get("tickrelay_feed_lost_messages_total"),
        0.0,
        "nothing lost"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let snap: Value = loop {
        let r = support::http_get(&relay.base, "/v1/snapshot", &[]);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        if v["seq"].as_u64() >= Some(last) {
            break v;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    let got: std::collections::HashMap<&str, &Value> = snap["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["symbol"].as_str().unwrap(), q))
        .collect();
    for want in summary["quotes"].as_array().unwrap() {
        let sym = want["symbol"].as_str().unwrap();
        let g = got[sym];
        support::assert_final_quote(g, want, sym);
    }
}

#[test]
fn a_lost_tail_still_moves_the_published_sequence() {
    let group = support::FeedAddr::unique();
    let relay = support::Relay::in_process(&[
        "--feed-a".to_string(),
        group.to_string(),
        "--gap-hold-ms".into(),
        "50".into(),
    ]);
    let mut feed = support::FeedWriter::new(group, "TAIL");
    feed.list(&["AAA"]);
    let seq = feed.send(&[support::FeedWriter::quote_msg(0, 1)]);
    relay.wait_seq(seq);
    // The producer says 10 more messages went out; none arrives.
    feed.raw(&tickrelay::wire::header(
        tickrelay::wire::Session::new("TAIL"),
        seq + 11,
        0,
    ));
    relay.wait_seq(seq + 10);
    let m = relay.metrics();
    assert_eq!(m.get("tickrelay_feed_lost_messages_total"), 10.0);
    let snap: Value =
        serde_json::from_slice(&support::http_get(&relay.base, "/v1/snapshot", &[]).body).unwrap();
    assert_eq!(
        snap["seq"].as_u64(),
        Some(seq + 10),
        "the snapshot's position includes the lost tail"
    );
}
