//! What every integration test shares: the real binaries over real
//! loopback sockets, no mocks. One way to do each job:
//!
//! - [`Relay`]: the relay, run one of two ways behind the same helpers
//!   ([`Relay::get`], [`Relay::metrics`], [`Relay::wait_ready`],
//!   [`Relay::wait_seq`], [`Relay::wait_metric`], [`Relay::shutdown`]…:
//!   each waits for a state, never a fixed sleep):
//!   - in this process ([`Relay::in_process`], [`Relay::in_process_feed`],
//!     [`Relay::start_in_process`]): the same flags as `tickrelay serve`,
//!     parsed into a `Config` as the command does, then `server::bind` and
//!     `server::start` on 127.0.0.1:0 on a tokio runtime of its own, on a
//!     thread of its own. The default for protocol and transport tests: no
//!     process to start, and the real router, hub and feed sockets all the
//!     same. Its log goes to the test's captured output (level
//!     `TEST_RELAY_LOG`, `warn` unless set), shown when a test fails.
//!   - as a process: spawns `tickrelay` ([`Relay::start`], or its shorthands
//!     [`Relay::serve`], [`Relay::serve_feed`], [`Relay::loopback`]), waits
//!     for its `tickrelay listening on http://ADDR` line and `/healthz`,
//!     drains its output, and kills it when dropped (printing its log if the
//!     test panicked). For what only a process has: an exit status, signals
//!     (SIGTERM, SIGSTOP), its memory, its log on standard error, the CLI.
//! - [`http`]: a tiny HTTP/1.1 GET client over `std::net` ([`get`],
//!   [`get_with`], [`http_get`] for a base URL, [`get_json`]) and the parsed
//!   [`Metrics`].
//! - [`feed`]: [`FeedAddr::unique`], a multicast group and port no other
//!   test uses; [`FeedWriter`] writes a hand-made session; [`Sim`] runs the
//!   `feed-simulator` binary to completion and reads its final state,
//!   [`spawn_simulator`] runs it in the background.
//! - [`inflate`]: [`inflate::Windowed`], an inflater that fails a match
//!   reaching past the window the relay announced.
//! - [`poll_until`]: waits for a condition with a deadline.
//!
//! A relay in this process has a metrics registry of its own (each
//! `server::start` makes one), so two relays in one test binary never see
//! each other's counters.
//!
//! Network safety: every address here is loopback or a 239.255.x.y group
//! joined on 127.0.0.1, and multicast goes out with TTL 0.

#![allow(dead_code, unused_imports)]

pub(crate) mod feed;
pub(crate) mod http;
pub(crate) mod inflate;
pub(crate) mod jwt;
pub(crate) mod ws;

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
///
/// That build must resolve the features the test build did, or it builds
/// the relay library and everything on tokio again (minutes on two cores):
/// the tests' dev-dependencies add features (tokio's `test-util` for
/// tests/it/paused_time.rs), and Cargo only applies them to a build that
/// has a test target in it. So it also names `--test architecture`, the
/// smallest test target, which the test build has already built.
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
            "-p",
            "tickrelay",
            "--test",
            "architecture",
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

/// A running relay: a `tickrelay` process, or `server::start` in this
/// process. Stopped when dropped.
pub(crate) struct Relay {
    /// Where it listens for HTTP.
    pub(crate) addr: SocketAddr,
    /// The same, as a base URL: `http://ADDR`.
    pub(crate) base: String,
    /// Its standard output (a process's; empty in this process).
    pub(crate) stdout: Captured,
    /// Its log on standard error (a process's; in this process the log goes
    /// to the test's own captured output instead).
    pub(crate) stderr: Captured,
    host: Host,
}

/// Where a [`Relay`] runs.
enum Host {
    /// A `tickrelay` child process.
    Process(Child),
    /// `server::start` on a runtime of its own, on a thread of this process.
    InProcess(InProcess),
}

