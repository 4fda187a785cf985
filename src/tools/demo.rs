//! `tickrelay demo`: the relay and the market simulator in one process on
//! loopback multicast (TTL 0), with the recovery loop and a retransmission
//! server, so a newcomer sees the trading page live with one command; and
//! `demo --lab`, the demo measured by the lab.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::config::Config;
use crate::server;
use crate::tools::lab::{self, LabArgs};
use crate::tools::sim::{self, SimConfig, Simulator};

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
