//! The run loop: check the flags, ramp the clients up, warm up, measure
//! the window, and gather the shards into a [`Report`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::args::{LoadArgs, LoadTransport, SymbolChoice};
use super::client::client;
use super::conn::{CONNECT_TIMEOUT, target};
use super::report::{Latency, Probe, Report, si, text_report};
use super::stats::{MAX_LATENCY_US, SHARDS, Shard, Shared};
use super::symbols::{Activity, directory, pick};
use crate::tools::tap::Tap;
use crate::tools::zipf::Zipf;

/// Runs the load described by `args` and prints the report (text, or JSON
/// with `--json`). Fails when no client could connect.
pub fn run(args: LoadArgs) -> anyhow::Result<Report> {
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // One core: a current-thread runtime, no cross-thread wake-ups.
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("load")
            .enable_all()
            .build()?
    };
    let report = rt.block_on(drive(args.clone()))?;
    // Dropping the runtime closes every client socket at once.
    rt.shutdown_timeout(Duration::from_secs(2));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text_report(&report));
    }
    if report.connected == 0 {
        let why = report
            .errors
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| format!("{k} ({n})"))
            .unwrap_or_else(|| "no answer".into());
        bail!("no client connected: {why}");
    }
    Ok(report)
}

async fn drive(args: LoadArgs) -> anyhow::Result<Report> {
    drive_tapped(args, None).await
}

