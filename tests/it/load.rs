//! `tickrelay load` end to end: the real relay, the real feed-simulator and
//! the real load generator, on loopback, a few seconds per transport. Checks
//! that quotes arrive and the report is sane; never how fast (benchmarks
//! print numbers, tests don't assert speed).

use crate::support;

use std::process::{Command, Stdio};

use tickrelay::tools::load::Report;

fn load(base: &str, transport: &str, extra: &[&str]) -> Report {
    let out = Command::new(env!("CARGO_BIN_EXE_tickrelay"))
        .args(["load", "--url", base, "--transport", transport])
        .args(["--clients", "20", "--symbols-per-client", "5"])
        .args(["--duration", "2", "--warmup", "0.5", "--ramp", "200"])
        .args(["--json", "--no-progress"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run tickrelay load");
    assert!(
        out.status.success(),
        "tickrelay load --transport {transport} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn assert_sane(r: &Report, transport: &str) {
    assert_eq!(r.transport, transport);
    assert_eq!(r.connected, 20, "{transport}: every client ready: {r:?}");
    assert_eq!(r.open_at_end, 20, "{transport}: nobody dropped: {r:?}");
    assert!(r.errors.is_empty(), "{transport}: errors {:?}", r.errors);
    assert!(r.quotes > 0, "{transport}: no quotes delivered: {r:?}");
    assert!(r.frames > 0 && r.bytes > 0, "{transport}: {r:?}");
    let l = &r.latency_us;
    assert_eq!(l.count, r.quotes, "{transport}: one sample per quote");
    assert!(
        l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{transport}: percentiles out of order: {l:?}"
    );
    // Same host clock: a tick is never older than the run itself.
    assert!(l.max < 60_000_000, "{transport}: latency {l:?}");
    assert!(r.seconds > 1.5, "{transport}: window {}", r.seconds);
}

#[test]
fn load_reports_deliveries_and_latency_on_every_transport() {
    let group = support::FeedAddr::unique();
    let relay = support::Relay::loopback("serve", &["--feed-a".to_string(), group.to_string()]);
    let group_arg = group.to_string();
    let mut sim = support::spawn_simulator(&[
        "--group",
        &group_arg,
        "--symbols",
        "200",
        "--rate",
        "2000",
        "--duration",
        "60",
    ]);
    relay.wait_ready();
    // Wait for the directory so `--symbols zipf` has something to draw from.
    support::http_get(&relay.base, "/v1/symbols", &[]);

    let pid = relay.pid().to_string();
    let ws = load(
        &relay.base,
        "ws",
        &["--source-ips", "2", "--server-pid", &pid],
    );
    assert_sane(&ws, "ws");
    let server = ws.server.as_ref().expect("server cost with --server-pid");
    assert!(server.rss_kib > 0, "{server:?}");

    assert_sane(&load(&relay.base, "ws-msgpack", &[]), "ws-msgpack");
    assert_sane(&load(&relay.base, "sse", &["--symbols", "random"]), "sse");
    assert_sane(
        &load(&relay.base, "snapshot", &["--poll-interval-ms", "100"]),
        "snapshot",
    );
    assert_sane(
        &load(
            &relay.base,
            "poll",
            &["--symbols", "AAPL,MSFT,NVDA", "--poll-timeout-ms", "1000"],
        ),
        "poll",
    );

    // Idle clients connect and subscribe, and measure nothing.
    let idle = load(&relay.base, "sse", &["--idle"]);
    assert_eq!(idle.connected, 20);
    assert_eq!(idle.quotes, 0);

    let _ = sim.kill();
    let _ = sim.wait();
}

#[test]
fn load_fails_clearly_when_nothing_listens() {
    // A port nobody listens on: bind one, learn it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_tickrelay"))
        .args(["load", "--url", &format!("http://127.0.0.1:{port}")])
        .args(["--transport", "ws", "--symbols", "AAPL", "--clients", "3"])
        .args(["--duration", "0.2", "--warmup", "0", "--no-progress"])
        .output()
        .expect("run tickrelay load");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no client connected"), "{err}");
    assert!(err.contains("refused"), "{err}");
}
