//! `tickrelay usage`: the real binary on two usage databases written through
//! the library, as two relays of a fleet would write them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tickrelay::usage::{Class, Store, Usage};

/// 2026-12-01T00:00:00Z.
const DEC1: u64 = 1_796_083_200_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("tickrelay-usage-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn names(list: &[&str]) -> Vec<Arc<str>> {
    list.iter().map(|s| Arc::from(*s)).collect()
}

/// Relay A and relay B, December 2026:
/// - alice (pro, real time) on both: A on the 1st and 2nd (2 connections at
///   once, 100 + 50 messages), B on the 2nd (1 connection, 30 messages);
/// - bob (nonpro, delayed) on A only, polling: 4 requests;
/// - carol (nonpro) real time on B and delayed on A: counted real time;
/// - dave (pro) on A in November only: not in December's report.
fn write_fleet(a: &Path, b: &Path) {
    let now = Arc::new(AtomicU64::new(DEC1 + 9 * HOUR));
    let clock = now.clone();
    let usage_a = Usage::with_clock(move || clock.load(Relaxed));
    let store_a = Store::open(a).unwrap();
    let clock = now.clone();
    let usage_b = Usage::with_clock(move || clock.load(Relaxed));
    let store_b = Store::open(b).unwrap();

    // Relay A, the 1st.
    let alice = usage_a.user("alice", Class::Pro, false);
    let c1 = alice.connect();
    let c2 = alice.connect();
    alice.saw_symbols(&names(&["AAPL", "MSFT"]));
    alice.delivered(100, 10_000);
    let bob = usage_a.user("bob", Class::Nonpro, true);
    for _ in 0..3 {
        bob.request();
        bob.delivered(5, 250);
    }
    usage_a.user("carol", Class::Nonpro, true).request();
    store_a.flush_at(&usage_a, DEC1 + 10 * HOUR).unwrap();
    drop(c2);
    now.store(DEC1 + 11 * HOUR, Relaxed);
    drop(c1);
    store_a.flush_at(&usage_a, DEC1 + 11 * HOUR).unwrap();

    // The 2nd, on both relays.
    now.store(DEC1 + DAY + 8 * HOUR, Relaxed);
    let c = alice.connect();
    alice.delivered(50, 5_000);
    bob.request();
    let alice_b = usage_b.user("alice", Class::Pro, false);
    let cb = alice_b.connect();
    alice_b.saw_symbols(&names(&["MSFT", "IBM"]));
    alice_b.delivered(30, 3_000);
    usage_b.user("carol", Class::Nonpro, false).request();
    now.store(DEC1 + DAY + 9 * HOUR, Relaxed);
    drop((c, cb));
    store_a.flush_at(&usage_a, DEC1 + DAY + 9 * HOUR).unwrap();
    store_b.flush_at(&usage_b, DEC1 + DAY + 9 * HOUR).unwrap();

    // November on relay A.
    usage_a.user("dave", Class::Pro, false).request();
    store_a.flush_at(&usage_a, DEC1 - DAY).unwrap();
}

