//! The `tickrelay` command: `serve`, `bridge`, `demo`, `load`, `lab`, `usage`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tickrelay::config::{Config, LogFormat, Settings};
use tickrelay::server;
use tickrelay::tools::demo::{self, DemoLab, DemoMarket};

/// jemalloc rather than the C library's allocator: its size classes carry
/// no per-block header and hand out 128-byte-aligned blocks (tokio's task
/// cells and I/O registrations) without splitting off fragments, and a
/// connection's short-lived buffers do not interleave with what it keeps.
/// An idle connection costs 190–350 bytes less (docs/ARCHITECTURE.md,
/// "What an idle connection holds, and the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        #[command(flatten)]
        market: DemoMarket,
        /// Run the lab (`tickrelay lab`) against this demo, print its table, and exit.
        #[arg(long)]
        lab: bool,
        #[command(flatten)]
        lab_args: DemoLab,
    },
    /// Open many subscribers against a relay (or nchan) and measure delivery.
    Load(Box<tickrelay::tools::load::LoadArgs>),
    /// Measure every transport on the same watchlists against a running relay.
    Lab(Box<tickrelay::tools::lab::LabArgs>),
    /// Mint a user's token (HS256) with the relay's claims, for tests and demos.
    Token(Box<tickrelay::tools::token::TokenArgs>),
    /// Report a month of usage from one or more usage databases: users by
    /// class × real time/delayed, and one row per user.
    Usage(tickrelay::usage::UsageArgs),
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
        return tickrelay::tools::load::run(*args).map(drop);
    }
    if let Command::Token(args) = &cli.command {
        println!("{}", tickrelay::tools::token::mint(args)?);
        return Ok(());
    }
    if let Command::Lab(args) = cli.command {
        return tickrelay::tools::lab::run(*args).map(drop);
    }
    if let Command::Usage(args) = &cli.command {
        return tickrelay::usage::run(args);
    }
    if let Command::Demo {
        lab: true,
        settings,
        lab_args,
        ..
    } = cli.command
    {
        let http_given = settings.http.is_some();
        return demo::run_lab(http_given, lab_args);
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
            market,
            ..
        } => {
            let config = load(config, settings)?;
            init_logs(config.log_format);
            demo::run(&rt, config, market)
        }
        Command::Load(_) | Command::Lab(_) | Command::Token(_) | Command::Usage(_) => {
            unreachable!("handled above")
        }
    }
}