/// A relay in this process: the thread that owns its runtime, and the
/// trigger of its graceful shutdown (`Running::wait`'s future).
struct InProcess {
    /// Dropped or sent: the relay shuts down as on SIGTERM.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The runtime's thread; its result is `Running::wait`'s.
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

/// `tickrelay serve`'s flags, parsed as the command parses them.
#[derive(clap::Parser)]
#[command(name = "serve", no_binary_name = true)]
struct ServeFlags {
    /// TOML settings file.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: tickrelay::config::Settings,
}

/// The `Config` that `tickrelay serve ARGS` runs with: flags over the
/// `--config` file over the defaults, validated. Hermetic like a spawned
/// relay ([`hermetic`]): no `TICKRELAY_*` variable of the test's
/// environment applies.
pub(crate) fn serve_config<S: AsRef<str>>(args: &[S]) -> Result<tickrelay::config::Config, String> {
    use clap::{CommandFactory, FromArgMatches};
    use tickrelay::config::Settings;
    let command = ServeFlags::command().mut_args(|a| a.env(None::<&str>));
    let matches = command
        .try_get_matches_from(args.iter().map(|a| a.as_ref()))
        .map_err(|e| e.to_string())?;
    let flags = ServeFlags::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    let file = match &flags.config {
        Some(path) => Settings::from_file(path).map_err(|e| format!("{e:#}"))?,
        None => Settings::default(),
    };
    flags
        .settings
        .over(file)
        .validate()
        .map_err(|e| e.to_string())
}

/// Sends the log of relays in this process to the test's captured output
/// (shown when a test fails, or with `--nocapture`), at `TEST_RELAY_LOG`'s
/// level (`warn` unless set). Once per test process; the threads a relay
/// starts inherit the capture of the test that started it.
fn init_in_process_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let level = std::env::var("TEST_RELAY_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    });
}

impl Relay {
    // ------------------------------------------------------- in this process

