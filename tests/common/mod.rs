//! Shared helpers for the integration tests: the real binaries over real
//! loopback sockets, no mocks.
//!
//! - [`Relay`]: spawns `tickrelay` with arguments, waits for its
//!   `tickrelay listening on http://ADDR` line, drains its output, and kills
//!   it when dropped (printing its log if the test panicked).
//! - [`get`] / [`get_with`]: a tiny HTTP/1.1 GET client over `std::net`.
//! - [`FeedAddr::unique`]: a multicast group and port no other test uses.
//! - [`FeedSender`]: sends raw datagrams to a group on 127.0.0.1 with TTL 0;
//!   [`FeedWriter`] writes a hand-made session through it.
//! - [`Sim`]: runs the `feed-simulator` binary and reads its final state.
//! - [`poll_until`]: waits for a condition with a deadline, never a fixed sleep.
//!
//! Network safety: every address here is loopback or a 239.255.x.y group
//! joined on 127.0.0.1, and multicast goes out with TTL 0.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tickrelay::price::Price;
use tickrelay::sim::FinalQuote;
use tickrelay::wire::{Locate, Message, PacketBuilder, Session, header};

/// How long any wait in a test may take before it fails. Generous: the
/// suite runs on two cores next to builds, and a slow pass is not a failure.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` every 20 ms until it returns `Some`, or panics naming `what`
/// after `timeout`.
pub(crate) fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- addresses

/// A feed line address: a 239.255.x.y group and a UDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FeedAddr(pub(crate) SocketAddrV4);

impl FeedAddr {
    /// A group and port that no other test (in this process or, in practice,
    /// another one) uses: the group from the process id and a counter, the
    /// port an ephemeral one the kernel just handed out.
    pub(crate) fn unique() -> FeedAddr {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let group = Ipv4Addr::new(239, 255, 10 + (pid % 200) as u8, (n % 250 + 1) as u8);
        FeedAddr(SocketAddrV4::new(group, free_udp_port()))
    }

    /// `GROUP:PORT`, as flags take it.
    pub(crate) fn arg(&self) -> String {
        self.0.to_string()
    }
}

impl std::fmt::Display for FeedAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A UDP port free on loopback right now.
pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral UDP port")
}

/// A TCP port free on loopback right now.
pub(crate) fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral TCP port")
}

// ---------------------------------------------------------------- binaries

/// The `tickrelay` binary Cargo built for this test.
pub(crate) fn tickrelay_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tickrelay"))
}

/// The `feed-simulator` binary, next to `tickrelay` in the same target
/// directory and profile. It is another workspace member, so Cargo does not
/// build it for this package's tests: it is (re)built once per test process
/// with the same Cargo, target directory and profile. That is a no-op when
/// it is fresh, and keeps a stale simulator from testing old code.
pub(crate) fn feed_simulator_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let relay = tickrelay_bin();
        let profile_dir = relay.parent().expect("tickrelay has a directory");
        let bin = profile_dir.join(format!("feed-simulator{}", std::env::consts::EXE_SUFFIX));
        if let Err(e) = build_feed_simulator(profile_dir) {
            if bin.exists() {
                eprintln!("warning: could not rebuild feed-simulator ({e}); using {bin:?}");
            } else {
                panic!("feed-simulator is not built and building it failed: {e}");
            }
        }
        assert!(bin.exists(), "feed-simulator missing at {bin:?}");
        bin
    })
    .clone()
}

