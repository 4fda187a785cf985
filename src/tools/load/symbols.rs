//! Which symbols each client takes: the symbol directory (the server's, or
//! the simulator's tickers), each client's watchlist drawn from it, and the
//! load that offers (each symbol's share of the feed's messages).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Deserialize;
use tokio::net::TcpStream;

use super::args::{LoadArgs, SymbolChoice};
use super::conn::{Target, fetch, http_conn, target_of_url};
use crate::tools::zipf::{self, Zipf};

/// Each symbol's share of the feed's messages, as the simulator draws them.
pub(super) struct Activity {
    share: HashMap<String, f64>,
}

impl Activity {
    pub(super) fn new(dir: &[String], s: f64) -> Self {
        Activity {
            share: dir
                .iter()
                .cloned()
                .zip(zipf::shares(dir.len(), s))
                .collect(),
        }
    }

    /// Expected deliveries per feed message to one client of `symbols`.
    pub(super) fn share(&self, symbols: &[String]) -> f64 {
        if symbols.iter().any(|s| s == "*") {
            return 1.0;
        }
        symbols.iter().filter_map(|s| self.share.get(s)).sum()
    }
}

/// The symbols of client `id`.
pub(crate) fn pick(
    args: &LoadArgs,
    directory: &[String],
    zipf: Option<&Zipf>,
    id: usize,
) -> Vec<String> {
    let k = args.symbols_per_client.min(directory.len());
    let mut rng =
        SmallRng::seed_from_u64(args.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match &args.symbols {
        SymbolChoice::Fixed(list) => list.clone(),
        SymbolChoice::All => vec!["*".into()],
        SymbolChoice::Random => rand::seq::index::sample(&mut rng, directory.len(), k)
            .into_iter()
            .map(|i| directory[i].clone())
            .collect(),
        SymbolChoice::Zipf => {
            let zipf = zipf.expect("zipf sampler built");
            let mut chosen: Vec<usize> = Vec::with_capacity(k);
            let mut tries = 0;
            while chosen.len() < k && tries < 64 * k {
                tries += 1;
                let i = zipf.sample(&mut rng);
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
            }
            // A steep Zipf over few symbols may not find K distinct ones
            // quickly: fill with the busiest not yet chosen.
            let mut i = 0;
            while chosen.len() < k {
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
                i += 1;
            }
            chosen.into_iter().map(|i| directory[i].clone()).collect()
        }
    }
}

#[derive(Deserialize)]
struct Directory {
    symbols: Vec<DirectoryEntry>,
}

#[derive(Deserialize)]
struct DirectoryEntry {
    symbol: String,
}

/// The symbol directory, in locate order (the simulator's activity order).
pub(crate) async fn directory(args: &LoadArgs, target: &Target) -> anyhow::Result<Vec<String>> {
    if let Some(n) = args
        .directory
        .as_deref()
        .and_then(|d| d.strip_prefix("sim:"))
    {
        let n: usize = n.parse().context("--directory sim:N needs a number")?;
        return Ok(crate::tools::sim::tickers(n)
            .into_iter()
            .map(|(s, _)| s)
            .collect());
    }
    let (base, path) = match args.directory.as_deref() {
        Some(url) => {
            let t = target_of_url(url)?;
            (t.0, t.1)
        }
        None => (target.clone(), "/v1/symbols".to_owned()),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let stream = TcpStream::connect(base.addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut sender = http_conn(stream).await?;
            let req = super::conn::get(
                &Target {
                    bearer: target.bearer.clone(),
                    ..base.clone()
                },
                &path,
                None,
            );
            let (status, _, body) = fetch(&mut sender, req, "directory").await?;
            if status != 200 {
                return Err(format!("HTTP {status}"));
            }
            serde_json::from_slice::<Directory>(&body).map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(d) if !d.symbols.is_empty() => {
                return Ok(d.symbols.into_iter().map(|e| e.symbol).collect());
            }
            Ok(_) if Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            Ok(_) => bail!("the directory at {} {path} is empty", base.authority),
            Err(e) => bail!(
                "cannot read the directory at {} {path}: {e}",
                base.authority
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::load::args::{LoadTransport, parse_choice};

    #[test]
    fn symbol_choices() {
        let dir: Vec<String> = (0..100).map(|i| format!("S{i}")).collect();
        let mut args = LoadArgs {
            url: "http://127.0.0.1:1".into(),
            transport: LoadTransport::Ws,
            clients: 1,
            symbols_per_client: 10,
            symbols: SymbolChoice::Zipf,
            zipf: 1.0,
            directory: None,
            ramp: 0.0,
            duration: 1.0,
            warmup: 0.0,
            source_ips: 1,
            idle: false,
            mode: None,
            max_hz: None,
            batch_ms: None,
            delta: false,
            deflate: false,
            chart: false,
            books: 0,
            depth: 10,
            books_only: false,
            poll_interval_ms: 1000,
            poll_timeout_ms: 1000,
            threads: None,
            server_pid: vec![],
            nchan_path: "/sub/".into(),
            seed: 1,
            token: None,
            json: false,
            no_progress: true,
        };
        let z = Zipf::new(dir.len(), 1.0);
        let mut counts = vec![0usize; dir.len()];
        for id in 0..500 {
            let picked = pick(&args, &dir, Some(&z), id);
            assert_eq!(picked.len(), 10);
            let mut uniq = picked.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), 10, "distinct symbols");
            for s in picked {
                counts[s[1..].parse::<usize>().unwrap()] += 1;
            }
        }
        assert!(counts[0] > counts[99] * 2, "busy symbols are popular");
        args.symbols = SymbolChoice::Random;
        assert_eq!(pick(&args, &dir, None, 3).len(), 10);
        args.symbols = parse_choice("aapl, msft").unwrap();
        assert_eq!(pick(&args, &dir, None, 3), vec!["AAPL", "MSFT"]);
        args.symbols_per_client = 1000;
        args.symbols = SymbolChoice::Zipf;
        assert_eq!(pick(&args, &dir, Some(&z), 0).len(), 100);
    }
}
