//! `tickrelay-fuzz`: runs the fuzz targets on the stable toolchain.
//!
//! ```sh
//! cargo run --release -p tickrelay-fuzz -- all --runs 10000000 --seconds 600
//! cargo run --release -p tickrelay-fuzz -- packet --seconds 60 --seed 7
//! cargo run --release -p tickrelay-fuzz -- sequencer --replay fuzz/artifacts/sequencer/crash-…
//! cargo run --release -p tickrelay-fuzz -- http_head --minimise
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tickrelay_fuzz::engine::{Budget, Dirs, Target, fnv, fuzz, minimise, read_corpus, save};
use tickrelay_fuzz::targets;

/// Fuzz tickrelay's parsers and state machines.
#[derive(Parser, Debug)]
struct Args {
    /// A target (packet, message, sequencer, http_head, client_op, book, book_frame, deflate) or `all`.
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
    /// Instead of fuzzing, shrink the target's corpus directory to the
    /// smallest input per signature (each shrunk further), replacing its
    /// files. Named seeds (any file not named by its hash) are kept as they
    /// are.
    #[arg(long)]
    minimise: bool,
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
        if args.minimise {
            minimise_dir(target.as_mut(), &args.corpus.join(name))?;
            continue;
        }
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

/// `--minimise`: rewrites `dir`'s hash-named files as the minimised corpus.
fn minimise_dir(target: &mut dyn Target, dir: &std::path::Path) -> anyhow::Result<()> {
    let hashed = |p: &std::path::Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let before = read_corpus(dir);
    let kept = minimise(target, before.clone());
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if hashed(&path) {
            std::fs::remove_file(&path)?;
        }
    }
    // Named seeds stay; a minimised input equal to one of them is not repeated.
    let named: std::collections::HashSet<u64> = read_corpus(dir).iter().map(|i| fnv(i)).collect();
    let mut written = 0;
    for input in &kept {
        if !named.contains(&fnv(input)) {
            save(dir, "", input)?;
            written += 1;
        }
    }
    println!(
        "{}: {} inputs, {} signatures, {written} files written beside {} named seeds ({} bytes in all)",
        target.name(),
        before.len(),
        kept.len(),
        named.len(),
        kept.iter().map(Vec::len).sum::<usize>()
    );
    Ok(())
}
