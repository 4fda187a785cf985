//! `tickrelay demo`: the relay and the market simulator in one process on
//! loopback multicast (TTL 0), with the recovery loop and a retransmission
//! server, so a newcomer sees the trading page live with one command; and
//! `demo --lab`, the demo measured by the lab.
//!
//! The demo has users: a secret generated for the run (in a directory of
//! its own, removed at exit) signs two demo users' tokens — real time, and
//! 15-minute delayed — which the page offers at `/v1/demo/users`; a client
//! without a token is still let in, as before.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::config::{Config, DemoUsers};
use crate::server;
use crate::tools::lab::{self, LabArgs};
use crate::tools::sim::{self, SimConfig, Simulator};
use crate::tools::token::{TokenArgs, mint};

/// The simulated market of `tickrelay demo`.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoMarket {
    /// Simulated symbols.
    #[arg(long, default_value_t = 200)]
    pub symbols: usize,
    /// Simulated messages per second.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// Zipf exponent of symbol activity.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
}

/// The lab's settings under `demo --lab`.
#[derive(clap::Args)]
pub struct DemoLab {
    /// Seconds measured per transport (`--lab`).
    #[arg(long, default_value_t = 5.0)]
    pub lab_duration: f64,
    /// Clients per transport (`--lab`).
    #[arg(long, default_value_t = 20)]
    pub lab_clients: usize,
    /// Symbols per client (`--lab`).
    #[arg(long, default_value_t = 10)]
    pub lab_symbols_per_client: usize,
    /// Print the lab's table as JSON (`--lab`).
    #[arg(long)]
    pub lab_json: bool,
    /// Write the lab's table and plots to this HTML file (`--lab`).
    #[arg(long)]
    pub lab_html: Option<PathBuf>,
}

/// `demo --lab`: the demo (relay and simulator in one process) runs as a
/// child of this one, so the lab's clients, here, are not counted in the
/// relay's CPU time and memory; then the lab runs against it, and both stop.
pub fn run_lab(http_given: bool, lab: DemoLab) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut forwarded = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--lab" || a == "--lab-json" || (a.starts_with("--lab-") && a.contains('=')) {
            continue;
        }
        if a.starts_with("--lab-") {
            args.next();
            continue;
        }
        forwarded.push(a);
    }
    if !http_given {
        forwarded.extend(["--http".to_owned(), "127.0.0.1:0".to_owned()]);
    }
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(&forwarded)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start the demo")?;
    let pid = child.id();
    let stop = |child: &mut std::process::Child| {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    let stdout = child.stdout.take().context("demo stdout")?;
    // Echo the demo's lines to stderr (stdout is the lab's table), and keep
    // draining them so the demo never writes into a closed pipe.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            if let Some(u) = line.strip_prefix("tickrelay listening on ") {
                let _ = url_tx.send(u.trim().to_owned());
            }
        }
    });
    let url = url_rx.recv_timeout(std::time::Duration::from_secs(30)).ok();
    let Some(url) = url else {
        stop(&mut child);
        anyhow::bail!("the demo exited before listening");
    };
    let result = lab::run(LabArgs {
        url,
        clients: lab.lab_clients,
        symbols_per_client: lab.lab_symbols_per_client,
        duration: lab.lab_duration,
        server_pid: Some(pid),
        poll_interval_ms: 1_000,
        transports: Vec::new(),
        seed: 1,
        json: lab.lab_json,
        html: lab.lab_html,
        no_progress: false,
    });
    stop(&mut child);
    result.map(drop)
}