fn build_feed_simulator(profile_dir: &Path) -> Result<(), String> {
    let target_dir = profile_dir
        .parent()
        .ok_or("tickrelay is not in a target/<profile> directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "-p",
            "feed-simulator",
            "--bin",
            "feed-simulator",
        ])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => return Err("no profile directory name".into()),
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build -p feed-simulator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A `Command` for `bin` with no `TICKRELAY_*` variable inherited, so the
/// environment the tests run in cannot change what they test.
pub(crate) fn hermetic(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TICKRELAY_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

// ---------------------------------------------------------------- the relay

/// Output of a child, drained by a thread so a chatty child never blocks on
/// a full pipe.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn drain(stream: impl Read + Send + 'static, lines: Option<mpsc::Sender<String>>) -> Self {
        let captured = Captured::default();
        let buf = captured.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = &lines {
                    let _ = tx.send(line.clone());
                }
                let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                b.push_str(&line);
                b.push('\n');
            }
        });
        captured
    }

    /// Waits (up to 5 s) for the stream's end of file: after the child
    /// exited, this makes [`Captured::text`] complete.
    pub(crate) fn wait_eof(&self) {
        let start = Instant::now();
        // The drain thread holds the other reference until EOF.
        while Arc::strong_count(&self.0) > 1 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything read so far.
    pub(crate) fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A running `tickrelay`, killed on drop.
pub(crate) struct Relay {
    child: Child,
    /// Where it listens for HTTP.
    pub(crate) addr: SocketAddr,
    /// Its standard output.
    pub(crate) stdout: Captured,
    /// Its log (standard error).
    pub(crate) stderr: Captured,
}

impl Relay {
    /// `tickrelay serve ARGS` with `--http 127.0.0.1:0` unless ARGS set it.
    pub(crate) fn serve(args: &[&str]) -> Relay {
        let mut full = vec!["serve"];
        if !args.contains(&"--http") {
            full.extend(["--http", "127.0.0.1:0"]);
        }
        full.extend_from_slice(args);
        Relay::start(&full, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `tickrelay serve` on one feed line, A, joined on 127.0.0.1.
    pub(crate) fn serve_feed(feed: FeedAddr, extra: &[&str]) -> Relay {
        let a = feed.arg();
        let mut args = vec!["--feed-a", &a, "--interface", "127.0.0.1"];
        args.extend_from_slice(extra);
        Relay::serve(&args)
    }

    /// Runs `tickrelay ARGS` with extra environment variables and waits for
    /// its listening line. An exit before that line is an `Err` holding the
    /// status and log.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Result<Relay, String> {
        let mut cmd = hermetic(&tickrelay_bin());
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start tickrelay: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let stdout = Captured::drain(child.stdout.take().expect("piped"), Some(tx));
        let stderr = Captured::drain(child.stderr.take().expect("piped"), None);
        let start = Instant::now();
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("tickrelay listening on http://") {
                        break rest
                            .trim()
                            .parse::<SocketAddr>()
                            .map_err(|e| format!("bad listening line {line:?}: {e}"))?;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map_err(|e| e.to_string())?;
                    stderr.wait_eof();
                    return Err(format!(
                        "tickrelay {args:?} exited with {status} before listening\nstderr:\n{}",
                        stderr.text()
                    ));
                }
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "tickrelay {args:?} did not print its listening line within {DEADLINE:?}\nstderr:\n{}",
                    stderr.text()
                ));
            }
        };
        let relay = Relay {
            child,
            addr,
            stdout,
            stderr,
        };
        relay.wait_healthy();
        Ok(relay)
    }

    /// Waits for `/healthz` to answer 200. `serve` opens the feed sockets
    /// before it serves HTTP, so after this the feed groups are joined.
    pub(crate) fn wait_healthy(&self) {
        poll_until(DEADLINE, "/healthz 200", || {
            self.try_get("/healthz")
                .ok()
                .filter(|r| r.status == 200)
                .map(drop)
        });
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET `path`, panicking on a transport error.
    pub(crate) fn get(&self, path: &str) -> Response {
        get(self.addr, path)
    }

    /// GET `path` with extra request headers.
    pub(crate) fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        get_with(self.addr, path, headers)
    }

    /// GET `path`, returning transport errors.
    pub(crate) fn try_get(&self, path: &str) -> std::io::Result<Response> {
        try_get(self.addr, path, &[])
    }

    /// The current `/metrics`, parsed.
    pub(crate) fn metrics(&self) -> Metrics {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        Metrics::parse(&r.text())
    }

    /// Waits until metric `name` (summed over its labels) satisfies `pred`,
    /// and returns the metrics at that moment.
    pub(crate) fn wait_metric(&self, name: &str, pred: impl Fn(f64) -> bool) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            let last = m.sum(name);
            if pred(last) {
                return m;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {name}, last {last}\nmetrics:\n{}\nstderr:\n{}",
                    m.feed_lines(),
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `/v1/snapshot` reports session `session` at sequence `seq`
    /// or later, and returns that snapshot.
    pub(crate) fn wait_snapshot_seq(
        &self,
        session: &str,
        seq: u64,
    ) -> tickrelay::transport::snapshot::SnapshotBody {
        let mut last = None;
        let start = Instant::now();
        loop {
            let r = self.get("/v1/snapshot");
            if r.status == 200 {
                let body: tickrelay::transport::snapshot::SnapshotBody = r.json();
                if body.session == session && body.seq >= seq {
                    return body;
                }
                last = Some((body.session, body.seq));
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for snapshot {session}:{seq}, last {last:?}\nmetrics:\n{}\nstderr:\n{}",
                    self.metrics().feed_lines(),
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- tickrelay on {} stdout:\n{}--- stderr:\n{}",
                self.addr,
                self.stdout.text(),
                self.stderr.text()
            );
        }
    }
}

