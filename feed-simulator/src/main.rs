//! `feed-simulator`: publishes a synthetic market on UDP multicast in the
//! tickrelay feed format. The engine is `tickrelay::tools::sim`; this is its front
//! end: flags, progress, summary.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tickrelay::tools::sim::{SimConfig, SimSummary, Simulator, default_session, fast_forward};

/// Publishes a synthetic market on UDP multicast (loopback and TTL 0 by default).
#[derive(Parser, Debug)]
#[command(name = "feed-simulator", version)]
struct Args {
    /// Line A destination, GROUP:PORT.
    #[arg(long, default_value = "239.255.0.1:31001")]
    group: SocketAddrV4,
    /// Line B destination, GROUP:PORT (same packets, same sequence numbers).
    #[arg(long)]
    line_b: Option<SocketAddrV4>,
    /// Interface address to send multicast from.
    #[arg(long, default_value = "127.0.0.1")]
    interface: Ipv4Addr,
    /// Multicast TTL; 0 keeps packets on this host.
    #[arg(long, default_value_t = 0)]
    ttl: u32,
    /// Number of symbols.
    #[arg(long, default_value_t = 1000)]
    symbols: usize,
    /// Target quotes and trades per second (each quote's book levels come on top).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Zipf exponent of symbol activity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Stop after this many quotes and trades (book levels not counted).
    #[arg(long)]
    count: Option<u64>,
    /// Session id (10 ASCII characters at most).
    #[arg(long)]
    session: Option<String>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start a burst every this many seconds.
    #[arg(long)]
    burst_every: Option<f64>,
    /// Rate multiplier during a burst.
    #[arg(long, default_value_t = 5)]
    burst_factor: u64,
    /// Burst length in milliseconds.
    #[arg(long, default_value_t = 200)]
    burst_ms: u64,
    /// Repeat the symbol directory every this many seconds.
    #[arg(long, default_value_t = 5.0)]
    directory_every: f64,
    /// Most messages per datagram (packets also stay within 1,400 bytes).
    #[arg(long, default_value_t = 65_534)]
    messages_per_packet: u16,
    /// Fraction of packets dropped per line (0..1), to exercise gap handling.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Fraction of packets sent one packet late per line.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Fraction of packets sent twice per line.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Serve retransmission requests (unicast UDP) on this address, e.g. 127.0.0.1:31003.
    #[arg(long)]
    retransmit: Option<SocketAddrV4>,
    /// Messages the retransmission server keeps (the newest) for repair.
    #[arg(long, default_value_t = tickrelay::tools::sim::DEFAULT_HISTORY)]
    history: u64,
    /// Run the recovery loop (directory and state of every symbol, cycle
    /// after cycle) on this group, GROUP:PORT; 239.255.0.3:31003 is the
    /// documented default.
    #[arg(long)]
    recovery: Option<SocketAddrV4>,
    /// Recovery-loop messages per second.
    #[arg(long, default_value_t = tickrelay::tools::sim::DEFAULT_RECOVERY_RATE)]
    recovery_rate: u64,
    /// Open with an auction burst: every symbol's opening quote and print at once.
    #[arg(long)]
    opening_auction: bool,
    /// Record every published market message to this CSV file (docs/FEED.md).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Publish a recorded CSV session instead of a synthetic market.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Book levels per side: each quote is followed by the 'L' messages that
    /// keep a book of this depth with its top at the quote, and the recovery
    /// loop sends each book as a 'B'; 0 sends no book (at most 40).
    #[arg(long, default_value_t = tickrelay::tools::sim::DEFAULT_BOOK_DEPTH)]
    book_depth: usize,
    /// Replay speed: 1 = as recorded, N = N times faster, 0 = paced by --rate.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Simulate this many seconds of feed at once, without sockets or
    /// waiting (with --final-state and --record, to study the market).
    #[arg(long)]
    fast_forward: Option<f64>,
    /// Write the final state of every symbol (JSON) to this file at the end.
    #[arg(long)]
    final_state: Option<PathBuf>,
    /// No progress output.
    #[arg(long)]
    no_progress: bool,
}

