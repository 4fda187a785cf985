//! The fuzzing loop: generate or mutate, run, keep what is new, save what
//! crashes.

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// One thing to fuzz.
pub trait Target {
    /// The target's name: its corpus is `fuzz/corpus/<name>/`.
    fn name(&self) -> &'static str;
    /// A structure-aware input: well-formed or nearly so, from the target's
    /// own grammar.
    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8>;
    /// Runs one input. Panics when an invariant is broken. Returns a
    /// signature of what the input did, the engine's stand-in for coverage.
    fn run(&mut self, input: &[u8]) -> u64;
}

/// How long and how hard to fuzz.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Stop after this many executions.
    pub runs: u64,
    /// Or after this long, whichever comes first.
    pub time: Duration,
    /// Seed of the input stream: the same seed gives the same inputs.
    pub seed: u64,
}

/// Where a run reads seeds and writes findings.
#[derive(Clone, Debug, Default)]
pub struct Dirs {
    /// Seed inputs, one file each (read, never required).
    pub corpus: Option<PathBuf>,
    /// Crashing inputs are written here.
    pub artifacts: Option<PathBuf>,
    /// Inputs with new signatures are written to the corpus directory.
    pub save_corpus: bool,
}

/// One crash: the panic message and the input that caused it.
#[derive(Clone, Debug)]
pub struct Crash {
    /// The panic's message.
    pub message: String,
    /// The reproducing input.
    pub input: Vec<u8>,
    /// Where it was saved, if it was.
    pub saved: Option<PathBuf>,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Inputs run.
    pub executions: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Distinct signatures seen.
    pub signatures: usize,
    /// Inputs kept for mutation at the end.
    pub corpus: usize,
    /// Distinct crashes (by panic message).
    pub crashes: Vec<Crash>,
}

impl Report {
    /// Executions per second.
    pub fn rate(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<10} {:>12} execs in {:>7.1} s = {:>10.0} execs/s, {:>5} signatures, corpus {:>5}, crashes {}",
            self.target,
            self.executions,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.signatures,
            self.corpus,
            self.crashes.len()
        )
    }
}

/// Most inputs kept in memory for mutation.
const MAX_CORPUS: usize = 4096;
/// Largest input the mutators grow to.
const MAX_INPUT: usize = 4096;

/// Runs `target` within `budget`.
pub fn fuzz(target: &mut dyn Target, budget: &Budget, dirs: &Dirs) -> Report {
    let mut rng = SmallRng::seed_from_u64(budget.seed);
    let mut corpus: Vec<Vec<u8>> = dirs.corpus.as_deref().map(read_corpus).unwrap_or_default();
    let seeds = corpus.len();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut crashes: Vec<Crash> = Vec::new();
    let last_panic = install_quiet_hook();
    let start = Instant::now();
    let mut executions = 0u64;
    // The seeds run first, as they are.
    let mut next_seed = 0;
    while executions < budget.runs {
        // Checking the clock every input would cost the fast targets.
        if executions.is_multiple_of(256) && start.elapsed() >= budget.time {
            break;
        }
        let input = if next_seed < seeds {
            next_seed += 1;
            corpus[next_seed - 1].clone()
        } else if corpus.is_empty() || rng.gen_ratio(1, 4) {
            target.generate(&mut rng)
        } else {
            let mut input = corpus[rng.gen_range(0..corpus.len())].clone();
            let other = &corpus[rng.gen_range(0..corpus.len())];
            for _ in 0..rng.gen_range(1..=4) {
                mutate(&mut input, other, &mut rng);
            }
            input
        };
        executions += 1;
        match panic::catch_unwind(AssertUnwindSafe(|| target.run(&input))) {
            Ok(sig) => {
                if seen.insert(sig) {
                    if dirs.save_corpus
                        && let Some(dir) = &dirs.corpus
                    {
                        let _ = save(dir, "", &input);
                    }
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input);
                    } else {
                        let i = rng.gen_range(0..corpus.len());
                        corpus[i] = input;
                    }
                }
            }
            Err(_) => {
                let message = last_panic
                    .lock()
                    .map(|m| m.clone())
                    .unwrap_or_else(|_| "panic".into());
                if crashes.iter().all(|c| c.message != message) {
                    let saved = dirs
                        .artifacts
                        .as_deref()
                        .and_then(|d| save(d, "crash-", &input).ok());
                    crashes.push(Crash {
                        message,
                        input,
                        saved,
                    });
                }
            }
        }
    }
    let _ = panic::take_hook();
    Report {
        target: target.name(),
        executions,
        elapsed: start.elapsed(),
        signatures: seen.len(),
        corpus: corpus.len(),
        crashes,
    }
}

/// Replaces the panic hook with one that only records the message (a
/// fuzzer's panics are expected output, not noise for the terminal).
fn install_quiet_hook() -> Arc<Mutex<String>> {
    let last = Arc::new(Mutex::new(String::new()));
    let slot = last.clone();
    panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut m) = slot.lock() {
            *m = format!("{payload}{at}");
        }
    }));
    last
}

