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

use crate::support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use support::{Dechunker, KillOnDrop, Metrics, Relay, poll_until};

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

/// `tickrelay serve` on a fixed port (a restart comes back at the same one).
fn start_relay(port: u16, args: &[String]) -> Relay {
    let mut all = vec!["--http".to_string(), format!("127.0.0.1:{port}")];
    all.extend_from_slice(args);
    Relay::loopback("serve", &all)
}

/// `GET path` from `addr`, `Connection: close`: the status and the body
/// as text, or the transport error.
fn try_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = addr.parse().expect("a loopback address");
    let r = support::try_get(addr, path, &[])?;
    Ok((r.status, r.text()))
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

/// A client's reconnect delay: the clients' own behaviour (the trading
/// page backs off the same way), not a wait for the relays.
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
        match try_get(&lb, &path) {
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
    let mut relays: Vec<Option<Relay>> = (0..3)
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
    let _lb = KillOnDrop(
        Command::new(&haproxy)
            .args(["-db", "-f"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start haproxy"),
    );
    let lb = format!("127.0.0.1:{lb_port}");

    // The feed runs until the failover is over (then it is stopped, as
    // Ctrl-C stops it: end of session, final state written); the duration
    // is only a bound.
    let final_path =
        std::env::temp_dir().join(format!("tickrelay-failover-{}.json", std::process::id()));
    let mut sim = KillOnDrop(support::spawn_simulator(&[
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
        "120",
        "--session",
        "FAILOVER",
        "--final-state",
        final_path.to_str().unwrap(),
    ]));

    // Every relay ready behind the balancer (else the first one up would
    // take every client), then the symbols.
    let stats = format!("127.0.0.1:{stats_port}");
    let active = || {
        try_get(&stats, "/metrics")
            .map(|(_, m)| {
                Metrics::parse(&m).labeled("haproxy_backend_active_servers", "proxy", "relays")
            })
            .unwrap_or(0.0)
    };
    let wait_active = |n: f64, what: &str| {
        poll_until(Duration::from_secs(30), what, || {
            (active() == n).then_some(())
        });
    };
    wait_active(3.0, "the balancer to see three ready relays");
    let symbols: Vec<String> = poll_until(
        Duration::from_secs(15),
        "the balancer to serve the directory",
        || {
            let Ok((200, body)) = try_get(&lb, "/v1/symbols") else {
                return None;
            };
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let list: Vec<String> = v
                .as_array()
                .or_else(|| v["symbols"].as_array())
                .into_iter()
                .flatten()
                .filter_map(|s| s["symbol"].as_str().map(str::to_owned))
                .collect();
            (list.len() == 200).then_some(list)
        },
    );

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
    // Every client served: none waiting for its first prices, none that
    // lost its relay and has no fresh prices yet.
    let all_served = |what: &str| {
        poll_until(Duration::from_secs(30), what, || {
            clients
                .iter()
                .all(|(_, _, v)| {
                    let v = v.lock().unwrap();
                    v.envelopes > 0 && v.lost_at.is_none()
                })
                .then_some(())
        });
    };

    // Mid-run: SIGKILL relay 1 once every client is served; start it again
    // once the balancer has marked it down and its clients are served
    // elsewhere (it must rebuild before the balancer sends it clients);
    // SIGTERM relay 2 once the balancer has it back.
    all_served("every client to get prices");
    relays[0] = None; // killed on drop
    wait_active(2.0, "the balancer to mark the killed relay down");
    all_served("every client to get prices again after the kill");
    relays[0] = Some(start_relay(ports[0], &relay_args(0)));
    wait_active(
        3.0,
        "the restarted relay to rebuild and rise behind the balancer",
    );
    let mut terminated = relays[1].take().expect("relay 2");
    terminated.sigterm();
    // Over once it is gone (drained, then its notices sent) and every
    // client is served again.
    let status = terminated
        .wait_exit(Duration::from_secs(30))
        .expect("relay 2 exits after SIGTERM");
    assert!(status.success(), "relay 2 exit status {status}");
    wait_active(2.0, "the balancer to mark the stopped relay down");
    all_served("every client to get prices again after the SIGTERM");

    // The feed ends; every client must converge on the final state.
    assert!(
        sim.0.try_wait().unwrap().is_none(),
        "the feed ended before the failover did"
    );
    let status = Command::new("kill")
        .args(["-INT", &sim.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT the simulator");
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
    // The clients are stopped; each side counts a request once it is
    // answered, so the last ones may take a moment to be counted by both.
    let relay3 = relays[2].as_ref().expect("relay 3");
    let counts = || {
        let lb_metrics = Metrics::parse(&try_get(&stats, "/metrics").expect("HAProxy metrics").1);
        let via_lb = lb_metrics.sum_where("haproxy_server_http_responses_total", |l| {
            l.contains("proxy=\"relays\"") && l.contains("server=\"relay3\"")
        });
        let served = relay3
            .metrics()
            .sum_where("tickrelay_http_requests_total", |l| !l.contains("readyz"));
        (via_lb, served)
    };
    let agree = |(via_lb, served): (f64, f64)| (via_lb - served).abs() <= 3.0 + served * 0.02;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (via_lb, served) = loop {
        let c = counts();
        if agree(c) || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        via_lb > 100.0,
        "relay 3 served through the balancer: {via_lb}"
    );
    assert!(
        agree((via_lb, served)),
        "HAProxy counted {via_lb} responses from relay 3, the relay {served} requests"
    );
}
