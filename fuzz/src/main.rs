//! `tickrelay-fuzz`: runs the fuzz targets on the stable toolchain.
//!
//! ```sh
//! cargo run --release -p tickrelay-fuzz -- all --runs 10000000 --seconds 600
//! cargo run --release -p tickrelay-fuzz -- packet --seconds 60 --seed 7
//! cargo run --release -p tickrelay-fuzz -- sequencer --replay fuzz/artifacts/sequencer/crash-…
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tickrelay_fuzz::engine::{Budget, Dirs, fuzz};
use tickrelay_fuzz::targets;

/// Fuzz tickrelay's parsers and state machines.
#[derive(Parser, Debug)]
struct Args {
    /// A target (packet, message, sequencer, http_head, client_op) or `all`.
    target: String,
    /// Most executions per target.
    #[arg(long, default_value_t = 10_000_000)]
    runs: u64,
    /// Most seconds per target.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Seed of the input stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory holding one corpus directory per target.
    #[arg(long, default_value = "fuzz/corpus")]
    corpus: PathBuf,
    /// Directory crashing inputs are written to (one directory per target).
    #[arg(long, default_value = "fuzz/artifacts")]
    artifacts: PathBuf,
    /// Write inputs with new signatures into the corpus.
    #[arg(long)]
    save_corpus: bool,
    /// Run one input file through the target and report, instead of fuzzing.
    #[arg(long)]
    replay: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let names: Vec<&str> = if args.target == "all" {
        vec!["packet", "message", "sequencer", "http_head", "client_op"]
    } else {
        vec![args.target.as_str()]
    };
    let mut crashed = false;
    for name in names {
        let Some(mut target) = targets::by_name(name) else {
            bail!("no target `{name}`");
        };
        if let Some(path) = &args.replay {
            let input =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let sig = target.run(&input);
            println!(
                "{name}: ran {} bytes, signature {sig:016x}, no panic",
                input.len()
            );
            continue;
        }
        let budget = Budget {
            runs: args.runs,
            time: Duration::from_secs_f64(args.seconds),
            seed: args.seed,
        };
        let dirs = Dirs {
            corpus: Some(args.corpus.join(name)),
            artifacts: Some(args.artifacts.join(name)),
            save_corpus: args.save_corpus,
        };
        let report = fuzz(target.as_mut(), &budget, &dirs);
        println!("{report}");
        for c in &report.crashes {
            crashed = true;
            println!("  crash: {}", c.message);
            println!("  input: {:02x?}", &c.input[..c.input.len().min(256)]);
            if let Some(p) = &c.saved {
                println!("  saved: {}", p.display());
            }
        }
    }
    if crashed {
        bail!("crashes found");
    }
    Ok(())
}
