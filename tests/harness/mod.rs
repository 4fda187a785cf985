//! Test harness for the streaming tests: the real relay binary and the real
//! feed-simulator, on loopback, each test on its own multicast group.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tickrelay::price::Price;
use tickrelay::wire::{Message, PacketBuilder, Session};

/// A group and port no other test in this process uses; the process id
/// spreads parallel test binaries apart.
pub fn unique_group() -> SocketAddrV4 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let port = 40_000 + ((pid % 500) * 40 + n) as u16 % 20_000;
    SocketAddrV4::new(
        Ipv4Addr::new(239, 255, 20 + (pid % 50) as u8, (n % 250) as u8 + 1),
        port,
    )
}

/// A running relay, killed on drop.
pub struct Relay {
    pub child: Child,
    pub base: String,
}

impl Relay {
    /// Starts `tickrelay serve --http 127.0.0.1:0 ARGS` and waits for it to listen.
    pub fn start(args: &[String]) -> Relay {
        Relay::start_command("serve", args)
    }

    /// Starts `tickrelay COMMAND --http 127.0.0.1:0 ARGS` (`serve`, `bridge`)
    /// and waits for it to listen.
    pub fn start_command(command: &str, args: &[String]) -> Relay {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickrelay"))
            .arg(command)
            .args(["--http", "127.0.0.1:0", "--interface", "127.0.0.1"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RELAY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tickrelay");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("relay exited before listening")
                .unwrap();
            if let Some(url) = line.strip_prefix("tickrelay listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining stdout so the relay never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Relay { child, base }
    }

    /// Waits until `/readyz` says 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&self.base, "/readyz", &[]).status != 200 {
            assert!(Instant::now() < deadline, "relay not ready in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the relay has applied feed sequence `seq`.
    pub fn wait_seq(&self, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.metrics();
            if metric(&m, "tickrelay_feed_sequence") as u64 >= seq {
                return;
            }
            assert!(Instant::now() < deadline, "relay did not reach seq {seq}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(&self.base, "/metrics", &[]).body
    }

    /// Resident memory of the relay process, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "relay did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of the feed-simulator binary, built (once per test process) beside
/// tickrelay so it is never stale.
pub fn simulator_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_BIN_EXE_tickrelay"))
            .parent()
            .unwrap()
            .to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "feed-simulator"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        // The target dir is the one this test binary was built into.
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        assert!(cmd.status().unwrap().success(), "build feed-simulator");
        dir.join("feed-simulator")
    })
    .clone()
}

/// Runs the simulator to completion (loopback, TTL 0).
pub fn run_simulator(args: &[&str]) {
    let out = spawn_simulator(args).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "feed-simulator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the simulator.
pub fn spawn_simulator(args: &[&str]) -> Child {
    Command::new(simulator_path())
        .args(["--interface", "127.0.0.1", "--ttl", "0", "--no-progress"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start feed-simulator")
}

/// A plain HTTP response.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with `Connection: close`, read to the end.
pub fn http_get(base: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of a sample in Prometheus text (0 when absent). `name` may
/// include labels exactly as exposed.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Writes feed packets for one session to a group, like an exchange would,
/// so a test knows every price exactly.
pub struct Producer {
    socket: std::net::UdpSocket,
    group: SocketAddrV4,
    builder: PacketBuilder,
}

impl Producer {
    /// A producer of `session` on `group` (loopback, TTL 0).
    pub fn new(group: SocketAddrV4, session: &str) -> Self {
        let socket = tickrelay::sim::sender(Ipv4Addr::LOCALHOST, 0).unwrap();
        Producer {
            socket,
            group,
            builder: PacketBuilder::new(Session::new(session), 1),
        }
    }

    /// Sends `msgs` packed into packets; returns the last one's sequence.
    pub fn send(&mut self, msgs: &[Message<'_>]) -> u64 {
        let (socket, group) = (&self.socket, self.group);
        let mut seq = 0;
        for m in msgs {
            seq = self.builder.push(m, &mut |p| {
                socket.send_to(p, group).unwrap();
            });
        }
        self.builder.flush(&mut |p| {
            socket.send_to(p, group).unwrap();
        });
        seq
    }

    /// Lists `symbols` at locates 0, 1, …
    pub fn directory(&mut self, symbols: &[&str]) -> u64 {
        let msgs: Vec<Message<'_>> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| Message::Directory {
                locate: i as u16,
                ts: 1,
                symbol: s,
                name: s,
                prev_close: Price(100_0000),
            })
            .collect();
        self.send(&msgs)
    }

    /// A quote with bid `n` and ask `n + 100`, stamped now.
    pub fn quote(locate: u16, n: i64) -> Message<'static> {
        Message::Quote {
            locate,
            ts: now_ns(),
            bid: Price(n),
            ask: Price(n + 100),
            bid_size: 1,
            ask_size: 2,
        }
    }

    /// Sends one datagram as it is.
    pub fn send_raw(&self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.group).unwrap();
    }

    /// A heartbeat carrying the next sequence.
    pub fn heartbeat(&self) {
        self.socket
            .send_to(&self.builder.heartbeat(), self.group)
            .unwrap();
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Asserts that a quote the relay sent equals the simulator's final state
/// for `symbol` (its `--final-state` entry), field by field.
pub fn assert_final_quote(got: &serde_json::Value, want: &serde_json::Value, symbol: &str) {
    for field in [
        "seq",
        "bid",
        "ask",
        "bid_size",
        "ask_size",
        "last",
        "volume",
        "prev_close",
    ] {
        assert_eq!(got[field], want[field], "{symbol}.{field}");
    }
}

/// A UDP port free on 127.0.0.1 right now.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A file path in this test process's scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickrelay-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Waits for a simulator bounded by `--duration` or `--count` to exit
/// successfully.
pub fn wait_sim(mut sim: Child, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = sim.try_wait().unwrap() {
            assert!(status.success(), "feed-simulator failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = sim.kill();
            panic!("feed-simulator did not finish in {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path`: the status and the body as JSON (`Null` when it is not JSON).
pub fn get_json(base: &str, path: &str) -> (u16, serde_json::Value) {
    let r = http_get(base, path, &[]);
    let v = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

/// A snapshot's quotes by symbol.
pub fn by_symbol(
    snapshot: &serde_json::Value,
) -> std::collections::HashMap<String, serde_json::Value> {
    snapshot["quotes"]
        .as_array()
        .expect("quotes")
        .iter()
        .map(|q| (q["symbol"].as_str().unwrap().to_owned(), q.clone()))
        .collect()
}

/// Waits until the relay says ready and its snapshot reaches the last
/// sequence of the simulator's `--final-state` file, then checks every
/// symbol against it, field by field. With `loop_listed`, a symbol that
/// never ticked is not held to its `seq`: that is only a directory entry's
/// sequence, which a recovery loop does not date.
pub fn assert_equals_final_state(relay: &Relay, final_path: &std::path::Path, loop_listed: bool) {
    use serde_json::Value;
    let summary: Value = serde_json::from_slice(&std::fs::read(final_path).unwrap()).unwrap();
    let last = summary["next_seq"].as_u64().unwrap() - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    let snap = loop {
        let (status, v) = get_json(&relay.base, "/v1/snapshot");
        let (ready, _) = get_json(&relay.base, "/readyz");
        if status == 200 && ready == 200 && v["seq"].as_u64() >= Some(last) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "relay never whole at {last}: /readyz {ready}, snapshot seq {}",
            v["seq"]
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let got = by_symbol(&snap);
    let want = summary["quotes"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "every symbol listed");
    for w in want {
        let sym = w["symbol"].as_str().unwrap();
        let g = got
            .get(sym)
            .unwrap_or_else(|| panic!("{sym} missing from the relay"));
        if loop_listed && w["bid"].is_null() && w["last"].is_null() {
            assert_eq!(g["bid"], Value::Null, "{sym}.bid");
            assert_eq!(g["last"], Value::Null, "{sym}.last");
            assert_eq!(g["prev_close"], w["prev_close"], "{sym}.prev_close");
            continue;
        }
        assert_final_quote(g, w, sym);
    }
}