/// Runs `tickrelay ARGS` (with `env`) expecting it to refuse to start:
/// returns its exit status and standard error. Panics if it is still running
/// after the deadline.
pub(crate) fn run_refused(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = hermetic(&tickrelay_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tickrelay");
    let stderr = Captured::drain(child.stderr.take().expect("piped"), None);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tickrelay {args:?} kept running; expected it to refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stderr.wait_eof();
    (status, stderr.text())
}

// ---------------------------------------------------------------- HTTP

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Response {
    /// Status code.
    pub(crate) status: u16,
    /// Headers, names lower-cased, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, panicking with the body when it is not.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not the expected JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// GET `path` from `addr`; panics on a transport error.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Response {
    get_with(addr, path, &[])
}

/// GET `path` from `addr` with extra headers; panics on a transport error.
pub(crate) fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    try_get(addr, path, headers).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// GET `path` from `addr` over a fresh connection (`Connection: close`).
pub(crate) fn try_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("chunk size line"))?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| bad("chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------- metrics

/// A parsed Prometheus text exposition: `name{labels}` → value.
#[derive(Debug, Default)]
pub(crate) struct Metrics(pub(crate) BTreeMap<String, f64>);

impl Metrics {
    /// Parses the text format; comments and unparsable lines are skipped.
    pub(crate) fn parse(text: &str) -> Metrics {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((key, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.trim().parse::<f64>() {
                    map.insert(key.trim().to_string(), v);
                }
            }
        }
        Metrics(map)
    }

    /// The sum of every series of metric `name` (0 when absent).
    pub(crate) fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    /// The series of `name` whose label `label` is `value` (0 when absent).
    pub(crate) fn labeled(&self, name: &str, label: &str, value: &str) -> f64 {
        let want = format!("{label}=\"{value}\"");
        self.0
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{name}{{"))
                    && k[name.len() + 1..k.len().saturating_sub(1)]
                        .split(',')
                        .any(|l| l == want)
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The `tickrelay_feed_*` series, one per line, for failure messages.
    pub(crate) fn feed_lines(&self) -> String {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with("tickrelay_feed_") && !k.contains("_bucket"))
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect()
    }
}

// ---------------------------------------------------------------- raw feed

/// Sends raw datagrams to a multicast group from 127.0.0.1 with TTL 0.
pub(crate) struct FeedSender {
    socket: UdpSocket,
}

impl FeedSender {
    /// A sender on the loopback interface.
    pub(crate) fn new() -> FeedSender {
        // The simulator's own sender: multicast interface 127.0.0.1, TTL 0,
        // loop on, bound to 127.0.0.1.
        let socket = tickrelay::sim::sender(Ipv4Addr::LOCALHOST, 0).expect("open sender");
        FeedSender { socket }
    }

    /// Sends one datagram to `to`.
    pub(crate) fn send(&self, to: FeedAddr, datagram: &[u8]) {
        assert!(to.0.ip().is_multicast() || to.0.ip().is_loopback());
        let n = self.socket.send_to(datagram, to.0).expect("send datagram");
        assert_eq!(n, datagram.len());
    }
}

/// Writes the feed by hand: a [`PacketBuilder`] for one session whose every
/// message goes out at once in its own packet, plus raw datagrams.
pub(crate) struct FeedWriter {
    /// Where packets go.
    pub(crate) to: FeedAddr,
    /// The session's builder; its `next_seq` is the next message's sequence.
    pub(crate) builder: PacketBuilder,
    sender: FeedSender,
}

impl FeedWriter {
    /// A writer for `session`, its first message numbered 1.
    pub(crate) fn new(to: FeedAddr, session: &str) -> FeedWriter {
        FeedWriter {
            to,
            builder: PacketBuilder::new(Session::new(session), 1),
            sender: FeedSender::new(),
        }
    }

    /// Sends `msgs` in as few packets as fit; returns the last one's sequence.
    pub(crate) fn send(&mut self, msgs: &[Message<'_>]) -> u64 {
        let (sender, to) = (&self.sender, self.to);
        let mut last = 0;
        for m in msgs {
            last = self.builder.push(m, &mut |p| sender.send(to, p));
        }
        self.builder.flush(&mut |p| sender.send(to, p));
        last
    }

    /// Sends directory entries `(locate, symbol, prev_close)`; returns the
    /// last one's sequence.
    pub(crate) fn directory(&mut self, entries: &[(Locate, &str, i64)]) -> u64 {
        let names: Vec<String> = entries
            .iter()
            .map(|(_, s, _)| format!("{s} Inc."))
            .collect();
        let msgs: Vec<Message<'_>> = entries
            .iter()
            .zip(&names)
            .map(|(&(locate, symbol, prev_close), name)| Message::Directory {
                locate,
                ts: now_ns(),
                symbol,
                name,
                prev_close: Price(prev_close),
            })
            .collect();
        self.send(&msgs)
    }

    /// Sends one quote (prices raw, in 1/10,000); returns its sequence.
    pub(crate) fn quote(&mut self, locate: Locate, bid: i64, ask: i64, sizes: (u32, u32)) -> u64 {
        self.send(&[Message::Quote {
            locate,
            ts: now_ns(),
            bid: Price(bid),
            ask: Price(ask),
            bid_size: sizes.0,
            ask_size: sizes.1,
        }])
    }

    /// Sends one trade; returns its sequence.
    pub(crate) fn trade(&mut self, locate: Locate, price: i64, size: u32, volume: u64) -> u64 {
        self.send(&[Message::Trade {
            locate,
            ts: now_ns(),
            price: Price(price),
            size,
            volume,
        }])
    }

    /// Sends a datagram as it is, whatever it holds.
    pub(crate) fn raw(&self, datagram: &[u8]) {
        self.sender.send(self.to, datagram);
    }

    /// A packet of this session with sequence `seq` holding the given raw
    /// message payloads, framed correctly. It does not move `next_seq`.
    pub(crate) fn framed(&self, seq: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut p = header(self.builder.session(), seq, payloads.len() as u16).to_vec();
        for m in payloads {
            p.extend_from_slice(&(m.len() as u16).to_be_bytes());
            p.extend_from_slice(m);
        }
        p
    }

    /// Sends raw message payloads (well-formed or not) as the next messages
    /// in sequence, framed correctly; returns the first one's sequence.
    pub(crate) fn send_payloads(&mut self, payloads: &[&[u8]]) -> u64 {
        let first = self.builder.next_seq();
        self.raw(&self.framed(first, payloads));
        self.builder = PacketBuilder::new(self.builder.session(), first + payloads.len() as u64);
        first
    }
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- simulator

/// The `--final-state` file of a simulator run.
#[derive(Debug, Deserialize)]
pub(crate) struct FinalState {
    /// Session id.
    pub(crate) session: String,
    /// Messages sent, directory included.
    pub(crate) messages: u64,
    /// One past the last sequence.
    pub(crate) next_seq: u64,
    /// Achieved rate.
    pub(crate) rate: f64,
    /// Every symbol's last published state.
    pub(crate) quotes: Vec<FinalQuote>,
}

impl FinalState {
    /// Sequence of the last message sent.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

/// A `feed-simulator` invocation.
pub(crate) struct Sim {
    args: Vec<String>,
}

impl Sim {
    /// Publishes to `group` on 127.0.0.1, TTL 0, without progress output.
    pub(crate) fn new(group: FeedAddr) -> Sim {
        Sim {
            args: [
                "--group",
                &group.arg(),
                "--interface",
                "127.0.0.1",
                "--ttl",
                "0",
                "--no-progress",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }

    /// Adds `--flag value`.
    pub(crate) fn flag(mut self, flag: &str, value: impl ToString) -> Sim {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    /// Adds a bare argument.
    pub(crate) fn arg(mut self, arg: &str) -> Sim {
        self.args.push(arg.to_string());
        self
    }

    /// Runs to completion (it must be bounded by `--count` or `--duration`)
    /// and returns its final state.
    pub(crate) fn run(self) -> FinalState {
        let dir = scratch_dir();
        let path = dir.join(format!("final-{}.json", unique_suffix()));
        let mut child = hermetic(&feed_simulator_bin())
            .args(&self.args)
            .arg("--final-state")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start feed-simulator");
        let out = Captured::drain(child.stdout.take().expect("piped"), None);
        let err = Captured::drain(child.stderr.take().expect("piped"), None);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("feed-simulator {:?} did not finish", self.args);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "feed-simulator {:?} failed ({status}):\n{}{}",
            self.args,
            out.text(),
            err.text()
        );
        let text = std::fs::read(&path).expect("read the final state");
        let _ = std::fs::remove_file(&path);
        serde_json::from_slice(&text).expect("parse the final state")
    }
}

/// A scratch directory for this test process.
pub(crate) fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickrelay-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A suffix unique within this process.
pub(crate) fn unique_suffix() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
