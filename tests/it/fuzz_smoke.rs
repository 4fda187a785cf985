//! A time-bounded fuzz run of every target (fuzz/, docs/RELIABILITY.md):
//! about three seconds each from the repository's corpus, a fixed seed per
//! run of the suite. A crash fails the test and names the input (also saved
//! under the target directory).

use std::path::PathBuf;
use std::time::Duration;

use tickrelay_fuzz::engine::{Budget, Dirs, fuzz};
use tickrelay_fuzz::targets;

#[test]
fn every_fuzz_target_runs_three_seconds_without_a_crash() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let artifacts =
        std::env::temp_dir().join(format!("tickrelay-fuzz-smoke-{}", std::process::id()));
    let seconds: f64 = std::env::var("FUZZ_SMOKE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut failures = Vec::new();
    for mut target in targets::all() {
        let name = target.name();
        let budget = Budget {
            runs: u64::MAX,
            time: Duration::from_secs_f64(seconds),
            seed: 0x5eed,
        };
        let dirs = Dirs {
            corpus: Some(root.join("fuzz/corpus").join(name)),
            artifacts: Some(artifacts.join(name)),
            save_corpus: false,
        };
        let report = fuzz(target.as_mut(), &budget, &dirs);
        println!("{report}");
        assert!(report.executions > 0, "{name} ran nothing");
        for c in &report.crashes {
            failures.push(format!(
                "{name}: {} (input {:02x?}, saved {:?})",
                c.message,
                &c.input[..c.input.len().min(64)],
                c.saved
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz crashes:\n{}",
        failures.join("\n")
    );
}
