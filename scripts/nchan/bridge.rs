//! The nchan bridge for the side-by-side benchmark (scripts/bench-e2e.sh).
//!
//! Reads the feed exactly as the relay does — the same ingest thread,
//! sequencer and table from the tickrelay library — and publishes each
//! changed quote, encoded as the same JSON object the relay sends, to its
//! symbol's nchan channel (`POST /pub/SYMBOL`). Changes are deduplicated per
//! ingest batch as the relay's hub does, so both servers are offered the same
//! changes. Publishing is spread over a few keep-alive connections, sharded
//! by symbol so each channel keeps feed order.
//!
//! Build: `cargo build --release --example nchan-bridge`.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Quotes published, for the progress line.
static PUBLISHED: AtomicU64 = AtomicU64::new(0);

use anyhow::Context;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tickrelay::config::Settings;
use tickrelay::fanout::Encoded;
use tickrelay::metrics::Metrics;
use tickrelay::table::ChangeListener;
use tickrelay::table::Table;
use tickrelay::wire::{Locate, Session};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Publishes the feed's changed quotes to nchan channels, one per symbol.
#[derive(Parser)]
struct Args {
    /// Feed line A, GROUP:PORT.
    #[arg(long)]
    feed_a: SocketAddrV4,
    /// nchan's address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:18600")]
    nchan: String,
    /// Publisher location prefix.
    #[arg(long, default_value = "/pub/")]
    pub_path: String,
    /// Keep-alive publishing connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
}

/// Hands each batch's changed locates to the publisher shards.
struct Bridge {
    shards: Vec<mpsc::UnboundedSender<Locate>>,
    batch: Vec<Locate>,
    seen: Vec<bool>,
}

impl ChangeListener for Bridge {
    fn changed(&mut self, locate: Locate, _seq: u64) {
        let i = usize::from(locate);
        if !self.seen[i] {
            self.seen[i] = true;
            self.batch.push(locate);
        }
    }

    fn batch_done(&mut self, _last_seq: u64) {
        for l in self.batch.drain(..) {
            self.seen[usize::from(l)] = false;
            let _ = self.shards[usize::from(l) % self.shards.len()].send(l);
        }
    }

    fn session_reset(&mut self, _session: Session) {}
}

async fn publisher(
    args: Arc<Args>,
    table: Arc<Table>,
    mut rx: mpsc::UnboundedReceiver<Locate>,
) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(&args.nchan)
        .await
        .with_context(|| format!("connect to nchan at {}", args.nchan))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    while let Some(locate) = rx.recv().await {
        // The newest state, as the relay's writers read it.
        let Some(quote) = table.quote(locate) else {
            continue;
        };
        let path = format!("{}{}", args.pub_path, quote.symbol);
        let body = Encoded::new(locate, quote, 0).json;
        let req = Request::post(path)
            .header(hyper::header::HOST, &args.nchan)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if !status.is_success() {
            anyhow::bail!("nchan answered {status} to a publish");
        }
        PUBLISHED.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let config = Settings {
        feed_a: Some(args.feed_a.to_string()),
        ..Settings::default()
    }
    .validate()?;
    let table = Arc::new(Table::new());
    let metrics = Metrics::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut shards = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..args.connections.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            shards.push(tx);
            tasks.push(tokio::spawn(publisher(args.clone(), table.clone(), rx)));
        }
        let bridge = Bridge {
            shards,
            batch: Vec::new(),
            seen: vec![false; usize::from(u16::MAX) + 1],
        };
        let cancel = CancellationToken::new();
        let feed = tickrelay::feed::start(
            config.feed,
            table.clone(),
            metrics.feed.clone(),
            bridge,
            cancel.clone(),
        )?;
        println!("nchan-bridge: feed {} -> nchan {}", args.feed_a, args.nchan);
        tokio::spawn(async {
            let mut last = 0;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let n = PUBLISHED.load(Ordering::Relaxed);
                eprintln!("nchan-bridge: {} quotes/s published", (n - last) / 5);
                last = n;
            }
        });
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            r = futures_util::future::select_all(tasks) => {
                if let (Ok(Err(e)), ..) = r { eprintln!("nchan-bridge: {e:#}"); }
            }
        }
        cancel.cancel();
        drop(feed);
        anyhow::Ok(())
    })
}
