//! What every integration test shares: the real binaries over real
//! loopback sockets, no mocks. One way to do each job:
//!
//! - [`Relay`]: spawns `tickrelay` ([`Relay::start`], or its shorthands
//!   [`Relay::serve`], [`Relay::serve_feed`], [`Relay::loopback`]), waits for
//!   its `tickrelay listening on http://ADDR` line and `/healthz`, drains its
//!   output, and kills it when dropped (printing its log if the test
//!   panicked); [`Relay::wait_ready`], [`Relay::wait_seq`],
//!   [`Relay::wait_metric`] wait for a state, never a fixed sleep.
//! - [`http`]: a tiny HTTP/1.1 GET client over `std::net` ([`get`],
//!   [`get_with`], [`http_get`] for a base URL, [`get_json`]) and the parsed
//!   [`Metrics`].
//! - [`feed`]: [`FeedAddr::unique`], a multicast group and port no other
//!   test uses; [`FeedWriter`] writes a hand-made session; [`Sim`] runs the
//!   `feed-simulator` binary to completion and reads its final state,
//!   [`spawn_simulator`] runs it in the background.
//! - [`poll_until`]: waits for a condition with a deadline.
//!
//! Network safety: every address here is loopback or a 239.255.x.y group
//! joined on 127.0.0.1, and multicast goes out with TTL 0.

#![allow(dead_code, unused_imports)]

pub(crate) mod feed;
pub(crate) mod http;

pub(crate) use feed::*;
pub(crate) use http::*;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

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
    // Without the variables Cargo sets for this test process: a build
    // script that tracks one (ring's tracks `CARGO_MANIFEST_DIR` and
    // `CARGO_PKG_*`) would see it change from the outer build's and rebuild
    // itself and everything above it, the simulator and its whole TLS
    // stack, minutes on two cores, instead of this being a no-op.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let set_for_tests = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
            .iter()
            .any(|p| k.starts_with(p))
            || matches!(
                &*k,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_tests {
            cmd.env_remove(&*k);
        }
    }
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
    /// The process.
    pub(crate) child: Child,
    /// Where it listens for HTTP.
    pub(crate) addr: SocketAddr,
    /// The same, as a base URL: `http://ADDR`.
    pub(crate) base: String,
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

    /// `tickrelay COMMAND --http 127.0.0.1:0 --interface 127.0.0.1 ARGS`
    /// (`serve`, `bridge`), its log level from `TEST_RELAY_LOG` (`warn`
    /// unless set).
    pub(crate) fn loopback<S: AsRef<str>>(command: &str, args: &[S]) -> Relay {
        let mut full = vec![command, "--http", "127.0.0.1:0", "--interface", "127.0.0.1"];
        full.extend(args.iter().map(|a| a.as_ref()));
        let log = std::env::var("TEST_RELAY_LOG").unwrap_or_else(|_| "warn".into());
        Relay::start(&full, &[("RUST_LOG", &log)]).unwrap_or_else(|e| panic!("{e}"))
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
            base: format!("http://{addr}"),
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

    /// Waits until `/readyz` says 200.
    pub(crate) fn wait_ready(&self) {
        poll_until(DEADLINE, "/readyz 200", || {
            self.try_get("/readyz")
                .ok()
                .filter(|r| r.status == 200)
                .map(drop)
        });
    }

    /// Waits until the relay has applied feed sequence `seq`.
    pub(crate) fn wait_seq(&self, seq: u64) {
        self.wait_metric("tickrelay_feed_sequence", |v| v as u64 >= seq);
    }

    /// Resident memory of the relay process, KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status (Linux)");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
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

/// A scratch directory for this test process.
pub(crate) fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickrelay-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A file path in this test process's scratch directory.
pub(crate) fn scratch(name: &str) -> PathBuf {
    scratch_dir().join(name)
}

/// A suffix unique within this process.
pub(crate) fn unique_suffix() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
