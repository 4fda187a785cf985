//! The JavaScript client (`clients/js/tickrelay.js`) against the real relay:
//! runs its `node --test` suites (clients/js/test/*.test.mjs), which start
//! `tickrelay serve` and `feed-simulator` themselves on loopback and check
//! every transport, the `auto` fallback, resume after a killed relay, and
//! users' tokens (a token function, refresh before expiry, denied symbols).
//!
//! Needs Node.js 20+ (no npm packages: fetch is built in, WebSocket comes
//! with `--experimental-websocket`). When node is missing this test fails
//! and says so; it never skips.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than the suites take (about a minute on a busy machine).
const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn javascript_client_against_a_real_relay() {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("node is missing ({e}): this test needs Node.js 20+"));
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(major >= 20, "node {version}: this test needs Node.js 20+");

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    let mut cmd = Command::new("node");
    // Node 22 has a global WebSocket; Node 20 needs the flag.
    if major < 22 {
        cmd.arg("--experimental-websocket");
    }
    let out_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("js_client.log");
    let log = std::fs::File::create(&out_path).expect("log file");
    // The suites, not the helpers beside them (test/harness.mjs): Node 20
    // would run every .mjs file of a directory given to it.
    let mut suites: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("clients/js/test")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".test.mjs"))
        .map(|n| format!("test/{n}"))
        .collect();
    suites.sort();
    assert!(!suites.is_empty(), "no *.test.mjs in clients/js/test");
    let mut child = cmd
        .args(["--test", "--test-reporter=spec"])
        .args(&suites)
        .current_dir(&dir)
        .env("TICKRELAY_BIN", env!("CARGO_BIN_EXE_tickrelay"))
        .env("FEED_SIMULATOR_BIN", support::feed_simulator_bin())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start node --test");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for node") {
            break Some(s);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{text}");
    match status {
        Some(s) => assert!(
            s.success(),
            "node --test clients/js/test/*.test.mjs failed ({s}); its output is above"
        ),
        None => panic!("node --test did not finish in {} s", TIMEOUT.as_secs()),
    }
}