fn usage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tickrelay"))
        .arg("usage")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tickrelay usage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn the_report_merges_a_fleet_in_json_text_and_csv() {
    let dir = TempDir::new("fleet");
    let (a, b) = (dir.0.join("a.db"), dir.0.join("b.db"));
    write_fleet(&a, &b);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    let json: serde_json::Value = serde_json::from_str(&stdout(&usage(&[
        "--db", a, "--db", b, "--month", "2026-12", "--json",
    ])))
    .unwrap();
    assert_eq!(json["month"], "2026-12");
    assert_eq!(json["users_total"], 3);
    assert_eq!(json["by_class"]["pro"]["real_time"], 1);
    assert_eq!(json["by_class"]["pro"]["delayed"], 0);
    assert_eq!(json["by_class"]["nonpro"]["real_time"], 1);
    assert_eq!(json["by_class"]["nonpro"]["delayed"], 1);
    let users = json["users"].as_array().unwrap();
    let subs: Vec<&str> = users.iter().map(|u| u["sub"].as_str().unwrap()).collect();
    assert_eq!(subs, ["alice", "bob", "carol"]);
    let alice = &users[0];
    assert_eq!(alice["class"], "pro");
    assert_eq!(alice["delayed"], false);
    assert_eq!(alice["days"], 2);
    assert_eq!(alice["messages"], 180);
    assert_eq!(alice["bytes"], 18_000);
    assert_eq!(alice["max_connections"], 2);
    assert_eq!(alice["symbols"], 3);
    assert_eq!(alice["first_seen"], "2026-12-01T09:00:00Z");
    assert_eq!(alice["last_seen"], "2026-12-02T09:00:00Z");
    let bob = &users[1];
    assert_eq!(
        (bob["class"].as_str(), bob["delayed"].as_bool()),
        (Some("nonpro"), Some(true))
    );
    assert_eq!(
        (bob["requests"].as_u64(), bob["messages"].as_u64()),
        (Some(4), Some(15))
    );
    let carol = &users[2];
    assert_eq!(carol["delayed"], false);
    assert_eq!(
        carol["seen_as"],
        serde_json::json!(["nonpro/delayed", "nonpro/real_time"])
    );
    assert_eq!(carol["requests"], 2);

    // One relay alone: carol was only delayed there, alice's traffic is A's.
    let one: serde_json::Value = serde_json::from_str(&stdout(&usage(&[
        "--db", a, "--month", "2026-12", "--json",
    ])))
    .unwrap();
    assert_eq!(one["by_class"]["nonpro"]["delayed"], 2);
    assert_eq!(one["users"][0]["messages"], 150);
    // November: dave alone.
    let nov: serde_json::Value = serde_json::from_str(&stdout(&usage(&[
        "--db", a, "--db", b, "--month", "2026-11", "--json",
    ])))
    .unwrap();
    assert_eq!(nov["users_total"], 1);
    assert_eq!(nov["users"][0]["sub"], "dave");

    let text = stdout(&usage(&["--db", a, "--db", b, "--month", "2026-12"]));
    assert!(
        text.starts_with("usage 2026-12 from 2 databases: "),
        "{text}"
    );
    let cells = |first: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(first));
        line.unwrap_or_else(|| panic!("no `{first}` line in\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(cells("pro"), ["pro", "1", "0", "1"]);
    assert_eq!(cells("nonpro"), ["nonpro", "1", "1", "2"]);
    assert_eq!(cells("total"), ["total", "2", "1", "3"]);
    let alice = cells("alice");
    assert_eq!(&alice[..5], ["alice", "pro", "real", "time", "2"]);
    assert_eq!(&alice[7..], ["2", "3", "180", "18000", "0"]);
    assert_eq!(cells("carol").last().unwrap(), "nonpro/delayed");

    let csv = stdout(&usage(&[
        "--db", a, "--db", b, "--month", "2026-12", "--csv",
    ]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "sub,class,data,seen_as,days,first_seen,last_seen,max_connections,symbols,all_symbols,messages,bytes,requests"
    );
    assert_eq!(
        lines[1],
        "alice,pro,real_time,pro/real_time,2,2026-12-01T09:00:00Z,2026-12-02T09:00:00Z,2,3,false,180,18000,0"
    );
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with("carol,nonpro,real_time,nonpro/delayed;nonpro/real_time,2,"));
}

#[test]
fn a_bad_month_or_a_missing_database_is_named_and_fails() {
    let dir = TempDir::new("errors");
    let db = dir.0.join("a.db");
    Store::open(&db).unwrap();
    let db = db.to_str().unwrap();

    let out = usage(&["--db", db, "--month", "2026-13"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid month `2026-13`"), "{err}");

    let missing = dir.0.join("nope.db");
    let out = usage(&[
        "--db",
        db,
        "--db",
        missing.to_str().unwrap(),
        "--month",
        "2026-12",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.db") && err.contains("no such file"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = usage(&["--month", "2026-12"]);
    assert!(!out.status.success(), "--db is required");
    let out = usage(&["--db", db, "--month", "2026-12", "--json", "--csv"]);
    assert!(!out.status.success(), "--json and --csv conflict");
}
