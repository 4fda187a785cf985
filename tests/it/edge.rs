//! TLS and HTTP/2 at the edge: `deploy/haproxy.cfg`'s TLS listener (`alpn
//! h2,http/1.1`) in front of a real relay fed by the real simulator, with a
//! certificate generated for the test. Through it, as a browser would:
//!
//! - ten SSE streams on ONE HTTP/2 connection (ALPN `h2`), each with its own
//!   symbols, all open at once and all receiving ticks: the six-connection
//!   cap of HTTP/1.1 does not bound a user's tabs;
//! - a WebSocket over HTTP/1.1 on its own TLS connection (ALPN `http/1.1`;
//!   the HTTP/2 connection does not offer RFC 8441's extended CONNECT, so a
//!   browser goes this way too): the upgrade, a subscribe, ticks, the
//!   closing handshake.
//!
//! The relay behind stays plain HTTP/1.1. The clients are Node's built-in
//! `http2` and `tls` modules (tests/edge/clients.mjs), and they verify the
//! certificate against the one generated here.
//!
//! Needs `haproxy` and `openssl` (Debian's packages; `scripts/test.sh`
//! installs them) and Node.js 20+. Loopback only.

use crate::support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{DEADLINE, Relay, poll_until};

/// SSE streams on the one HTTP/2 connection: more than the six connections
/// per origin a browser allows itself over HTTP/1.1.
const STREAMS: usize = 10;

/// A Debian tool, wherever its package put it.
fn tool(name: &str) -> PathBuf {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!("{name} is not installed: `bash scripts/test.sh` installs what the tests need")
    })
}

/// A child process killed on drop, its output kept (and printed if the test
/// panicked).
struct Proc {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc::adopt(name, child)
    }

    /// Takes over a child whose output is piped.
    fn adopt(name: &'static str, mut child: Child) -> Proc {
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for mut stream in streams.into_iter().flatten() {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Proc {
            name,
            child,
            output,
        }
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} output:\n{}", self.name, self.output());
        }
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, valid for a
/// day: returns (the PEM HAProxy loads, certificate and key in one file;
/// the certificate alone, which the clients trust).
fn generate_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key, pem) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("edge.pem"),
    );
    let out = Command::new(tool("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut both = std::fs::read(&cert).unwrap();
    both.extend(std::fs::read(&key).unwrap());
    std::fs::write(&pem, both).unwrap();
    (pem, cert)
}

/// `text` with `from` replaced by `to`; `from` must be there, so a change
/// to the shipped config cannot quietly leave this test on the old one.
fn subst(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "deploy/haproxy.cfg no longer has {from:?}: update tests/it/edge.rs"
    );
    text.replace(from, to)
}

/// HAProxy on deploy/haproxy.cfg with this test's ports, one relay, and
/// `EDGE_TLS_PEM` set.
struct Edge {
    proc: Proc,
    tls_port: u16,
    stats: String,
}

impl Edge {
    fn start(relay: &Relay, pem: &Path, dir: &Path) -> Edge {
        let tls_port = support::free_tcp_port();
        let plain_port = support::free_tcp_port();
        let stats_port = support::free_tcp_port();
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg"))
                .unwrap();
        let mut cfg = subst(shipped, "127.0.0.1:8443", &format!("127.0.0.1:{tls_port}"));
        cfg = subst(cfg, "127.0.0.1:8000", &format!("127.0.0.1:{plain_port}"));
        cfg = subst(cfg, "127.0.0.1:8404", &format!("127.0.0.1:{stats_port}"));
        // One relay behind it.
        cfg = subst(cfg, "127.0.0.1:8081", &relay.addr.to_string());
        cfg = subst(cfg, "    server relay2 127.0.0.1:8082 check\n", "");
        cfg = subst(cfg, "    server relay3 127.0.0.1:8083 check\n", "");
        // This machine's descriptor limit, not a production one.
        cfg = subst(cfg, "maxconn 200000", "maxconn 5000");
        cfg = subst(cfg, "maxconn 100000", "maxconn 5000");
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let proc = Proc::spawn(
            "haproxy",
            Command::new(tool("haproxy"))
                .args(["-db", "-f"])
                .arg(&path)
                .env("EDGE_TLS_PEM", pem),
        );
        Edge {
            proc,
            tls_port,
            stats: format!("127.0.0.1:{stats_port}"),
        }
    }

