//! `tickrelay lab` end to end: the real relay and the real feed-simulator on
//! loopback, the lab's short run over every transport. Checks that every row
//! is there and that its numbers agree with what each transport is — never
//! how fast anything is.

use crate::support;

use std::process::{Command, Stdio};

use tickrelay::tools::lab::{LabReport, Row};

/// The rows: the two polls, then the streams.
const TRANSPORTS: [&str; 12] = [
    "short-poll",
    "long-poll",
    "sse",
    "ws",
    "ws-msgpack",
    "ws-batch16",
    "ws-delta",
    "ws-msgpack-delta",
    "ws-deflate",
    "ws-delta-deflate",
    "ws-msgpack-deflate",
    "ws-msgpack-delta-deflate",
];

fn row<'a>(r: &'a LabReport, id: &str) -> &'a Row {
    r.rows
        .iter()
        .find(|row| row.transport == id)
        .unwrap_or_else(|| panic!("no {id} row in {r:?}"))
}

#[test]
fn lab_measures_every_transport_on_the_same_watchlists() {
    let group = support::FeedAddr::unique();
    let relay = support::Relay::loopback("serve", &["--feed-a".to_string(), group.to_string()]);
    let group_arg = group.to_string();
    let mut sim = support::spawn_simulator(&[
        "--group",
        &group_arg,
        "--symbols",
        "100",
        "--rate",
        "2000",
        "--duration",
        "120",
    ]);
    relay.wait_ready();
    support::http_get(&relay.base, "/v1/symbols", &[]);

    let html = std::env::temp_dir().join(format!("tickrelay-lab-{}.html", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tickrelay"))
        .args(["lab", "--url", &relay.base, "--clients", "8"])
        .args(["--symbols-per-client", "5", "--duration", "3"])
        .args(["--server-pid", &relay.pid().to_string(), "--json"])
        .arg("--html")
        .arg(&html)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run tickrelay lab");
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(
        out.status.success(),
        "tickrelay lab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: LabReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    // The JSON shape `tickrelay lab --json` prints (README, "Which transport?"), field by field.
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "transport",
        "deliveries_per_s",
        "staleness_p50_ms",
        "staleness_p99_ms",
        "bytes_per_update",
        "requests_per_min",
        "cpu_us_per_update",
        "memory_per_client_bytes",
    ] {
        assert!(
            raw["rows"][0].get(key).is_some(),
            "rows[0] lacks {key}: {raw}"
        );
    }

    let ids: Vec<&str> = r.rows.iter().map(|row| row.transport.as_str()).collect();
    assert_eq!(ids, TRANSPORTS, "one row per transport, in order");
    for row in &r.rows {
        let t = &row.transport;
        assert_eq!(row.clients, 8, "{t}: every client connected: {row:?}");
        assert!(row.errors.is_empty(), "{t}: errors {:?}", row.errors);
        assert!(
            row.deliveries > 0 && row.deliveries_per_s > 0.0,
            "{t}: nothing delivered: {row:?}"
        );
        let expect = row.deliveries as f64 / row.seconds / row.clients as f64;
        assert!(
            (row.deliveries_per_s - expect).abs() < 1e-6 * expect.max(1.0),
            "{t}: {row:?}"
        );
        assert!(row.staleness_samples > 0, "{t}: no staleness samples");
        assert!(row.staleness_p50_ms <= row.staleness_p99_ms, "{t}: {row:?}");
        // Counted at the socket: every update costs at least some bytes read.
        let bpu = row.bytes_per_update.expect("bytes per update");
        assert!(bpu > 0.0 && row.rx_bytes > 0, "{t}: {row:?}");
        assert!(
            (bpu - (row.rx_bytes + row.tx_bytes) as f64 / row.deliveries as f64).abs() < 1e-6 * bpu,
            "{t}: {row:?}"
        );
        assert!(
            row.cpu_us_per_update.is_some(),
            "{t}: CPU with --server-pid"
        );
        assert!(
            row.memory_per_client_bytes.is_some(),
            "{t}: memory with --server-pid"
        );
    }

    // Short polling once a second: the view is on average half a second old,
    // so its p99 is at least half the interval; it asks about once a second.
    let short = row(&r, "short-poll");
    assert!(
        short.staleness_p99_ms >= 500.0,
        "short poll staleness {short:?}"
    );
    assert!(
        short.requests_per_min > 0.0 && short.requests_per_min <= 90.0,
        "{short:?}"
    );
    // Every long-poll answer carries a request and HTTP headers; SSE only framing.
    let long = row(&r, "long-poll");
    let sse = row(&r, "sse");
    assert!(
        long.bytes_per_update.unwrap() > sse.bytes_per_update.unwrap(),
        "long poll {long:?} vs SSE {sse:?}"
    );
    assert!(long.requests_per_min > 0.0 && long.tx_bytes > 0, "{long:?}");
    // Streams ask nothing after they connect.
    for &id in &TRANSPORTS[2..] {
        assert_eq!(row(&r, id).requests_per_min, 0.0, "{id}: {:?}", row(&r, id));
    }
    // A delta carries the fields that changed, not the whole quote.
    // And JSON compressed, fewer bytes again: the bytes counted are the
    // wire's. (MessagePack compressed on its own gains next to nothing, and
    // the relay sends a frame that would not shrink as it is.)
    for (fewer, more) in [
        ("ws-delta", "ws"),
        ("ws-msgpack-delta", "ws-msgpack"),
        ("ws-deflate", "ws"),
        ("ws-delta-deflate", "ws-delta"),
    ] {
        let (f, m) = (row(&r, fewer), row(&r, more));
        assert!(
            f.bytes_per_update.unwrap() < m.bytes_per_update.unwrap(),
            "{fewer} {f:?} vs {more} {m:?}"
        );
        assert!(f.deliveries_per_s > 0.0, "{fewer} delivers: {f:?}");
    }

    let page = std::fs::read_to_string(&html).expect("the --html file");
    let _ = std::fs::remove_file(&html);
    assert!(page.contains("<svg"), "plots as inline SVG");
    for row in &r.rows {
        assert!(page.contains(&row.label), "{} in the HTML", row.label);
    }
}

#[test]
fn demo_lab_runs_the_lab_on_the_embedded_feed_and_exits() {
    let group = support::FeedAddr::unique().to_string();
    // A recovery loop of its own: the demo's default one would be shared
    // with any other demo the suite runs at the same time.
    let recovery = support::FeedAddr::unique().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tickrelay"))
        .args([
            "demo",
            "--lab",
            "--feed-a",
            &group,
            "--recovery",
            &recovery,
            "--symbols",
            "50",
            "--rate",
            "1000",
        ])
        .args([
            "--lab-duration",
            "1",
            "--lab-clients",
            "3",
            "--lab-symbols-per-client",
            "3",
        ])
        .args(["--lab-json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run tickrelay demo --lab");
    assert!(
        out.status.success(),
        "demo --lab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: LabReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let ids: Vec<&str> = r.rows.iter().map(|row| row.transport.as_str()).collect();
    assert_eq!(ids, TRANSPORTS);
    for row in &r.rows {
        assert!(row.deliveries > 0, "{}: {row:?}", row.transport);
        assert!(
            row.cpu_us_per_update.is_some(),
            "the demo's pid is measured"
        );
    }
}