/// The smallest input for each signature the `inputs` reach, each shrunk
/// further by deleting chunks while its signature stays the same: a small
/// corpus that reaches what the big one reached. Inputs that panic are
/// left out (they belong in artifacts, not seeds). Sorted by size.
pub fn minimise(target: &mut dyn Target, inputs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let last_panic = install_quiet_hook();
    let mut run = |input: &[u8]| panic::catch_unwind(AssertUnwindSafe(|| target.run(input))).ok();
    let mut best: std::collections::HashMap<u64, Vec<u8>> = std::collections::HashMap::new();
    for input in inputs {
        if let Some(sig) = run(&input) {
            let slot = best.entry(sig).or_insert_with(|| input.clone());
            if input.len() < slot.len() {
                *slot = input;
            }
        }
    }
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(best.len());
    for (sig, mut input) in best {
        let mut chunk = input.len() / 2;
        while chunk > 0 {
            let mut at = 0;
            while at + chunk <= input.len() {
                let mut shorter = input.clone();
                shorter.drain(at..at + chunk);
                if run(&shorter) == Some(sig) {
                    input = shorter;
                } else {
                    at += chunk;
                }
            }
            chunk /= 2;
        }
        out.push(input);
    }
    drop(last_panic);
    let _ = panic::take_hook();
    out.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    out
}

/// Every file of `dir` (not recursive), sorted by name for repeatability.
pub fn read_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Writes `input` to `dir/<prefix><hash>`.
pub fn save(dir: &Path, prefix: &str, input: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{prefix}{:016x}", fnv(input)));
    std::fs::write(&path, input)?;
    Ok(path)
}

/// FNV-1a: a stable name for an input, and a cheap signature hash.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Values that sit on the edges parsers get wrong.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xfffe,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    u64::MAX,
    u64::MAX - 1,
    i64::MAX as u64,
    i64::MIN as u64,
];

/// One random byte-level mutation of `input`; `other` is a second corpus
/// entry for splicing.
pub fn mutate(input: &mut Vec<u8>, other: &[u8], rng: &mut SmallRng) {
    if input.is_empty() {
        input.push(rng.r#gen());
        return;
    }
    let len = input.len();
    match rng.gen_range(0..10) {
        0 => {
            let i = rng.gen_range(0..len);
            input[i] ^= 1 << rng.gen_range(0..8);
        }
        1 => {
            let i = rng.gen_range(0..len);
            input[i] = rng.r#gen();
        }
        2 => {
            // An interesting value, big-endian (the feed's order) or little.
            let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            let width = [1usize, 2, 4, 8][rng.gen_range(0..4)];
            let bytes = if rng.r#gen() {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            let at = rng.gen_range(0..len);
            let src = if rng.r#gen() {
                &bytes[8 - width..]
            } else {
                &bytes[..width]
            };
            for (k, &b) in src.iter().enumerate() {
                if let Some(slot) = input.get_mut(at + k) {
                    *slot = b;
                }
            }
        }
        3 if len < MAX_INPUT => {
            let at = rng.gen_range(0..=len);
            let n = rng.gen_range(1..=16.min(MAX_INPUT - len));
            let fill: u8 = rng.r#gen();
            let random = rng.r#gen::<bool>();
            for _ in 0..n {
                let b = if random { rng.r#gen() } else { fill };
                input.insert(at, b);
            }
        }
        4 => {
            let at = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - at).min(16));
            input.drain(at..at + n);
        }
        5 => input.truncate(rng.gen_range(0..len)),
        6 => {
            // Copy a chunk of itself elsewhere (repeats structure).
            let from = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - from).min(32));
            let chunk = input[from..from + n].to_vec();
            let at = rng.gen_range(0..len);
            for (k, b) in chunk.into_iter().enumerate() {
                if let Some(slot) = input.get_mut(at + k) {
                    *slot = b;
                }
            }
        }
        7 if !other.is_empty() => {
            // Splice: a prefix of this input, a suffix of another.
            let cut = rng.gen_range(0..=len);
            let from = rng.gen_range(0..other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
            input.truncate(MAX_INPUT);
        }
        8 => {
            let i = rng.gen_range(0..len);
            input[i] = input[i].wrapping_add(rng.gen_range(1..=4)).wrapping_sub(2);
        }
        _ => {
            // Swap two bytes.
            let i = rng.gen_range(0..len);
            let j = rng.gen_range(0..len);
            input.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panicky;

    impl Target for Panicky {
        fn name(&self) -> &'static str {
            "panicky"
        }
        fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
            vec![rng.r#gen::<u8>() & 0x7f]
        }
        fn run(&mut self, input: &[u8]) -> u64 {
            assert!(input.first() != Some(&0xff), "found 0xff");
            input.first().copied().map_or(0, u64::from)
        }
    }

    #[test]
    fn the_engine_finds_a_byte_only_mutation_reaches() {
        let budget = Budget {
            runs: 200_000,
            time: Duration::from_secs(30),
            seed: 7,
        };
        let report = fuzz(&mut Panicky, &budget, &Dirs::default());
        assert_eq!(report.crashes.len(), 1, "{report}");
        assert_eq!(report.crashes[0].input.first(), Some(&0xff));
        assert!(report.crashes[0].message.contains("found 0xff"));
    }

    struct HasX;

    impl Target for HasX {
        fn name(&self) -> &'static str {
            "has_x"
        }
        fn generate(&mut self, _rng: &mut SmallRng) -> Vec<u8> {
            Vec::new()
        }
        fn run(&mut self, input: &[u8]) -> u64 {
            assert!(input != b"boom", "boom");
            u64::from(input.contains(&b'x'))
        }
    }

    #[test]
    fn minimise_keeps_one_shrunk_input_per_signature_and_drops_panics() {
        let inputs = ["aaaxaaa", "bbb", "xx", "cccc", "boom"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(minimise(&mut HasX, inputs), [b"".to_vec(), b"x".to_vec()]);
    }

    #[test]
    fn mutation_never_panics_on_edge_sizes() {
        let mut rng = SmallRng::seed_from_u64(1);
        for len in 0..40 {
            for _ in 0..200 {
                let mut v = vec![0xAA; len];
                mutate(&mut v, &[1, 2, 3], &mut rng);
                assert!(v.len() <= MAX_INPUT);
            }
        }
    }
}