    /// HAProxy's own metrics.
    fn metrics(&self) -> Option<String> {
        support::try_get(self.stats.parse().unwrap(), "/metrics", &[])
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.text())
    }

    /// A counter of the client-facing frontend.
    fn frontend(&self, name: &str) -> f64 {
        metric(&self.metrics().expect("HAProxy's /metrics"), name, |l| {
            l.contains("proxy=\"tickrelay\"")
        })
    }
}

/// Sum of the samples of `name` whose line passes `filter`.
fn metric(text: &str, name: &str, filter: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| filter(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs tests/edge/clients.mjs and returns its JSON report. The script
/// keeps to `DEADLINE`; this waits a little longer before killing it.
fn clients(args: &[String]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/edge/clients.mjs");
    let mut node = Proc::spawn("node", Command::new("node").arg(script).args(args));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.child.try_wait().expect("wait for node") {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE + Duration::from_secs(10),
            "node clients.mjs {args:?} did not finish:\n{}",
            node.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "node clients.mjs {args:?} failed ({status}):\n{}",
        node.output()
    );
    // The report is its last line; the output threads may still be reading.
    let report = || {
        let text = node.output();
        let line = text.lines().rev().find(|l| l.starts_with('{'))?;
        serde_json::from_str::<Value>(line).ok()
    };
    let waited = Instant::now();
    loop {
        if let Some(report) = report() {
            return report;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "node clients.mjs {args:?} printed no report:\n{}",
            node.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn browsers_get_sse_over_one_http2_connection_and_websocket_over_http1_through_tls() {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("node is missing ({e}): this test needs Node.js 20+"));
    assert!(version.status.success(), "node --version failed");
    let dir = support::scratch(&format!("edge-{}", support::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pem, cert) = generate_certificate(&dir);

    // A relay on the simulator's feed: 20 symbols ticking ~10 times a
    // second each, for longer than the test takes (killed on drop).
    let feed = support::FeedAddr::unique();
    let relay = Relay::loopback("serve", &["--feed-a".to_string(), feed.arg()]);
    let _sim = Proc::adopt(
        "feed-simulator",
        support::spawn_simulator(&[
            "--group",
            &feed.arg(),
            "--symbols",
            "20",
            "--rate",
            "200",
            "--zipf",
            "0",
            "--duration",
            "300",
            "--session",
            "EDGE",
        ]),
    );
    relay.wait_ready();
    let (status, directory) = support::get_json(&relay.base, "/v1/symbols");
    assert_eq!(status, 200, "/v1/symbols: {directory}");
    let symbols: Vec<String> = directory
        .as_array()
        .or_else(|| directory["symbols"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| s["symbol"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(symbols.len(), 20, "the directory: {directory}");

    let edge = Edge::start(&relay, &pem, &dir);
    poll_until(DEADLINE, "HAProxy to see the relay up", || {
        let m = edge.metrics()?;
        (metric(&m, "haproxy_backend_active_servers", |l| {
            l.contains("proxy=\"relays\"")
        }) >= 1.0)
            .then_some(())
    });
    let started = Instant::now();
    let port = edge.tls_port.to_string();
    let deadline_ms = DEADLINE.as_millis().to_string();
    let common = [port.clone(), cert.display().to_string(), symbols.join(",")];

    // (a) Ten SSE streams on one HTTP/2 connection.
    let connections_before = edge.frontend("haproxy_frontend_connections_total");
    let requests_before = edge.frontend("haproxy_frontend_http_requests_total");
    let mut args = vec!["sse".to_string()];
    args.extend(common.iter().cloned());
    args.extend([STREAMS.to_string(), deadline_ms.clone()]);
    let sse = clients(&args);
    let took_sse = started.elapsed();
    assert_eq!(sse["error"], Value::Null, "the HTTP/2 session: {sse}");
    assert_eq!(sse["alpn"], "h2", "ALPN chose HTTP/2: {sse}");
    assert_eq!(sse["authorized"], true, "certificate verified: {sse}");
    assert_eq!(sse["connections"], 1, "one TLS connection: {sse}");
    assert_eq!(
        sse["extended_connect"], false,
        "HTTP/2 does not offer WebSockets (RFC 8441), so browsers use HTTP/1.1 for them: {sse}"
    );
    let streams = sse["streams"].as_array().unwrap();
    assert_eq!(streams.len(), STREAMS, "{sse}");
    for (i, s) in streams.iter().enumerate() {
        assert_eq!(s["status"], 200, "stream {i}: {s}");
        assert_eq!(s["content_type"], "text/event-stream", "stream {i}: {s}");
        assert_eq!(
            s["snapshots"], 1,
            "stream {i} opened with its snapshot: {s}"
        );
        assert!(
            s["ticks"].as_u64() >= Some(1),
            "stream {i} received no tick within {DEADLINE:?}: {s}"
        );
        assert_eq!(
            s.get("foreign"),
            None,
            "stream {i} got only its symbols: {s}"
        );
        assert_eq!(s.get("error"), None, "stream {i}: {s}");
    }
    assert_eq!(
        sse["open_at_end"], STREAMS,
        "every stream was still open when the last had its tick: {sse}"
    );
    // HAProxy's side: one more client connection, ten more requests on it.
    let connections = edge.frontend("haproxy_frontend_connections_total") - connections_before;
    let requests = edge.frontend("haproxy_frontend_http_requests_total") - requests_before;
    assert_eq!(connections, 1.0, "HAProxy accepted one connection: {sse}");
    assert_eq!(
        requests, STREAMS as f64,
        "HAProxy served {STREAMS} requests"
    );

    // (b) A WebSocket over HTTP/1.1 through the same TLS listener.
    let mut args = vec!["ws".to_string()];
    args.extend(common.iter().cloned());
    args.push(deadline_ms);
    let ws = clients(&args);
    let took_ws = started.elapsed() - took_sse;
    assert_eq!(ws["error"], Value::Null, "the WebSocket: {ws}");
    assert_eq!(ws["alpn"], "http/1.1", "ALPN chose HTTP/1.1: {ws}");
    assert_eq!(ws["authorized"], true, "certificate verified: {ws}");
    assert_eq!(ws["status"], 101, "the upgrade: {ws}");
    assert_eq!(ws["accept_ok"], true, "Sec-WebSocket-Accept: {ws}");
    assert_eq!(
        ws["subscribed"],
        serde_json::json!(symbols[..3]),
        "subscribed: {ws}"
    );
    assert_eq!(ws["snapshots"], 1, "a snapshot first: {ws}");
    assert!(ws["ticks"].as_u64() >= Some(1), "ticks: {ws}");
    assert_eq!(ws["foreign"], 0, "only its symbols: {ws}");
    assert_eq!(ws["masked_from_server"], 0, "server frames unmasked: {ws}");
    assert_eq!(ws["close_code"], 1000, "the closing handshake: {ws}");
    assert_eq!(
        edge.frontend("haproxy_frontend_connections_total") - connections_before,
        2.0,
        "HAProxy accepted the WebSocket's connection"
    );
    eprintln!(
        "edge: {STREAMS} SSE streams over one HTTP/2 connection all ticking in {took_sse:?}, \
         a WebSocket over HTTP/1.1 ticking and closed in {took_ws:?}"
    );
    drop(edge.proc);
    let _ = std::fs::remove_dir_all(&dir);
}
