//! The trading page in a real browser: runs `tests/browser/trading-page.mjs`
//! (Playwright driving Debian's headless Chromium) against the `tickrelay`
//! binary cargo just built. The script starts `tickrelay demo` itself, checks
//! every transport, live switching and recovery from a killed relay, and
//! writes screenshots under the target directory.
//!
//! Needs `node`, and `/usr/bin/chromium` (or `$CHROMIUM`): `bash scripts/test.sh`
//! installs Chromium and the npm packages. When something is missing this
//! test fails and says so; it never skips.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longer than the script's own budget (under 3 minutes, cleanup included).
const TIMEOUT: Duration = Duration::from_secs(240);

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Installs the pinned npm packages (playwright-core, no browser download)
/// when `node_modules` is missing.
fn ensure_node_modules(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let npm = |args: &[&str]| {
        Command::new("npm")
            .args(args)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .output()
    };
    eprintln!("browser test: installing npm packages in {}", dir.display());
    let out = match npm(&["ci"]) {
        Ok(out) if out.status.success() => out,
        ci => {
            if let Ok(out) = &ci {
                eprintln!(
                    "npm ci failed, trying npm install:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            npm(&["install"]).unwrap_or_else(|e| {
                panic!("cannot run npm ({e}): the browser test needs Node.js and npm")
            })
        }
    };
    assert!(
        out.status.success(),
        "npm install in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Collects a child's output from a pipe on its own thread.
fn drain(
    mut pipe: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

#[test]
fn trading_page_in_headless_chromium() {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "{} is missing: the browser test needs Debian's chromium. \
         Run `bash scripts/test.sh`, which installs it (or `apt-get install chromium`).",
        chromium.display()
    );
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        other => {
            panic!("node is missing or broken ({other:?}): the browser test needs Node.js 20+")
        }
    }
    let dir = script_dir();
    ensure_node_modules(&dir);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg("trading-page.mjs")
        .arg(env!("CARGO_BIN_EXE_tickrelay"))
        .arg(&shots)
        .current_dir(&dir)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let output = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        drain(child.stdout.take().unwrap(), output.clone()),
        drain(child.stderr.take().unwrap(), output.clone()),
    ];

    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            // SIGTERM first: the script then stops the relay and Chromium it started.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(15) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The pipes close when node exits (its children have pipes of their own).
    for r in readers {
        let _ = r.join();
    }
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    println!("{text}");
    match status {
        Some(s) => assert!(
            s.success(),
            "the browser test failed ({s}) after {:.1} s; its output is above, screenshots in {}",
            started.elapsed().as_secs_f64(),
            shots.display()
        ),
        None => panic!(
            "the browser test did not finish in {} s; its output is above, screenshots in {}",
            TIMEOUT.as_secs(),
            shots.display()
        ),
    }
}
