//! The `tickrelay` command: `serve`, `bridge`, `demo`, `load`, `lab`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tickrelay::config::{Config, LogFormat, Settings};
use tickrelay::server;
use tickrelay::sim::{SimConfig, Simulator};

#[derive(Parser)]
#[command(
    name = "tickrelay",
    version,
    about = "A market-data relay: UDP multicast in; WebSocket, SSE, long and short polling out."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay, joining the configured feed.
    Serve {
        /// TOML settings file (keys are the flag names with underscores).
        #[arg(long, env = "TICKRELAY_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Publish the sequenced, gap-repaired feed into a NATS JetStream stream
    /// (`--nats URL --stream NAME`), serving like `serve` besides.
    Bridge {
        /// TOML settings file.
        #[arg(long, env = "TICKRELAY_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Run the relay with an in-process feed simulator on loopback multicast.
    Demo {
        /// TOML settings file.
        #[arg(long, env = "TICKRELAY_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
        /// Simulated symbols.
        #[arg(long, default_value_t = 200)]
        symbols: usize,
        /// Simulated messages per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Zipf exponent of symbol activity.
        #[arg(long, default_value_t = 1.0)]
        zipf: f64,
        /// Run the lab (`tickrelay lab`) against this demo, print its table, and exit.
        #[arg(long)]
        lab: bool,
        #[command(flatten)]
        lab_args: DemoLab,
    },
    /// Open many subscribers against a relay (or nchan) and measure delivery.
    Load(Box<tickrelay::load::LoadArgs>),
    /// Measure every transport on the same watchlists against a running relay.
    Lab(Box<tickrelay::lab::LabArgs>),
}

/// The lab's settings under `demo --lab`.
#[derive(clap::Args)]
struct DemoLab {
    /// Seconds measured per transport (`--lab`).
    #[arg(long, default_value_t = 5.0)]
    lab_duration: f64,
    /// Clients per transport (`--lab`).
    #[arg(long, default_value_t = 20)]
    lab_clients: usize,
    /// Symbols per client (`--lab`).
    #[arg(long, default_value_t = 10)]
    lab_symbols_per_client: usize,
    /// Print the lab's table as JSON (`--lab`).
    #[arg(long)]
    lab_json: bool,
    /// Write the lab's table and plots to this HTML file (`--lab`).
    #[arg(long)]
    lab_html: Option<PathBuf>,
}

/// `demo --lab`: the demo (relay and simulator in one process) runs as a
/// child of this one, so the lab's clients, here, are not counted in the
/// relay's CPU time and memory; then the lab runs against it, and both stop.
fn demo_lab(http_given: bool, lab: DemoLab) -> anyhow::Result<()> {
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
    let result = tickrelay::lab::run(tickrelay::lab::LabArgs {
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

fn load(config: Option<PathBuf>, settings: Settings) -> anyhow::Result<Config> {
    let file = match &config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    Ok(settings.over(file).validate()?)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Load(args) = cli.command {
        // The load generator sizes its own runtime (`--threads`).
        return tickrelay::load::run(*args).map(drop);
    }
    if let Command::Lab(args) = cli.command {
        return tickrelay::lab::run(*args).map(drop);
    }
    if let Command::Demo {
        lab: true,
        settings,
        lab_args,
        ..
    } = cli.command
    {
        let http_given = settings.http.is_some();
        return demo_lab(http_given, lab_args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve { config, settings } => {
            let config = load(config, settings)?;
            init_logs(config.log_format);
            rt.block_on(async move {
                let listener = server::bind(&config).await?;
                let shutdown = server::shutdown_signal();
                let running = server::start(listener, config).await?;
                // Printed once the feed is joined: scripts may start producing.
                println!("tickrelay listening on http://{}", running.local_addr());
                running.wait(shutdown).await
            })
        }
        Command::Bridge { config, settings } => {
            let mut config = load(config, settings)?;
            init_logs(config.log_format);
            // Here `nats` names where to publish, not a line to read.
            let target = config.feed.nats.take().context(
                "invalid setting `nats` (--nats, TICKRELAY_NATS): bridge needs --nats URL --stream NAME",
            )?;
            if config.feed.line_a.is_none() && config.feed.line_b.is_none() {
                anyhow::bail!(
                    "invalid setting `feed_a` (--feed-a, TICKRELAY_FEED_A): bridge needs a multicast feed line"
                );
            }
            rt.block_on(async move {
                let listener = server::bind(&config).await?;
                tracing::info!(nats = %target.url, stream = %target.stream, "bridge publishing");
                let running = server::start_with(listener, config, Some(target)).await?;
                println!("tickrelay listening on http://{}", running.local_addr());
                running.wait(server::shutdown_signal()).await
            })
        }
        Command::Demo {
            config,
            settings,
            symbols,
            rate,
            zipf,
            ..
        } => {
            let mut config = load(config, settings)?;
            init_logs(config.log_format);
            let line_a = config.feed.line_a.context("demo needs feed line A")?;
            // The demo runs the recovery loop: a relay restarted against a
            // running market is whole at once (README "Recovery").
            let recovery = *config
                .feed
                .recovery
                .get_or_insert(tickrelay::sim::DEFAULT_RECOVERY);
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
                if config.feed.retransmit.is_none() {
                    if let Some(std::net::SocketAddr::V4(addr)) = engine.retransmit_addr() {
                        config.feed.retransmit = Some(addr);
                    }
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
                    stop_on_signal.store(true, std::sync::atomic::Ordering::Relaxed);
                };
                let result = running.wait(shutdown).await;
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = sim_thread.join();
                result
            })
        }
        Command::Load(_) | Command::Lab(_) => unreachable!("handled above"),
    }
}
