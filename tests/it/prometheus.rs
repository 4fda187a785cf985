//! The dashboards against a real Prometheus: the relay fed by the real
//! feed-simulator on lines A and B, with WebSocket, SSE, long-poll and
//! snapshot clients, scraped every second by Debian's `prometheus` on
//! loopback. Through Prometheus' HTTP API the test checks that the target is
//! up and that every PromQL expression of every dashboard panel (and every
//! template variable query) parses and returns data.
//!
//! Prometheus must be installed (`apt-get install prometheus`; .ci/run and
//! scripts/test.sh install it). Without it this test fails, it does not skip.
//! `PROMETHEUS=/path/to/prometheus` picks another binary.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMsg;

/// What Grafana's own variables become in the queries sent here. Scrapes are
/// 1 s apart, so 10 s windows hold about ten samples.
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "10s"),
    ("${__rate_interval}", "10s"),
    ("$__interval", "10s"),
    ("${__interval}", "10s"),
    ("$__range", "1m"),
    ("${__range}", "1m"),
];

const WATCH: &[&str] = &["AAPL", "MSFT", "NVDA", "AMZN", "TSLA"];

/// The prometheus binary: `$PROMETHEUS`, else `prometheus` on PATH, else
/// Debian's /usr/bin/prometheus. Fails the test with what to do if none.
fn prometheus_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("prometheus"))
        .chain([PathBuf::from("/usr/bin/prometheus")])
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "the `prometheus` binary is not installed, and this test needs a real one: \
             install Debian's package (`apt-get install -y prometheus`, as .ci/run and \
             scripts/test.sh do), or set PROMETHEUS=/path/to/prometheus"
        )
    })
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = support::now_ns();
        let p =
            std::env::temp_dir().join(format!("tickrelay-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop (this test's own children only).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus server on loopback scraping one target every second.
struct Prometheus {
    _child: Killed,
    addr: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let bin = prometheus_binary();
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tickrelay\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            let log = dir.0.join(format!("prometheus-{port}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.0.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=1h")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut child = Killed(child);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok((200, _)) = get(&addr, "/-/ready") {
                    return Prometheus {
                        _child: child,
                        addr,
                        log,
                        _dir: dir,
                    };
                }
                if child.0.try_wait().unwrap().is_some() {
                    eprintln!(
                        "prometheus exited at start:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "prometheus not ready in 30 s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("prometheus did not start (see its log above)");
    }

    /// `GET /api/v1/...` as JSON.
    fn api(&self, path: &str) -> Value {
        let (status, body) = get(&self.addr, path)
            .unwrap_or_else(|e| panic!("prometheus at {} unreachable: {e}", self.addr));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: HTTP {status}, not JSON ({e}): {body}"))
    }

    /// An instant query: the API's whole answer.
    fn query(&self, promql: &str) -> Value {
        self.api(&format!("/api/v1/query?query={}", url_encode(promql)))
    }

    /// The value of a query whose answer is one sample.
    fn value(&self, promql: &str) -> Option<f64> {
        let v = self.query(promql);
        let r = &v["data"]["result"];
        let sample = match v["data"]["resultType"].as_str()? {
            "scalar" => r,
            _ => &r.as_array()?.first()?["value"],
        };
        sample[1].as_str()?.parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A plain HTTP/1.0 GET (so the answer is never chunked): (status, body).
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A dashboard query with Grafana's variables substituted: built-ins by
/// their values above, template variables by their "All" value.
fn substitute(expr: &str, dashboard: &Value) -> String {
    let mut q = expr.to_owned();
    for (var, value) in GRAFANA_VARIABLES {
        q = q.replace(var, value);
    }
    let mut vars: Vec<(String, String)> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] != "datasource")
        .map(|v| {
            let all = v["allValue"].as_str().unwrap_or(".*").to_owned();
            (v["name"].as_str().unwrap().to_owned(), all)
        })
        .collect();
    // Longest first, so `$instance` is not cut by a `$inst`.
    vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    for (name, value) in vars {
        for form in [
            format!("${{{name}:regex}}"),
            format!("${{{name}:pipe}}"),
            format!("${{{name}}}"),
            format!("${name}"),
        ] {
            q = q.replace(&form, &value);
        }
    }
    assert!(!q.contains('$'), "unsubstituted variable in `{q}`");
    q
}

/// `label_values(SELECTOR, label)` as a PromQL query whose result carries
/// the label; other variable queries unchanged.
fn variable_promql(q: &str) -> (String, Option<String>) {
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'));
    match inner.and_then(|r| r.rsplit_once(',')) {
        Some((sel, label)) => {
            let label = label.trim().to_owned();
            (format!("count by ({label}) ({})", sel.trim()), Some(label))
        }
        None => (q.to_owned(), None),
    }
}

/// Every query of every dashboard: (where, PromQL with variables in).
fn dashboard_queries() -> Vec<(String, String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    let mut out = Vec::new();
    for f in files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let mut stack: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
        while let Some(p) = stack.pop() {
            if let Some(nested) = p["panels"].as_array() {
                stack.extend(nested);
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    let at = format!(
                        "{name} / {} / {}",
                        p["title"].as_str().unwrap_or("?"),
                        t["refId"].as_str().unwrap_or("?")
                    );
                    out.push((at, expr.to_owned(), d.clone()));
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" {
                let q = v["query"]["query"]
                    .as_str()
                    .or(v["query"].as_str())
                    .unwrap();
                let at = format!("{name} / variable ${}", v["name"].as_str().unwrap());
                out.push((at, format!("label_values:{q}"), d.clone()));
            }
        }
    }
    out
}

/// Streams SSE events until `stop`, counting bytes read.
fn sse_client(addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        write!(
            s,
            "GET /v1/stream?symbols={w}&book={w}&depth=5 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
            w = WATCH.join(",")
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        let mut total = 0;
        while !stop.load(Ordering::Relaxed) {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => continue, // read timeout: look at `stop`
            }
        }
        total
    })
}

/// Long-polls (and short-polls) until `stop`: answers received.
fn poll_client(base: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut since: Option<String> = None;
        let mut answers = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut path = format!(
                "/v1/poll?symbols={w}&book={w}&depth=5&timeout_ms=1000",
                w = WATCH.join(",")
            );
            if let Some(s) = &since {
                path.push_str(&format!("&since={s}"));
            }
            let r = support::http_get(&base, &path, &[]);
            if r.status == 200 {
                answers += 1;
                if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
                    since = Some(format!(
                        "{}:{}",
                        v["session"].as_str().unwrap_or_default(),
                        v["seq"]
                    ));
                }
            }
            // REST too, so the HTTP panels have several routes and statuses.
            support::http_get(&base, "/v1/snapshot?symbols=AAPL", &[]);
            support::http_get(&base, "/v1/symbols", &[]);
            support::http_get(&base, "/v1/snapshot/NOSUCH", &[]);
            // The client's pace, traffic for the panels to show: a round of
            // requests every 50 ms or so, not a wait for the relay.
            std::thread::sleep(Duration::from_millis(50));
        }
        answers
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    // Fail before starting anything when Prometheus is missing.
    prometheus_binary();

    let (line_a, line_b) = (support::FeedAddr::unique(), support::FeedAddr::unique());
    let relay = support::Relay::loopback(
        "serve",
        &[
            "--feed-a".to_string(),
            line_a.to_string(),
            "--feed-b".into(),
            line_b.to_string(),
        ],
    );
    let _sim = Killed(support::spawn_simulator(&[
        "--group",
        &line_a.to_string(),
        "--line-b",
        &line_b.to_string(),
        "--symbols",
        "100",
        "--rate",
        "3000",
        "--duration",
        "120",
        "--directory-every",
        "1",
        "--session",
        "PROMTEST",
        "--seed",
        "5",
    ]));
    let t0 = Instant::now();
    relay.wait_ready();
    eprintln!("relay ready after {:?}", t0.elapsed());
    let addr = relay.base.trim_start_matches("http://").to_owned();
    addr.parse::<std::net::SocketAddr>()
        .expect("relay on an IP:port");

    // Clients on every transport, so the streaming metrics move.
    let stop = Arc::new(AtomicBool::new(false));
    let mut ws_tasks = Vec::new();
    for mode in ["conflate", "every"] {
        let url = format!("{}/v1/ws", relay.base.replace("http://", "ws://"));
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        ws.send(WsMsg::text(
            json!({"op": "subscribe", "symbols": WATCH, "mode": mode}).to_string(),
        ))
        .await
        .unwrap();
        // Books too, so the book panels have every transport.
        ws.send(WsMsg::text(
            json!({"op": "subscribe", "channel": "book", "symbols": WATCH, "depth": 5}).to_string(),
        ))
        .await
        .unwrap();
        ws_tasks.push(tokio::spawn(async move {
            let mut frames = 0usize;
            while let Some(Ok(_)) = ws.next().await {
                frames += 1;
            }
            frames
        }));
    }
    let sse = sse_client(addr.clone(), stop.clone());
    let poll = poll_client(relay.base.clone(), stop.clone());

    let prom = Prometheus::start(&addr);
    eprintln!("prometheus ready after {:?}", t0.elapsed());

    // The target is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = prom.api("/api/v1/targets");
        let active = t["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(target) = active.first() {
            if target["health"] == "up" {
                assert_eq!(target["labels"]["instance"], addr.as_str());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "target not up in 30 s: {target}\n{}",
                prom.log()
            );
        }
        assert!(Instant::now() < deadline, "no active target: {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few scrapes, so every 10 s window has samples and the clients data.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scrapes = prom
            .value(r#"count_over_time(up{job="tickrelay"}[1m])"#)
            .unwrap_or(0.0);
        let delivered = prom
            .value(r#"min(increase(tickrelay_messages_sent_total{job="tickrelay"}[10s]))"#)
            .unwrap_or(0.0);
        if scrapes >= 8.0 && delivered > 0.0 {
            eprintln!("{scrapes} scrapes after {:?}", t0.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s: {scrapes} scrapes, min frames sent over transports {delivered}\n{}",
            relay.get("/metrics").text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every panel and variable query parses and returns data.
    let queries = dashboard_queries();
    let mut failures = Vec::new();
    for (at, expr, dashboard) in &queries {
        let (promql, label) = match expr.strip_prefix("label_values:") {
            Some(q) => variable_promql(&substitute(q, dashboard)),
            None => (substitute(expr, dashboard), None),
        };
        let v = prom.query(&promql);
        if v["status"] != "success" {
            failures.push(format!(
                "{at}: {}: {}\n    {promql}",
                v["errorType"], v["error"]
            ));
            continue;
        }
        let result = &v["data"]["result"];
        let empty = match v["data"]["resultType"].as_str() {
            Some("scalar" | "string") => result.is_null(),
            _ => result.as_array().is_none_or(|r| r.is_empty()),
        };
        if empty {
            failures.push(format!("{at}: no data\n    {promql}"));
        } else if let Some(label) = label {
            let has = result
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["metric"][&label].is_string());
            if !has {
                failures.push(format!("{at}: no `{label}` label\n    {promql}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n  {}",
        failures.len(),
        queries.len(),
        failures.join("\n  ")
    );
    assert!(queries.len() >= 40, "only {} queries", queries.len());
    eprintln!("{} queries checked after {:?}", queries.len(), t0.elapsed());

    // And the data is real, not zeros: spot checks through Prometheus.
    let checks = [
        (
            r#"sum(rate(tickrelay_feed_messages_received_total{line="a"}[10s]))"#,
            100.0,
        ),
        (
            r#"sum(rate(tickrelay_feed_messages_received_total{line="b"}[10s]))"#,
            100.0,
        ),
        (
            r#"sum(rate(tickrelay_feed_duplicate_messages_total[10s]))"#,
            100.0,
        ),
        (
            r#"sum(rate(tickrelay_feed_applied_messages_total[10s]))"#,
            100.0,
        ),
        (r#"tickrelay_symbols"#, 100.0),
        (r#"tickrelay_feed_status{status="live"}"#, 1.0),
        (r#"tickrelay_clients{transport="ws"}"#, 2.0),
        (r#"tickrelay_clients{transport="sse"}"#, 1.0),
        (r#"tickrelay_subscriptions{transport="ws"}"#, 10.0),
        (
            r#"sum(rate(tickrelay_quotes_sent_total{transport="ws"}[10s]))"#,
            1.0,
        ),
        (
            r#"sum(rate(tickrelay_quotes_sent_total{transport="sse"}[10s]))"#,
            1.0,
        ),
        (r#"sum(rate(tickrelay_book_messages_total[10s]))"#, 100.0),
        (
            r#"sum(rate(tickrelay_book_frames_sent_total{transport="ws"}[10s]))"#,
            1.0,
        ),
        (
            r#"sum(rate(tickrelay_book_frames_sent_total{transport="sse"}[10s]))"#,
            1.0,
        ),
        (
            r#"sum(rate(tickrelay_book_frames_sent_total{transport="poll"}[10s]))"#,
            1.0,
        ),
        (
            r#"sum(rate(tickrelay_book_bytes_sent_total{transport="ws"}[10s]))"#,
            100.0,
        ),
        (
            r#"sum(rate(tickrelay_quotes_sent_total{transport="poll"}[10s]))"#,
            0.1,
        ),
        (
            r#"sum(rate(tickrelay_bytes_sent_total{transport="ws"}[10s]))"#,
            100.0,
        ),
        (
            r#"sum(rate(tickrelay_tick_to_write_seconds_count{transport="sse"}[10s]))"#,
            1.0,
        ),
        (r#"sum(rate(tickrelay_feed_lag_seconds_count[10s]))"#, 1.0),
        (
            r#"sum(rate(tickrelay_http_requests_total{route="/metrics",status="200"}[10s]))"#,
            0.5,
        ),
        (
            r#"sum(rate(tickrelay_http_requests_total{route="/v1/poll"}[10s]))"#,
            0.5,
        ),
        (r#"process_resident_memory_bytes"#, 1e6),
        (r#"process_open_fds"#, 5.0),
        (r#"process_max_fds"#, 64.0),
        (r#"tickrelay_build_info"#, 1.0),
    ];
    let mut low = Vec::new();
    for (q, at_least) in checks {
        match prom.value(q) {
            Some(v) if v >= at_least => {}
            got => low.push(format!("{q} = {got:?}, want >= {at_least}")),
        }
    }
    // Quantiles come out finite and inside the bucket range.
    for transport in ["ws", "sse"] {
        let q = format!(
            r#"histogram_quantile(0.99, sum by (le) (rate(tickrelay_tick_to_write_seconds_bucket{{transport="{transport}"}}[10s])))"#
        );
        match prom.value(&q) {
            Some(v) if v.is_finite() && v > 0.0 && v < 2.0 => {}
            got => low.push(format!("{q} = {got:?}, want a latency in seconds")),
        }
    }
    let now = support::now_ns() as f64 / 1e9;
    match prom.value("process_start_time_seconds") {
        Some(v) if (now - 300.0..=now + 1.0).contains(&v) => {}
        got => low.push(format!("process_start_time_seconds = {got:?}, now {now}")),
    }
    assert!(
        low.is_empty(),
        "metrics without real data:\n  {}",
        low.join("\n  ")
    );

    stop.store(true, Ordering::Relaxed);
    for t in &ws_tasks {
        t.abort();
    }
    assert!(sse.join().unwrap() > 0, "the SSE client read nothing");
    assert!(poll.join().unwrap() > 0, "the poll client got no answer");
    drop(prom);
}