/// Runs the relay with the simulator in-process until Ctrl-C or SIGTERM.
pub fn run(
    rt: &tokio::runtime::Runtime,
    mut config: Config,
    market: DemoMarket,
) -> anyhow::Result<()> {
    let DemoMarket {
        symbols,
        rate,
        zipf,
    } = market;
    // Removes the generated secret when the demo ends.
    let users_dir = add_users(&mut config)?;
    let line_a = config.feed.line_a.context("demo needs feed line A")?;
    // The demo runs the recovery loop: a relay restarted against a
    // running market is whole at once (README "Recovery").
    let recovery = *config.feed.recovery.get_or_insert(sim::DEFAULT_RECOVERY);
    let sim = SimConfig {
        line_a,
        line_b: config.feed.line_b,
        interface: config.feed.interface,
        symbols,
        rate,
        zipf,
        // The demo's simulator repairs gaps: a retransmission server
        // on an ephemeral loopback port, which the relay is told.
        retransmit: Some(std::net::SocketAddrV4::new(config.feed.interface, 0)),
        recovery: Some(recovery),
        // A loop of the demo's few hundred symbols takes well under
        // a second at this rate.
        recovery_rate: 5_000,
        ..SimConfig::default()
    };
    rt.block_on(async move {
            let listener = server::bind(&config).await?;
            // The relay joins the feed first, so the simulator's opening
            // directory is not missed.
            let engine = Simulator::new(sim).context("cannot open the simulator socket")?;
            if config.feed.retransmit.is_none()
                && let Some(std::net::SocketAddr::V4(addr)) = engine.retransmit_addr() {
                    config.feed.retransmit = Some(addr);
                }
            let signal = server::shutdown_signal();
            let running = server::start(listener, config).await?;
            let url = format!("http://{}", running.local_addr());
            let stop = Arc::new(AtomicBool::new(false));
            let sim_stop = stop.clone();
            let sim_thread = std::thread::Builder::new()
                .name("tickrelay-sim".into())
                .spawn(move || engine.run(&sim_stop))?;
            println!("tickrelay demo: {symbols} symbols at {rate} msg/s on {line_a}, recovery loop on {recovery} (loopback, TTL 0)");
            println!("tickrelay listening on {url}");
            if let Some(dir) = &users_dir {
                // The path of the secret, never a token.
                println!(
                    "demo users on the page: real time, and 15-min delayed; more with `tickrelay token --secret-file {}`",
                    dir.secret().display()
                );
            }
            println!("open {url}/ for the trading page; Ctrl-C to stop");
            let stop_on_signal = stop.clone();
            let shutdown = async move {
                signal.await;
                stop_on_signal.store(true, Ordering::Relaxed);
            };
            let result = running.wait(shutdown).await;
            stop.store(true, Ordering::Relaxed);
            let _ = sim_thread.join();
            result
        })
}

/// The demo's users: name, the page's label, `delay_ms` as `tickrelay
/// token --delay` takes it, and class. Every symbol, every channel.
const DEMO_USERS: [(&str, &str, &str, &str); 2] = [
    ("realtime", "Real time", "0", "pro"),
    ("delayed", "15-min delayed", "15m", "nonpro"),
];

/// How long the demo users' tokens live: longer than any demo runs.
const DEMO_TTL: &str = "30d";

/// The directory of the secret generated for this run, removed when the
/// demo ends.
struct UsersDir(PathBuf);

impl UsersDir {
    /// The HS256 secret's file (the relay's `jwt_secret_file`).
    fn secret(&self) -> PathBuf {
        self.0.join("jwt-secret")
    }
}

impl Drop for UsersDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Generates a secret (32 random bytes, hex) in a fresh directory only this
/// user can read, verifies users' tokens with it, signs the demo users'
/// tokens and hands them to the relay for `/v1/demo/users`. Clients without
/// a token stay welcome (unless a shared `token` is set). Nothing when the
/// demo was given keys of its own (`jwt_*` settings).
fn add_users(config: &mut Config) -> anyhow::Result<Option<UsersDir>> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if config.access.jwt.enabled() {
        return Ok(None);
    }
    let mut random = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
    let tag: String = random[..4].iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("tickrelay-demo-{}-{tag}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = UsersDir(dir);
    let secret = dir.secret();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .with_context(|| format!("cannot write {}", secret.display()))?;
    let users = DEMO_USERS
        .iter()
        .map(|&(name, label, delay, class)| {
            let token = mint(&TokenArgs {
                secret_file: secret.clone(),
                sub: format!("demo-{name}"),
                symbols: "*".into(),
                channels: None,
                delay: delay.into(),
                class: class.into(),
                ttl: DEMO_TTL.into(),
                max_symbols: None,
                max_connections: None,
                max_hz: None,
                issuer: config.access.jwt.issuer.clone(),
                audience: config.access.jwt.audience.clone(),
            })?;
            Ok(serde_json::json!({ "name": name, "label": label, "token": token }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    config.access.jwt.secret_file = Some(secret);
    config.access.anonymous = config.access.token.is_none();
    config.demo_users = Some(DemoUsers(Arc::from(
        serde_json::json!({ "users": users }).to_string(),
    )));
    Ok(Some(dir))
}
