//! Failover behind a real HAProxy: three relays on one feed, 300 clients
//! over WebSocket, SSE and long polling that reconnect through the balancer
//! and resume by `since` / `Last-Event-ID`, as the trading page does. One
//! relay is killed with SIGKILL mid-run (and started again, so it must
//! rebuild its state before the balancer sends it clients), another is
//! stopped with SIGTERM (it drains: `/readyz` 503 first, then the shutdown
//! notice). Every client must end with every change to its symbols, none may
//! go without fresh prices for longer than [`STALL_BOUND`], and the
//! balancer's counts must agree with the relays'.
//!
//! Needs `haproxy` (Debian's package; `scripts/test.sh` installs it). Loopback
//! only: the balancer, the relays and the feed are all on 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

/// Longest a client may go without fresh prices across a failover: the
/// kill is seen at once (the kernel resets the connections), reconnects
/// back off at most a second, and the balancer skips a dead relay.
const STALL_BOUND: Duration = Duration::from_secs(6);
const CLIENTS_PER_TRANSPORT: usize = 100;
const SYMBOLS_PER_CLIENT: usize = 5;

fn haproxy_bin() -> Option<PathBuf> {
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tickrelay serve` on a fixed port (a restart comes back at the same one).
fn start_relay(port: u16, args: &[String]) -> Proc {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickrelay"))
        .arg("serve")
        .args([
            "--http",
            &format!("127.0.0.1:{port}"),
            "--interface",
            "127.0.0.1",
        ])
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("TEST_RELAY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tickrelay");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("relay exited before listening")
            .unwrap();
        if line.starts_with("tickrelay listening on ") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Proc(child)
}

/// A fallible `GET` with `Connection: close`: (status, headers, body).
fn try_get(
    addr: &str,
    path: &str,
    headers: &[(&str, String)],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no response head"))?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let mut body = body.as_bytes().to_vec();
    if chunked {
        let mut d = Dechunker::default();
        body = d.feed(&body);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Default)]
struct Dechunker {
    pending: Vec<u8>,
    left: usize,
}

impl Dechunker {
    fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            if self.left > 0 {
                let n = self.left.min(self.pending.len());
                out.extend(self.pending.drain(..n));
                self.left -= n;
                if self.left > 0 {
                    return out;
                }
                continue;
            }
            // A size line (after the previous chunk's CRLF).
            let Some(pos) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return out;
            };
            let line: Vec<u8> = self.pending.drain(..pos + 2).collect();
            let text = String::from_utf8_lossy(&line[..pos]).trim().to_owned();
            if text.is_empty() {
                continue;
            }
            self.left =
                usize::from_str_radix(text.split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if self.left == 0 {
                return out;
            }
        }
    }
}

/// One client's view: the latest quote of each of its symbols and where it
/// would resume.
#[derive(Default)]
struct View {
    quotes: HashMap<String, Value>,
    session: String,
    promise: u64,
    reconnects: u32,
    /// When the client lost its relay, until fresh data arrives again.
    lost_at: Option<Instant>,
    longest_stall: Duration,
    envelopes: u64,
}

impl View {
    fn envelope(&mut self, env: &Value) {
        if let Some(s) = env["session"].as_str()
            && s != self.session
        {
            self.session = s.to_owned();
            self.quotes.clear();
        }
        if let Some(seq) = env["seq"].as_u64() {
            self.promise = seq;
        }
        for q in env["quotes"].as_array().into_iter().flatten() {
            let sym = q["symbol"].as_str().unwrap_or_default().to_owned();
            let newer = self
                .quotes
                .get(&sym)
                .is_none_or(|old| q["seq"].as_u64() >= old["seq"].as_u64());
            if newer {
                self.quotes.insert(sym, q.clone());
            }
        }
        self.envelopes += 1;
        if let Some(t) = self.lost_at.take() {
            self.longest_stall = self.longest_stall.max(t.elapsed());
        }
    }

    fn lost(&mut self) {
        if self.lost_at.is_none() {
            self.lost_at = Some(Instant::now());
        }
        self.reconnects += 1;
    }

    fn since(&self) -> Option<String> {
        (!self.session.is_empty()).then(|| format!("{}:{}", self.session, self.promise))
    }
}

type Shared = Arc<Mutex<View>>;

fn backoff() -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(100..600))
}

fn ws_client(lb: String, symbols: Vec<String>, view: Shared, stop: Arc<AtomicBool>) {
    use tokio_tungstenite::tungstenite::{self, Message};
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(&lb) else {
            view.lock().unwrap().lost();
            std::thread::sleep(backoff());
            continue;
        };
        let Ok((mut ws, _)) = tungstenite::client(format!("ws://{lb}/v1/ws").as_str(), stream)
        else {
            view.lock().unwrap().lost();
            std::thread::sleep(backoff());
            continue;
        };
        let _ = ws
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(500)));
        let mut op = json!({"op": "subscribe", "symbols": symbols});
        if let Some(since) = view.lock().unwrap().since() {
            op["since"] = json!(since);
        }
        if ws.send(Message::text(op.to_string())).is_err() {
            view.lock().unwrap().lost();
            continue;
        }
        let mut wait = backoff();
        while !stop.load(Ordering::Relaxed) {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("snapshot") | Some("ticks") => view.lock().unwrap().envelope(&v),
                        Some("shutdown") => {
                            wait = Duration::from_millis(v["reconnect_ms"].as_u64().unwrap_or(500))
                                + backoff();
                        }
                        _ => {}
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        if stop.load(Ordering::Relaxed) {
            let _ = ws.close(None);
            return;
        }
        view.lock().unwrap().lost();
        std::thread::sleep(wait);
    }
}

fn sse_client(lb: String, symbols: Vec<String>, view: Shared, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(&lb) else {
            view.lock().unwrap().lost();
            std::thread::sleep(backoff());
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut req = format!(
            "GET /v1/stream?symbols={} HTTP/1.1\r\nHost: {lb}\r\nAccept: text/event-stream\r\n",
            symbols.join(",")
        );
        if let Some(since) = view.lock().unwrap().since() {
            req.push_str(&format!("Last-Event-ID: {since}\r\n"));
        }
        req.push_str("\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            view.lock().unwrap().lost();
            std::thread::sleep(backoff());
            continue;
        }
        let mut head: Option<bool> = None; // chunked?
        let mut raw = Vec::new();
        let mut text = Vec::new();
        let mut dechunk = Dechunker::default();
        let (mut event, mut data) = (String::new(), String::new());
        let mut wait = backoff();
        let mut buf = [0u8; 16384];
        'read: while !stop.load(Ordering::Relaxed) {
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(_) => break,
            };
            match head {
                None => {
                    raw.extend_from_slice(&buf[..n]);
                    let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let h = String::from_utf8_lossy(&raw[..pos]).to_ascii_lowercase();
                    if !h.starts_with("http/1.1 200") {
                        break;
                    }
                    let chunked = h.contains("transfer-encoding: chunked");
                    head = Some(chunked);
                    let rest = raw[pos + 4..].to_vec();
                    text.extend(if chunked { dechunk.feed(&rest) } else { rest });
                }
                Some(true) => text.extend(dechunk.feed(&buf[..n])),
                Some(false) => text.extend_from_slice(&buf[..n]),
            }
            while let Some(pos) = text.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = text.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                if line.is_empty() {
                    let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    match event.as_str() {
                        "snapshot" | "tick" => view.lock().unwrap().envelope(&v),
                        "shutdown" => {
                            wait = Duration::from_millis(v["reconnect_ms"].as_u64().unwrap_or(500))
                                + backoff();
                        }
                        "error" => break 'read,
                        _ => {}
                    }
                    event.clear();
                    data.clear();
                } else if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        view.lock().unwrap().lost();
        std::thread::sleep(wait);
    }
}

fn poll_client(lb: String, symbols: Vec<String>, view: Shared, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut path = format!("/v1/poll?symbols={}&timeout_ms=2000", symbols.join(","));
        if let Some(since) = view.lock().unwrap().since() {
            path.push_str(&format!("&since={since}"));
        }
        match try_get(&lb, &path, &[], Duration::from_secs(10)) {
            Ok((200, body)) => {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                view.lock().unwrap().envelope(&v);
            }
            _ => {
                view.lock().unwrap().lost();
                std::thread::sleep(backoff());
            }
        }
    }
}

fn metric_sum(text: &str, name: &str, filter: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| filter(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn clients_fail_over_through_haproxy_with_nothing_missed() {
    let haproxy = haproxy_bin().expect(
        "haproxy is not installed: `bash scripts/test.sh` installs it (apt-get install haproxy)",
    );
    let group = support::FeedAddr::unique();
    let retransmit = format!("127.0.0.1:{}", support::free_udp_port());
    let ports: Vec<u16> = (0..3).map(|_| support::free_tcp_port()).collect();
    let relay_args = |_: usize| -> Vec<String> {
        [
            "--feed-a",
            &group.to_string(),
            "--retransmit",
            &retransmit,
            "--stale-after-ms",
            "60000",
            "--drain-ms",
            "1500",
            "--reconnect-ms",
            "300",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut relays: Vec<Option<Proc>> = (0..3)
        .map(|i| Some(start_relay(ports[i], &relay_args(i))))
        .collect();

    // The balancer: deploy/haproxy.cfg with this test's ports.
    let lb_port = support::free_tcp_port();
    let stats_port = support::free_tcp_port();
    let cfg = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg"))
        .unwrap()
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{lb_port}"))
        .replace("127.0.0.1:8404", &format!("127.0.0.1:{stats_port}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", ports[0]))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{}", ports[1]))
        .replace("127.0.0.1:8083", &format!("127.0.0.1:{}", ports[2]))
        .replace("log stdout format raw local0 info", "")
        .replace("option httplog", "")
        // This machine's descriptor limit, not a production one.
        .replace("maxconn 200000", "maxconn 5000")
        .replace("maxconn 100000", "maxconn 5000");
    let cfg_path =
        std::env::temp_dir().join(format!("tickrelay-haproxy-{}.cfg", std::process::id()));
    std::fs::write(&cfg_path, cfg).unwrap();
    let _lb = Proc(
        Command::new(&haproxy)
            .args(["-db", "-f"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start haproxy"),
    );
    let lb = format!("127.0.0.1:{lb_port}");

    let final_path =
        std::env::temp_dir().join(format!("tickrelay-failover-{}.json", std::process::id()));
    let sim = support::spawn_simulator(&[
        "--group",
        &group.to_string(),
        "--retransmit",
        &retransmit,
        "--symbols",
        "200",
        "--rate",
        "1000",
        "--zipf",
        "0.8",
        "--duration",
        "22",
        "--session",
        "FAILOVER",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    let mut sim = Proc(sim);

    // Every relay ready behind the balancer (else the first one up would
    // take every client), then the symbols.
    let stats = format!("127.0.0.1:{stats_port}");
    let active = |stats: &str| {
        try_get(stats, "/metrics", &[], Duration::from_secs(2))
            .map(|(_, m)| {
                metric_sum(&m, "haproxy_backend_active_servers", |l| {
                    l.contains("proxy=\"relays\"")
                })
            })
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while active(&stats) < 3.0 {
        assert!(
            Instant::now() < deadline,
            "the balancer never saw three ready relays"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let symbols: Vec<String> = loop {
        if let Ok((200, body)) = try_get(&lb, "/v1/symbols", &[], Duration::from_secs(2)) {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let list: Vec<String> = v
                .as_array()
                .or_else(|| v["symbols"].as_array())
                .into_iter()
                .flatten()
                .filter_map(|s| s["symbol"].as_str().map(str::to_owned))
                .collect();
            if list.len() == 200 {
                break list;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the balancer never served the directory"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients: Vec<(&str, Vec<String>, Shared)> = Vec::new();
    let mut threads = Vec::new();
    let mut rng = rand::thread_rng();
    for transport in ["ws", "sse", "poll"] {
        for _ in 0..CLIENTS_PER_TRANSPORT {
            let mut mine: Vec<String> = Vec::new();
            while mine.len() < SYMBOLS_PER_CLIENT {
                let s = symbols[rng.gen_range(0..symbols.len())].clone();
                if !mine.contains(&s) {
                    mine.push(s);
                }
            }
            let view: Shared = Arc::default();
            let (lb, syms, v, st) = (lb.clone(), mine.clone(), view.clone(), stop.clone());
            threads.push(std::thread::spawn(move || match transport {
                "ws" => ws_client(lb, syms, v, st),
                "sse" => sse_client(lb, syms, v, st),
                _ => poll_client(lb, syms, v, st),
            }));
            clients.push((transport, mine, view));
        }
    }

    // Mid-run: SIGKILL relay 1, start it again (it must rebuild before the
    // balancer sends it clients), then SIGTERM relay 2.
    std::thread::sleep(Duration::from_secs(5));
    relays[0] = None; // killed on drop
    std::thread::sleep(Duration::from_secs(3));
    relays[0] = Some(start_relay(ports[0], &relay_args(0)));
    std::thread::sleep(Duration::from_secs(4));
    if let Some(r) = &relays[1] {
        let _ = Command::new("kill")
            .args(["-TERM", &r.0.id().to_string()])
            .status();
    }

    // The feed ends; every client must converge on the final state.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = sim.0.try_wait().unwrap() {
            assert!(status.success(), "feed-simulator failed: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "feed-simulator did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let summary: Value = serde_json::from_slice(&std::fs::read(&final_path).unwrap()).unwrap();
    let want: HashMap<String, Value> = summary["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["symbol"].as_str().unwrap().to_owned(), q.clone()))
        .collect();
    let matches = |q: Option<&Value>, w: &Value| {
        q.is_some_and(|q| {
            [
                "seq", "bid", "ask", "bid_size", "ask_size", "last", "volume",
            ]
            .iter()
            .all(|f| q[*f] == w[*f])
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let behind = loop {
        let behind: Vec<String> = clients
            .iter()
            .enumerate()
            .filter_map(|(i, (t, syms, view))| {
                let v = view.lock().unwrap();
                let bad: Vec<&String> = syms
                    .iter()
                    .filter(|s| !matches(v.quotes.get(*s), &want[*s]))
                    .collect();
                (!bad.is_empty()).then(|| format!("{t}#{i} {bad:?}"))
            })
            .collect();
        if behind.is_empty() || Instant::now() > deadline {
            break behind;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let mut report = String::new();
    for transport in ["ws", "sse", "poll"] {
        let views: Vec<_> = clients
            .iter()
            .filter(|c| c.0 == transport)
            .map(|c| c.2.lock().unwrap())
            .collect();
        let reconnects: u32 = views.iter().map(|v| v.reconnects).sum();
        let mut stalls: Vec<Duration> = views
            .iter()
            .filter(|v| v.reconnects > 0)
            .map(|v| v.longest_stall)
            .collect();
        stalls.sort();
        let pct = |p: usize| {
            let i = (stalls.len() * p / 100).min(stalls.len().saturating_sub(1));
            stalls.get(i).copied().unwrap_or_default()
        };
        report.push_str(&format!(
            "{transport}: {reconnects} reconnects by {} clients, time to fresh prices \
             p50 {:?} p99 {:?} max {:?}; ",
            stalls.len(),
            pct(50),
            pct(99),
            stalls.last().copied().unwrap_or_default()
        ));
    }
    eprintln!("failover: {report}");
    for transport in ["ws", "sse", "poll"] {
        let views: Vec<_> = clients
            .iter()
            .filter(|c| c.0 == transport)
            .map(|c| c.2.lock().unwrap())
            .collect();
        let reconnects: u32 = views.iter().map(|v| v.reconnects).sum();
        for v in &views {
            assert!(v.envelopes > 0, "{transport} client got nothing: {report}");
            assert!(
                v.longest_stall <= STALL_BOUND,
                "a {transport} client went {:?} without fresh prices (bound {STALL_BOUND:?}): {report}",
                v.longest_stall
            );
        }
        assert!(
            reconnects >= 1,
            "{transport}: the failover reached some clients: {report}"
        );
    }
    assert!(
        behind.is_empty(),
        "clients missing changes: {} of 300, e.g. {:?}; {report}",
        behind.len(),
        &behind[..behind.len().min(5)]
    );

    // The balancer and the surviving relay agree on what was served: every
    // request relay 3 answered came through HAProxy (health checks aside).
    std::thread::sleep(Duration::from_millis(500));
    let (_, lb_metrics) = try_get(
        &format!("127.0.0.1:{stats_port}"),
        "/metrics",
        &[],
        Duration::from_secs(5),
    )
    .unwrap();
    let (_, relay_metrics) = try_get(
        &format!("127.0.0.1:{}", ports[2]),
        "/metrics",
        &[],
        Duration::from_secs(5),
    )
    .unwrap();
    let via_lb = metric_sum(&lb_metrics, "haproxy_server_http_responses_total", |l| {
        l.contains("proxy=\"relays\"") && l.contains("server=\"relay3\"")
    });
    let served = metric_sum(&relay_metrics, "tickrelay_http_requests_total", |l| {
        !l.contains("readyz")
    });
    assert!(
        via_lb > 100.0,
        "relay 3 served through the balancer: {via_lb}"
    );
    assert!(
        (via_lb - served).abs() <= 3.0 + served * 0.02,
        "HAProxy counted {via_lb} responses from relay 3, the relay {served} requests"
    );
}