    /// The relay in this process as `tickrelay serve ARGS` would run, with
    /// `--http 127.0.0.1:0` and `--interface 127.0.0.1` unless ARGS set
    /// them: the in-process twin of [`Relay::loopback`]`("serve", ARGS)`.
    pub(crate) fn in_process<S: AsRef<str>>(args: &[S]) -> Relay {
        let given = |flag: &str| args.iter().any(|a| a.as_ref() == flag);
        let mut full: Vec<String> = Vec::new();
        if !given("--http") {
            full.extend(["--http".into(), "127.0.0.1:0".into()]);
        }
        if !given("--interface") {
            full.extend(["--interface".into(), "127.0.0.1".into()]);
        }
        full.extend(args.iter().map(|a| a.as_ref().to_owned()));
        Relay::start_in_process(&full).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The relay in this process on one feed line, A, joined on 127.0.0.1:
    /// the in-process twin of [`Relay::serve_feed`].
    pub(crate) fn in_process_feed(feed: FeedAddr, extra: &[&str]) -> Relay {
        let a = feed.arg();
        let mut args = vec!["--feed-a", &a];
        args.extend_from_slice(extra);
        Relay::in_process(&args)
    }

    /// Runs the relay in this process with `tickrelay serve`'s flags ARGS
    /// (see [`serve_config`]): `server::bind` and `server::start` on a
    /// multi-threaded tokio runtime of its own, on a thread of its own, so
    /// the test may block or run its own runtime beside it. Returns once
    /// it listens (the feed sockets are open) and `/healthz` answers. A
    /// setting refused or an address in use is an `Err`.
    pub(crate) fn start_in_process<S: AsRef<str>>(args: &[S]) -> Result<Relay, String> {
        let config = serve_config(args)?;
        init_in_process_log();
        let (listening_tx, listening_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || -> Result<(), String> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("relay-worker")
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot build the relay's runtime: {e}"))?;
                let result = rt.block_on(async move {
                    let started = async {
                        let listener = tickrelay::server::bind(&config).await?;
                        tickrelay::server::start(listener, config).await
                    };
                    let running = match started.await {
                        Ok(running) => running,
                        Err(e) => {
                            let e = format!("{e:#}");
                            let _ = listening_tx.send(Err(e.clone()));
                            return Err(e);
                        }
                    };
                    let _ = listening_tx.send(Ok(running.local_addr()));
                    // As `serve` waits for SIGTERM: here the sender's send
                    // or drop.
                    running
                        .wait(async {
                            let _ = stopped.await;
                        })
                        .await
                        .map_err(|e| format!("{e:#}"))
                });
                // What the relay left running (it joined its own threads).
                rt.shutdown_timeout(Duration::from_secs(5));
                result
            })
            .map_err(|e| format!("cannot start the relay's thread: {e}"))?;
        let addr = match listening_rx.recv_timeout(DEADLINE) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(format!("the relay {:?} did not start: {e}", collect(args)));
            }
            Err(_) => {
                return Err(format!(
                    "the relay {:?} did not listen within {DEADLINE:?}",
                    collect(args)
                ));
            }
        };
        let relay = Relay {
            addr,
            base: format!("http://{addr}"),
            stdout: Captured::default(),
            stderr: Captured::default(),
            host: Host::InProcess(InProcess {
                stop: Some(stop),
                thread: Some(thread),
            }),
        };
        relay.wait_healthy();
        Ok(relay)
    }

    /// Whether this relay runs in this process.
    pub(crate) fn is_in_process(&self) -> bool {
        matches!(self.host, Host::InProcess(_))
    }

    // ------------------------------------------------------- as a process

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
    /// (`serve`, `bridge`; `--http` is left out when ARGS set it, as a
    /// relay restarted on its port does), its log level from
    /// `TEST_RELAY_LOG` (`warn` unless set).
    pub(crate) fn loopback<S: AsRef<str>>(command: &str, args: &[S]) -> Relay {
        let mut full = vec![command];
        if !args.iter().any(|a| a.as_ref() == "--http") {
            full.extend(["--http", "127.0.0.1:0"]);
        }
        full.extend(["--interface", "127.0.0.1"]);
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
            addr,
            base: format!("http://{addr}"),
            stdout,
            stderr,
            host: Host::Process(child),
        };
        relay.wait_healthy();
        Ok(relay)
    }

    fn child(&self) -> &Child {
        match &self.host {
            Host::Process(child) => child,
            Host::InProcess(_) => {
                panic!("this relay runs in the test process: use Relay::serve for a process")
            }
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        match &mut self.host {
            Host::Process(child) => child,
            Host::InProcess(_) => {
                panic!("this relay runs in the test process: use Relay::serve for a process")
            }
        }
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
        self.child().id()
    }

    /// Sends SIGTERM.
    pub(crate) fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `HUP`…).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let child = self.child_mut();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child_mut().try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // ------------------------------------------------------- either way

    /// Starts the graceful shutdown, as SIGTERM does: a process gets
    /// SIGTERM; in this process, the future `Running::wait` waits on
    /// resolves. [`Relay::wait_stopped`] waits for its end.
    pub(crate) fn shutdown(&mut self) {
        match &mut self.host {
            Host::Process(_) => self.sigterm(),
            Host::InProcess(p) => {
                if let Some(stop) = p.stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }

    /// Waits up to `timeout` for the relay to stop after
    /// [`Relay::shutdown`]: `None` if it is still running, else `Ok` for a
    /// clean stop (exit status 0; `Running::wait` returned `Ok`) or `Err`
    /// saying what ended it.
    pub(crate) fn wait_stopped(&mut self, timeout: Duration) -> Option<Result<(), String>> {
        match &mut self.host {
            Host::Process(_) => self.wait_exit(timeout).map(|status| {
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("exit status {status}"))
                }
            }),
            Host::InProcess(p) => {
                let start = Instant::now();
                while p.thread.as_ref().is_some_and(|t| !t.is_finished()) {
                    if start.elapsed() > timeout {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                match p.thread.take()?.join() {
                    Ok(result) => Some(result),
                    Err(_) => Some(Err("the relay's thread panicked".into())),
                }
            }
        }
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

    /// The relay's log for a failure message: a process's standard error,
    /// or where the log of a relay in this process went.
    pub(crate) fn log(&self) -> String {
        match self.host {
            Host::Process(_) => self.stderr.text(),
            Host::InProcess(_) => "(in this process: the log is in the test's output)".into(),
        }
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
                    "timed out waiting for {name}, last {last}\nmetrics:\n{}\nlog:\n{}",
                    m.feed_lines(),
                    self.log()
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
                    "timed out waiting for snapshot {session}:{seq}, last {last:?}\nmetrics:\n{}\nlog:\n{}",
                    self.metrics().feed_lines(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn collect<S: AsRef<str>>(args: &[S]) -> Vec<&str> {
    args.iter().map(|a| a.as_ref()).collect()
}

impl Drop for Relay {
    fn drop(&mut self) {
        match &mut self.host {
            Host::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
                if std::thread::panicking() {
                    eprintln!(
                        "--- tickrelay on {} stdout:\n{}--- stderr:\n{}",
                        self.addr,
                        self.stdout.text(),
                        self.stderr.text()
                    );
                }
            }
            // The graceful shutdown starts (the sender is dropped) and ends
            // on the relay's thread, without holding up the test; its
            // threads and sockets are gone within the shutdown grace.
            Host::InProcess(p) => drop(p.stop.take()),
        }
    }
}

/// A child process (a balancer, a simulator run) killed and reaped when
/// dropped.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