fn permille(name: &str, f: f64) -> anyhow::Result<u32> {
    if !(0.0..=1.0).contains(&f) {
        bail!("--{name} must be between 0 and 1, got {f}");
    }
    Ok((f * 1000.0).round() as u32)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for addr in std::iter::once(args.group)
        .chain(args.line_b)
        .chain(args.recovery)
    {
        if !addr.ip().is_multicast() && !addr.ip().is_loopback() {
            bail!(
                "{addr} is neither a multicast group nor a loopback address; refusing to send there"
            );
        }
    }
    let config = SimConfig {
        line_a: args.group,
        line_b: args.line_b,
        interface: args.interface,
        ttl: args.ttl,
        symbols: args.symbols.clamp(1, 65_536),
        rate: args.rate,
        zipf: args.zipf,
        duration: args.duration.map(Duration::from_secs_f64),
        count: args.count,
        session: args.session.unwrap_or_else(default_session),
        seed: args.seed,
        burst_every: args.burst_every.map(Duration::from_secs_f64),
        burst_factor: args.burst_factor.max(1),
        burst_length: Duration::from_millis(args.burst_ms),
        directory_every: Duration::from_secs_f64(args.directory_every.max(0.1)),
        max_per_packet: args.messages_per_packet.max(1),
        loss_permille: permille("loss", args.loss)?,
        reorder_permille: permille("reorder", args.reorder)?,
        duplicate_permille: permille("duplicate", args.duplicate)?,
        retransmit: args.retransmit,
        history: args.history.max(1),
        recovery: args.recovery,
        recovery_rate: args.recovery_rate,
        opening_auction: args.opening_auction,
        record: args.record.clone(),
        replay: args.replay.clone(),
        speed: args.speed,
        book_depth: args.book_depth,
    };
    if args.recovery.is_some() && args.recovery_rate == 0 {
        bail!("--recovery-rate must be at least 1 message per second");
    }
    if !(args.speed >= 0.0 && args.speed.is_finite()) {
        bail!("--speed must be 0 or more, got {}", args.speed);
    }
    if let Some(secs) = args.fast_forward {
        if !(secs > 0.0 && secs.is_finite()) {
            bail!("--fast-forward must be a positive number of seconds, got {secs}");
        }
        let summary = fast_forward(config, Duration::from_secs_f64(secs))?;
        return finish(&summary, 0, args.final_state.as_deref());
    }
    // Its errors name the file or the socket they are about.
    let sim = Simulator::new(config.clone())?;
    let counters = sim.counters();
    let stop = Arc::new(AtomicBool::new(false));
    let engine_stop = stop.clone();
    let engine = std::thread::Builder::new()
        .name("sim".into())
        .spawn(move || sim.run(&engine_stop))?;

    // Ctrl-C: stop the engine, which then sends end-of-session.
    let signal_stop = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            signal_stop.store(true, Ordering::Relaxed);
        }
    });

    let progress = !args.no_progress;
    let tty = std::io::stderr().is_terminal();
    let bar = (progress && tty).then(|| {
        let b = indicatif_bar(args.count);
        b.set_message(format!("session {}", config.session));
        b
    });
    let start = Instant::now();
    let mut last_plain = Instant::now();
    while !engine.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        let m = counters.messages.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        if let Some(b) = &bar {
            b.set_position(m);
        } else if progress && last_plain.elapsed() >= Duration::from_secs(1) {
            last_plain = Instant::now();
            eprintln!("feed-simulator: {m} messages, {:.0} msg/s", m as f64 / secs);
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = engine
        .join()
        .map_err(|_| anyhow::anyhow!("simulator thread panicked"))?;
    let errors = counters.send_errors.load(Ordering::Relaxed);
    finish(&summary, errors, args.final_state.as_deref())
}

/// Prints the summary line and writes the final state.
fn finish(summary: &SimSummary, errors: u64, final_state: Option<&Path>) -> anyhow::Result<()> {
    println!(
        "feed-simulator: session {} sent {} messages ({} book levels) in {} packets over {:.2} s ({:.0} msg/s), last seq {}, {} send errors",
        summary.session,
        summary.messages,
        summary.book_messages,
        summary.packets,
        summary.seconds,
        summary.rate,
        summary.next_seq.saturating_sub(1),
        errors
    );
    if let Some(next) = summary.recovery_next_seq {
        println!(
            "feed-simulator: recovery loop sent {} messages",
            next.saturating_sub(1)
        );
    }
    if let Some(path) = final_state {
        let json = serde_json::to_vec_pretty(summary).context("encode final state")?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(e) = &summary.record_error {
        bail!("{e}");
    }
    Ok(())
}

fn indicatif_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {msg} {pos} msgs [{elapsed_precise}] {per_sec} {wide_bar}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