/// Runs one load on the current runtime; with a [`Tap`], counts each
/// client's socket bytes and notes every quote it receives (the lab).
pub(crate) async fn drive_tapped(args: LoadArgs, tap: Option<Arc<Tap>>) -> anyhow::Result<Report> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let mut target = target(&args.url)?;
    target.bearer = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let needs_symbols = !matches!(args.symbols, SymbolChoice::Fixed(_) | SymbolChoice::All)
        && args.symbols_per_client > 0;
    if args.symbols_per_client == 0
        && !matches!(args.transport, LoadTransport::Ws | LoadTransport::WsMsgpack)
        && !matches!(args.symbols, SymbolChoice::Fixed(_) | SymbolChoice::All)
    {
        bail!("--symbols-per-client 0 (connect only) works with ws and ws-msgpack only");
    }
    if matches!(args.symbols, SymbolChoice::All)
        && !matches!(
            args.transport,
            LoadTransport::Ws | LoadTransport::WsMsgpack | LoadTransport::Sse
        )
    {
        bail!("--symbols '*' works with ws, ws-msgpack and sse only");
    }
    if args.chart && args.transport != LoadTransport::Ws {
        bail!("--chart works with ws only");
    }
    if args.books > 0 {
        if !matches!(args.transport, LoadTransport::Ws | LoadTransport::WsMsgpack) {
            bail!("--books works with ws and ws-msgpack only");
        }
        if !(1..=50).contains(&args.depth) {
            bail!("--depth must be from 1 to 50");
        }
        let drawn = matches!(args.symbols, SymbolChoice::Zipf | SymbolChoice::Random);
        if matches!(args.symbols, SymbolChoice::All)
            || (drawn && args.books > args.symbols_per_client)
        {
            bail!(
                "--books N takes the first N of each client's symbols: at most --symbols-per-client, not '*'"
            );
        }
    }
    if args.transport.is_nchan() && args.symbols_per_client > 255 {
        bail!("nchan multiplexes at most 255 channels per subscriber");
    }
    let dir = if needs_symbols || args.directory.is_some() {
        directory(&args, &target).await?
    } else {
        Vec::new()
    };
    let zipf = matches!(args.symbols, SymbolChoice::Zipf).then(|| Zipf::new(dir.len(), args.zipf));
    let activity = Activity::new(&dir, args.zipf);
    let mut offered = 0.0;
    let shared = Arc::new(Shared {
        target,
        shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
        errors: Mutex::new(BTreeMap::new()),
        closes: Mutex::new(BTreeMap::new()),
        open: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        settled: AtomicUsize::new(0),
        cancel: CancellationToken::new(),
        args: args.clone(),
        tap: tap.clone(),
    });
    let mut server = (!args.server_pid.is_empty()).then(|| Probe::new(args.server_pid.clone()));
    let mut own = Probe::new(vec![std::process::id()]);

    let tty = std::io::stderr().is_terminal();
    let bar = if tty && !args.no_progress {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let plain = !tty && !args.no_progress && !args.json;
    let status = |phase: &str, rate: Option<(f64, f64)>| {
        let s = &shared;
        let mut msg = format!(
            "{phase}: {}/{} clients ready, {} open",
            s.ready.load(Ordering::Relaxed),
            args.clients,
            s.open.load(Ordering::Relaxed)
        );
        if let Some((q, f)) = rate {
            let _ = write!(msg, " | {} quotes/s, {} frames/s", si(q), si(f));
        }
        let errors: u64 = s.errors.lock().values().sum();
        let closes: u64 = s.closes.lock().values().sum();
        if errors + closes > 0 {
            let _ = write!(msg, " | {errors} errors, {closes} closed");
        }
        msg
    };

    // Ramp.
    let ramp_start = Instant::now();
    let mut tick = Instant::now();
    for id in 0..args.clients {
        if args.ramp > 0.0 {
            let due = ramp_start + Duration::from_secs_f64(id as f64 / args.ramp);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let symbols = pick(&args, &dir, zipf.as_ref(), id);
        offered += activity.share(&symbols);
        tokio::spawn(client(shared.clone(), id, symbols));
        if tick.elapsed() >= Duration::from_millis(250) {
            tick = Instant::now();
            bar.set_message(status("ramp", None));
        }
    }
    // Every client settles (ready or failed) or the setup time runs out.
    let settle_by = Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(5);
    while shared.settled.load(Ordering::Relaxed) < args.clients && Instant::now() < settle_by {
        bar.set_message(status("ramp", None));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    if plain {
        eprintln!("load: {} in {ramp_s:.1} s", status("ramp done", None));
    }
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup.max(0.0));
    while Instant::now() < warmup_end {
        bar.set_message(status("warm-up", None));
        tokio::time::sleep(Duration::from_millis(100).min(warmup_end - Instant::now())).await;
    }

    // The measured window.
    for s in shared.shards.iter() {
        s.lock().reset();
    }
    let connected = shared.ready.load(Ordering::Relaxed);
    if let Some(p) = &mut server {
        p.start();
    }
    own.start();
    if let Some(tap) = &tap {
        tap.start_window();
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration.max(0.0));
    let (mut last_q, mut last_f, mut last_t) = (0u64, 0u64, start);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        let (q, f, _) = shared.totals();
        let dt = last_t.elapsed().as_secs_f64().max(1e-9);
        let rate = ((q - last_q) as f64 / dt, (f - last_f) as f64 / dt);
        (last_q, last_f, last_t) = (q, f, Instant::now());
        let msg = status("measure", (!args.idle).then_some(rate));
        bar.set_message(msg.clone());
        if plain {
            eprintln!("load: {msg}");
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(tap) = &tap {
        tap.end_window();
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let (mut quotes, mut frames, mut bytes, mut snapshot_quotes, mut requests) = (0, 0, 0, 0, 0);
    let mut book_frames = 0;
    for s in shared.shards.iter() {
        let s = s.lock();
        hist.add(&s.hist)?;
        quotes += s.quotes;
        frames += s.frames;
        bytes += s.bytes;
        snapshot_quotes += s.snapshot_quotes;
        requests += s.requests;
        book_frames += s.book_frames;
    }
    let open_at_end = shared.open.load(Ordering::Relaxed);
    let server = server.map(|p| p.finish(quotes, connected));
    let load = own.finish(quotes, connected);
    shared.cancel.cancel();
    bar.finish_and_clear();

    let latency = if hist.is_empty() {
        Latency::default()
    } else {
        Latency {
            count: hist.len(),
            mean: (hist.mean() * 10.0).round() / 10.0,
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        }
    };
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    Ok(Report {
        transport: args.transport.as_str().into(),
        url: args.url.clone(),
        clients: args.clients,
        connected,
        open_at_end,
        symbols_per_client: args.symbols_per_client,
        offered_per_feed_message: offered,
        ramp_s,
        seconds,
        quotes,
        quotes_per_s: per_s(quotes),
        frames,
        frames_per_s: per_s(frames),
        bytes,
        bytes_per_s: per_s(bytes),
        requests,
        snapshot_quotes,
        book_frames,
        book_frames_per_s: per_s(book_frames),
        deliveries_per_server_cpu_s: server
            .as_ref()
            .filter(|c| c.cpu_s > 0.0)
            .map(|c| (quotes + book_frames) as f64 / c.cpu_s),
        latency_us: latency,
        errors: shared.errors.lock().clone(),
        closes: shared.closes.lock().clone(),
        load,
        server,
    })
}
