//! The deploy kit in `deploy/` is checked by the tools that will run it:
//! HAProxy, Prometheus and nats-server parse their configs, systemd verifies
//! the units, and a relay starts from the shipped environment files (so every
//! variable in them is a real setting).
//!
//! The failover test (tests/it/failover.rs) runs `deploy/haproxy.cfg` for real.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// A Debian tool, wherever its package put it.
fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: `bash scripts/test.sh` installs what the tests need")
        })
}

fn check(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn haproxy_accepts_the_balancer_config() {
    check(
        Command::new(tool("haproxy"))
            .arg("-c")
            .arg("-f")
            .arg(deploy("haproxy.cfg")),
        "haproxy -c deploy/haproxy.cfg",
    );
}

#[test]
fn prometheus_accepts_the_scrape_config() {
    check(
        Command::new(tool("promtool"))
            .args(["check", "config"])
            .arg(deploy("prometheus.yml")),
        "promtool check config deploy/prometheus.yml",
    );
}

#[test]
fn systemd_verifies_the_units() {
    // The units name the installed paths; verify copies that name the
    // binaries cargo built.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tickrelay"));
    let dir = bin.parent().unwrap();
    let tmp = std::env::temp_dir().join(format!("tickrelay-units-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for unit in [
        "tickrelay@.service",
        "tickrelay-bridge.service",
        "feed-simulator.service",
    ] {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{unit}")))
            .unwrap()
            .replace("/usr/local/bin/", &format!("{}/", dir.display()));
        let name = unit.replace("@.", "@1.");
        std::fs::write(tmp.join(&name), text).unwrap();
        check(
            Command::new(tool("systemd-analyze"))
                .arg("verify")
                .arg(tmp.join(&name)),
            &format!("systemd-analyze verify {unit}"),
        );
    }
}

#[test]
fn a_relay_starts_from_the_shipped_environment_files() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickrelay"));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for file in ["common.env", "relay-1.env"] {
        for line in std::fs::read_to_string(deploy(file)).unwrap().lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').expect("KEY=value");
            assert!(k.starts_with("TICKRELAY_"), "{file}: {k}");
            cmd.env(k, v);
        }
    }
    // Any free port: 8081 may be taken on this machine.
    cmd.env("TICKRELAY_HTTP", "127.0.0.1:0");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut text = String::new();
    let mut buf = [0u8; 256];
    use std::io::Read;
    while !text.contains("tickrelay listening on") && started.elapsed() < Duration::from_secs(10) {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(
        text.contains("tickrelay listening on"),
        "the relay refused deploy/common.env ({status}):\n{err}"
    );
}
