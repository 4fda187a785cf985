//! WebSocket and SSE end to end: the real relay binary over loopback, fed by
//! packets this test writes (exact prices) or by the real feed-simulator.

mod harness;
use harness as common;
use harness::{Producer, now_ns};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickrelay::price::Price;
use tickrelay::wire::Message;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn price(n: i64) -> String {
    Price(n).to_string()
}

async fn connect(base: &str, protocol: Option<&str>) -> Ws {
    let url = format!("{}/v1/ws", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect");
    ws
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(WsMsg::text(v.to_string())).await.unwrap();
}

/// Next data frame as JSON (MessagePack frames are decoded to the same value).
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.ok()??.ok()?;
        match msg {
            WsMsg::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            WsMsg::Binary(b) => return Some(rmp_serde::from_slice(&b).unwrap()),
            WsMsg::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Reads frames until one of `kind` arrives.
async fn frame_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let f = next_frame(ws, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no `{kind}` frame"));
        if f["type"] == kind {
            return f;
        }
    }
}

/// The close frame's code, reading past anything else.
async fn close_code(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(WsMsg::Close(Some(f))))) => {
                return Some((u16::from(f.code), f.reason.to_string()));
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A relay on a fresh group with a directory of `symbols` applied.
async fn relay_with(symbols: &[&str], extra: &[&str]) -> (common::Relay, Producer) {
    let group = common::unique_group();
    let mut args = vec!["--feed-a".to_string(), group.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let relay = common::Relay::start(&args);
    let mut producer = Producer::new(group, "STREAMT");
    producer.directory(symbols);
    relay.wait_ready();
    (relay, producer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_subscribe_snapshot_then_ticks_in_order() {
    let (relay, mut feed) = relay_with(&["AAA", "BBB", "CCC"], &[]).await;
    feed.send(&[Producer::quote(0, 10_000), Producer::quote(1, 20_000)]);
    relay.wait_seq(5);
    let mut ws = connect(&relay.base, None).await;
    send_json(
        &mut ws,
        json!({"op":"subscribe","symbols":["aaa","BBB","ZZZ"]}),
    )
    .await;
    let sub = frame_of(&mut ws, "subscribed").await;
    assert_eq!(sub["symbols"], json!(["AAA", "BBB"]));
    assert_eq!(sub["unknown"], json!(["ZZZ"]));
    let snap = frame_of(&mut ws, "snapshot").await;
    assert_eq!(snap["session"], "STREAMT");
    let quotes = snap["quotes"].as_array().unwrap();
    assert_eq!(quotes.len(), 2);
    assert_eq!(quotes[0]["symbol"], "AAA");
    assert_eq!(quotes[0]["bid"], price(10_000));
    assert_eq!(quotes[1]["ask"], price(20_100));

    // 200 changes to AAA and CCC: AAA arrives in order, CCC never.
    let mut last = 0;
    for i in 1..=200 {
        last = feed.send(&[Producer::quote(0, 10_000 + i), Producer::quote(2, 5)]);
    }
    let mut seen_seq = snap["quotes"][0]["seq"].as_u64().unwrap();
    let mut newest_bid = String::new();
    while seen_seq < last - 1 {
        let f = frame_of(&mut ws, "ticks").await;
        for q in f["quotes"].as_array().unwrap() {
            assert_eq!(q["symbol"], "AAA", "only subscribed symbols arrive");
            let s = q["seq"].as_u64().unwrap();
            assert!(
                s > seen_seq,
                "seq strictly increasing: {s} after {seen_seq}"
            );
            seen_seq = s;
            newest_bid = q["bid"].as_str().unwrap().to_owned();
        }
        assert!(f["seq"].as_u64().unwrap() >= seen_seq.min(f["seq"].as_u64().unwrap()));
    }
    assert_eq!(
        newest_bid,
        price(10_200),
        "the last tick carries the last price sent"
    );

    // Unsubscribe AAA: only BBB changes arrive afterwards.
    send_json(&mut ws, json!({"op":"unsubscribe","symbols":["AAA"]})).await;
    send_json(&mut ws, json!({"op":"ping"})).await;
    frame_of(&mut ws, "pong").await;
    feed.send(&[Producer::quote(0, 1), Producer::quote(1, 77_700)]);
    let f = frame_of(&mut ws, "ticks").await;
    let symbols: Vec<&str> = f["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, vec!["BBB"]);
    assert_eq!(f["quotes"][0]["bid"], price(77_700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_frames_carry_the_same_quotes_as_json() {
    let (relay, mut feed) = relay_with(&["AAA", "BBB"], &[]).await;
    let mut js = connect(&relay.base, None).await;
    let mut mp = connect(&relay.base, Some("tickrelay.msgpack")).await;
    for ws in [&mut js, &mut mp] {
        send_json(ws, json!({"op":"subscribe","symbols":["AAA","BBB"]})).await;
        frame_of(ws, "snapshot").await;
    }
    let last = feed.send(&[Producer::quote(0, 1_234_567), Producer::quote(1, 42)]);
    let collect = |mut ws: Ws| async move {
        let mut got: HashMap<String, Value> = HashMap::new();
        while got
            .values()
            .map(|q| q["seq"].as_u64().unwrap())
            .min()
            .unwrap_or(0)
            < last - 1
            || got.len() < 2
        {
            let f = frame_of(&mut ws, "ticks").await;
            for q in f["quotes"].as_array().unwrap() {
                got.insert(q["symbol"].as_str().unwrap().to_owned(), q.clone());
            }
        }
        got
    };
    let (j, m) = (collect(js).await, collect(mp).await);
    for sym in ["AAA", "BBB"] {
        let (jq, mq) = (&j[sym], &m[sym]);
        for field in ["seq", "bid_size", "ask_size", "volume", "ts"] {
            assert_eq!(jq[field], mq[field], "{sym}.{field}");
        }
        // JSON: exact decimal strings; MessagePack: the fixed-point integers.
        for field in ["bid", "ask", "prev_close"] {
            let raw = mq[field].as_i64().unwrap();
            assert_eq!(
                jq[field].as_str().unwrap(),
                Price(raw).to_string(),
                "{sym}.{field}"
            );
        }
    }
    assert_eq!(m["AAA"]["bid"], json!(1_234_567));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_match_what_the_simulator_sent() {
    let group = common::unique_group();
    let relay = common::Relay::start(&["--feed-a".into(), group.to_string()]);
    let dir = tempdir();
    let final_path = dir.join("final.json");
    // A first short run lists the symbols so the client can subscribe.
    common::run_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "50",
        "--count",
        "10",
        "--session",
        "SIMWS",
        "--seed",
        "7",
    ]);
    relay.wait_ready();
    let watch = ["AAPL", "MSFT", "NVDA", "AMZN", "TSLA"];
    let mut ws = connect(&relay.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols": watch})).await;
    frame_of(&mut ws, "snapshot").await;
    // The main run: a new session, fast.
    let sim = common::spawn_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "50",
        "--count",
        "30000",
        "--rate",
        "100000",
        "--session",
        "SIMWS2",
        "--seed",
        "8",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    let out = sim.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&std::fs::read(&final_path).unwrap()).unwrap();
    let want: HashMap<String, Value> = summary["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| watch.contains(&q["symbol"].as_str().unwrap()))
        .map(|q| (q["symbol"].as_str().unwrap().to_owned(), q.clone()))
        .collect();
    let mut got: HashMap<String, Value> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while want
        .iter()
        .any(|(s, w)| got.get(s).map(|g| &g["seq"]) != Some(&w["seq"]))
    {
        assert!(
            Instant::now() < deadline,
            "did not receive every final quote: {got:?}"
        );
        let Some(f) = next_frame(&mut ws, Duration::from_secs(5)).await else {
            break;
        };
        if f["type"] == "ticks" || f["type"] == "snapshot" {
            for q in f["quotes"].as_array().unwrap() {
                let sym = q["symbol"].as_str().unwrap().to_owned();
                if let Some(prev) = got.get(&sym) {
                    if f["type"] == "ticks" && prev["seq"].as_u64() < q["seq"].as_u64() {
                        // fine: strictly increasing within the session
                    }
                }
                got.insert(sym, q.clone());
            }
        }
    }
    for (sym, w) in &want {
        let g = &got[sym];
        common::assert_final_quote(g, w, sym);
    }
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tickrelay-test-{}-{}",
        std::process::id(),
        now_ns()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Reads SSE events from a raw HTTP/1.1 connection.
struct SseReader {
    reader: BufReader<TcpStream>,
}

#[derive(Debug, Default, Clone)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

impl SseReader {
    fn open(base: &str, path: &str, last_event_id: Option<&str>) -> (u16, Self) {
        let addr = base.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line
                .to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
            {
                chunked = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        assert!(code != 200 || chunked, "SSE streams are chunked");
        (code, SseReader { reader })
    }

    /// The next line of the event stream, de-chunked.
    fn line(&mut self, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                return Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn next_event(&mut self, buf: &mut Vec<u8>) -> Option<SseEvent> {
        let mut ev = SseEvent::default();
        loop {
            let line = self.line(buf)?;
            if line.is_empty() {
                if !ev.event.is_empty() || !ev.data.is_empty() {
                    return Some(ev);
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                ev.id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                ev.event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                ev.data.push_str(v);
            }
        }
    }

    fn event_of(&mut self, buf: &mut Vec<u8>, kind: &str) -> SseEvent {
        loop {
            let ev = self
                .next_event(buf)
                .unwrap_or_else(|| panic!("stream ended before `{kind}`"));
            if ev.event == kind {
                return ev;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resume_gets_only_changed_symbols_even_on_another_relay() {
    let group = common::unique_group();
    let args = ["--feed-a".to_string(), group.to_string()];
    let relay1 = common::Relay::start(&args);
    let relay2 = common::Relay::start(&args);
    let mut feed = Producer::new(group, "SSERES");
    feed.directory(&["AAA", "BBB", "CCC"]);
    let s0 = feed.send(&[
        Producer::quote(0, 1),
        Producer::quote(1, 2),
        Producer::quote(2, 3),
    ]);
    relay1.wait_seq(s0);
    relay2.wait_seq(s0);

    let (code, mut sse) = SseReader::open(&relay1.base, "/v1/stream?symbols=AAA,BBB,CCC", None);
    assert_eq!(code, 200);
    let mut buf = Vec::new();
    let snap = sse.event_of(&mut buf, "snapshot");
    let id = snap.id.clone().unwrap();
    assert_eq!(id, format!("SSERES:{s0}"));
    let data: Value = serde_json::from_str(&snap.data).unwrap();
    assert_eq!(data["quotes"].as_array().unwrap().len(), 3);
    drop(sse);

    // While disconnected, AAA changes twice and CCC once; BBB stays.
    let s1 = feed.send(&[
        Producer::quote(0, 10),
        Producer::quote(2, 30),
        Producer::quote(0, 11),
    ]);
    relay1.wait_seq(s1);
    relay2.wait_seq(s1);
    for relay in [&relay1, &relay2] {
        let (code, mut sse) =
            SseReader::open(&relay.base, "/v1/stream?symbols=AAA,BBB,CCC", Some(&id));
        assert_eq!(code, 200);
        let mut buf = Vec::new();
        let ev = sse.next_event(&mut buf).unwrap();
        assert_eq!(ev.event, "tick", "a resume is not a full snapshot");
        let data: Value = serde_json::from_str(&ev.data).unwrap();
        let mut got: Vec<(String, String)> = data["quotes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                (
                    q["symbol"].as_str().unwrap().to_owned(),
                    q["bid"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![("AAA".into(), price(11)), ("CCC".into(), price(30))]
        );
        assert_eq!(ev.id.unwrap(), format!("SSERES:{s1}"));
    }

    // The query form works the same, and a live tick follows.
    let (_, mut sse) = SseReader::open(
        &relay2.base,
        &format!("/v1/stream?symbols=BBB&last_event_id=SSERES:{s1}"),
        None,
    );
    let mut buf = Vec::new();
    feed.send(&[Producer::quote(1, 99)]);
    let ev = sse.event_of(&mut buf, "tick");
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(data["quotes"][0]["bid"], price(99));

    // Another session: a full snapshot instead.
    let (_, mut sse) = SseReader::open(&relay2.base, "/v1/stream?symbols=AAA", Some("OTHER:5"));
    let mut buf = Vec::new();
    assert_eq!(sse.next_event(&mut buf).unwrap().event, "snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_headers_and_errors() {
    let (relay, _feed) = relay_with(&["AAA"], &["--max-symbols", "2"]).await;
    let r = common::http_get(&relay.base, "/v1/stream?symbols=NOPE", &[]);
    assert_eq!(r.status, 404);
    assert!(r.body.contains("unknown_symbol"));
    let r = common::http_get(&relay.base, "/v1/stream?symbols=A,B,C", &[]);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("too_many_symbols"));
    let addr = relay.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /v1/stream?symbols=AAA HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = vec![0; 1024];
    let n = s.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("x-accel-buffering: no"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_costs_bounded_memory_and_gets_current_prices() {
    let group = common::unique_group();
    let relay = common::Relay::start(&[
        "--feed-a".into(),
        group.to_string(),
        "--write-timeout-ms".into(),
        "60000".into(),
    ]);
    common::run_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "200",
        "--count",
        "10",
        "--session",
        "SLOW1",
    ]);
    relay.wait_ready();
    let dir = tempdir();
    let final_path = dir.join("final.json");
    let watch: Vec<String> = tickrelay::sim::tickers(200)
        .into_iter()
        .map(|(s, _)| s)
        .take(100)
        .collect();
    let mut ws = connect(&relay.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols": watch})).await;
    frame_of(&mut ws, "snapshot").await;
    let rss_before = relay.rss_kib();
    // The client stops reading while 200,000 messages go by.
    let sim = common::spawn_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "200",
        "--count",
        "400000",
        "--rate",
        "200000",
        "--session",
        "SLOW2",
        "--final-state",
        final_path.to_str().unwrap(),
    ]);
    let out = tokio::task::spawn_blocking(move || sim.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = relay.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "relay memory grew from {rss_before} KiB to {rss_after} KiB for one stalled client"
    );
    // Reading again: the newest prices arrive, not a backlog of old ones.
    let summary: Value = serde_json::from_slice(&std::fs::read(&final_path).unwrap()).unwrap();
    let want: HashMap<String, Value> = summary["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| {
            watch.contains(&q["symbol"].as_str().unwrap().to_owned())
                && q["seq"].as_u64().unwrap() > 0
        })
        .map(|q| (q["symbol"].as_str().unwrap().to_owned(), q.clone()))
        .collect();
    let mut got: HashMap<String, Value> = HashMap::new();
    let mut frames = 0;
    while want
        .iter()
        .any(|(s, w)| got.get(s).map(|g| &g["seq"]) != Some(&w["seq"]))
    {
        let f = next_frame(&mut ws, Duration::from_secs(10))
            .await
            .expect("frames after resuming");
        frames += 1;
        if let Some(qs) = f["quotes"].as_array() {
            for q in qs {
                got.insert(q["symbol"].as_str().unwrap().to_owned(), q.clone());
            }
        }
    }
    for (sym, w) in &want {
        assert_eq!(got[sym]["bid"], w["bid"], "{sym}");
    }
    // Conflation: far fewer frames than messages sent.
    assert!(frames < 40_000, "{frames} frames for a stalled client");
    let m = relay.metrics();
    assert!(common::metric(&m, "tickrelay_quotes_conflated_total") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_overflow_closes_with_4008() {
    let (relay, mut feed) = relay_with(&["AAA"], &["--every-queue", "16"]).await;
    let mut ws = connect(&relay.base, None).await;
    send_json(
        &mut ws,
        json!({"op":"subscribe","symbols":["AAA"],"mode":"every"}),
    )
    .await;
    frame_of(&mut ws, "snapshot").await;
    let burst: Vec<Message<'_>> = (0..3000).map(|i| Producer::quote(0, i)).collect();
    feed.send(&burst);
    let (code, reason) = close_code(&mut ws, Duration::from_secs(10))
        .await
        .expect("closed");
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("every_queue"), "{reason}");
    let m = relay.metrics();
    assert!(
        common::metric(
            &m,
            "tickrelay_slow_client_disconnects_total{transport=\"ws\",reason=\"queue_overflow\"}"
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_delivers_each_change_in_order() {
    let (relay, mut feed) = relay_with(&["AAA"], &[]).await;
    let mut ws = connect(&relay.base, None).await;
    send_json(
        &mut ws,
        json!({"op":"subscribe","symbols":["AAA"],"mode":"every"}),
    )
    .await;
    frame_of(&mut ws, "snapshot").await;
    let burst: Vec<Message<'_>> = (1..=500).map(|i| Producer::quote(0, i)).collect();
    feed.send(&burst);
    let mut bids = Vec::new();
    while bids.len() < 500 {
        let f = frame_of(&mut ws, "ticks").await;
        for q in f["quotes"].as_array().unwrap() {
            bids.push(q["bid"].as_str().unwrap().to_owned());
        }
    }
    let want: Vec<String> = (1..=500).map(price).collect();
    assert_eq!(bids, want);
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hz_throttles_and_the_newest_wins() {
    let (relay, mut feed) = relay_with(&["AAA"], &[]).await;
    let mut ws = connect(&relay.base, None).await;
    send_json(
        &mut ws,
        json!({"op":"subscribe","symbols":["AAA"],"max_hz":2}),
    )
    .await;
    frame_of(&mut ws, "snapshot").await;
    let start = Instant::now();
    for i in 1..=30 {
        feed.send(&[Producer::quote(0, i)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 1.5 s of changes at 20/s, throttled to 2/s: a handful of ticks, the last one newest.
    let mut ticks = 0;
    let mut last = String::new();
    while last != price(30) {
        let f = frame_of(&mut ws, "ticks").await;
        ticks += f["quotes"].as_array().unwrap().len();
        last = f["quotes"][0]["bid"].as_str().unwrap().to_owned();
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        (ticks as f64) <= secs * 2.0 + 2.0,
        "{ticks} updates in {secs:.1}s at max_hz 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_codes_and_reasons() {
    let (relay, _feed) = relay_with(
        &["AAA", "BBB", "CCC", "DDD"],
        &[
            "--max-symbols",
            "3",
            "--max-connections-per-ip",
            "2",
            "--max-frame-bytes",
            "1024",
            "--ops-per-second",
            "2",
        ],
    )
    .await;
    let mut ws = connect(&relay.base, None).await;
    // Bad JSON: an error frame, and the connection stays usable.
    ws.send(WsMsg::text("{not json")).await.unwrap();
    let e = frame_of(&mut ws, "error").await;
    assert_eq!(e["code"], "bad_request");
    send_json(
        &mut ws,
        json!({"op":"subscribe","symbols":["AAA","BBB","CCC","DDD"]}),
    )
    .await;
    let e = frame_of(&mut ws, "error").await;
    assert_eq!(e["code"], "too_many_symbols");
    assert!(e["message"].as_str().unwrap().contains("max_symbols"));
    // Operations per second: a burst of subscribes is partly refused.
    for _ in 0..6 {
        send_json(&mut ws, json!({"op":"subscribe","symbols":["AAA"]})).await;
    }
    let e = frame_of(&mut ws, "error").await;
    assert_eq!(e["code"], "rate_limited");
    // A second connection is fine, a third from the same address is refused.
    let _ws2 = connect(&relay.base, None).await;
    let mut ws3 = connect(&relay.base, None).await;
    let (code, reason) = close_code(&mut ws3, Duration::from_secs(5))
        .await
        .expect("refused");
    assert_eq!(code, 4009);
    assert!(reason.contains("max_connections_per_ip"), "{reason}");
    let r = common::http_get(&relay.base, "/v1/stream?symbols=AAA", &[]);
    assert_eq!(r.status, 429);
    assert!(r.body.contains("limit_exceeded"));
    // An oversized frame closes with 1009.
    ws.send(WsMsg::text("x".repeat(4096))).await.unwrap();
    let (code, reason) = close_code(&mut ws, Duration::from_secs(5))
        .await
        .expect("closed");
    assert_eq!(code, u16::from(CloseCode::Size), "{reason}");
    assert!(reason.contains("max_frame_bytes"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_closed_with_4010() {
    let (relay, _feed) = relay_with(
        &["AAA"],
        &["--ping-interval-ms", "100", "--idle-timeout-ms", "400"],
    )
    .await;
    let mut ws = connect(&relay.base, None).await;
    // Say nothing and read nothing (so no pong goes back) for a while.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, _) = close_code(&mut ws, Duration::from_secs(5))
        .await
        .expect("closed");
    assert_eq!(code, 4010);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_status_is_pushed() {
    let (relay, feed) = relay_with(&["AAA"], &["--stale-after-ms", "500"]).await;
    let mut ws = connect(&relay.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols":["AAA"]})).await;
    frame_of(&mut ws, "snapshot").await;
    let f = frame_of(&mut ws, "feed").await;
    assert_eq!(f["status"], "stale");
    assert_eq!(f["session"], "STREAMT");
    feed.heartbeat();
    let f = frame_of(&mut ws, "feed").await;
    assert_eq!(f["status"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_notice_reaches_ws_and_sse() {
    let (mut relay, _feed) = relay_with(&["AAA"], &[]).await;
    let mut ws = connect(&relay.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols":["AAA"]})).await;
    frame_of(&mut ws, "snapshot").await;
    let (_, mut sse) = SseReader::open(&relay.base, "/v1/stream?symbols=AAA", None);
    let mut buf = Vec::new();
    sse.event_of(&mut buf, "snapshot");
    relay.terminate();
    let f = frame_of(&mut ws, "shutdown").await;
    assert!(f["reconnect_ms"].as_u64().is_some());
    let (code, _) = close_code(&mut ws, Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(code, 1001);
    let ev = sse.event_of(&mut buf, "shutdown");
    assert!(ev.data.contains("reconnect_ms"));
    assert!(
        sse.next_event(&mut buf).is_none(),
        "the stream ends after the notice"
    );
    assert!(relay.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_origin_guard_the_client_endpoints() {
    let (relay, _feed) = relay_with(
        &["AAA"],
        &[
            "--token",
            "s3cret",
            "--allowed-origins",
            "https://trade.example",
        ],
    )
    .await;
    // WebSocket without the token: upgraded, then closed with 4001.
    let mut ws = connect(&relay.base, None).await;
    let (code, _) = close_code(&mut ws, Duration::from_secs(5))
        .await
        .expect("closed");
    assert_eq!(code, 4001);
    // With the token in the query: served.
    let url = format!(
        "{}/v1/ws?token=s3cret",
        relay.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    send_json(&mut ws, json!({"op":"ping"})).await;
    frame_of(&mut ws, "pong").await;
    // A foreign Origin is refused before the upgrade.
    let mut req = format!(
        "{}/v1/ws?token=s3cret",
        relay.base.replace("http://", "ws://")
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    let mut req = format!(
        "{}/v1/ws?token=s3cret",
        relay.base.replace("http://", "ws://")
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://trade.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    // SSE, polling and snapshots: 401 without, 200 with (header or query).
    for path in [
        "/v1/stream?symbols=AAA",
        "/v1/poll?symbols=AAA",
        "/v1/snapshot?symbols=AAA",
    ] {
        let r = common::http_get(&relay.base, path, &[]);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.body.contains("unauthorized"));
    }
    let r = common::http_get(
        &relay.base,
        "/v1/snapshot?symbols=AAA",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(r.status, 200);
    let r = common::http_get(&relay.base, "/v1/poll?symbols=AAA&token=s3cret", &[]);
    assert_eq!(r.status, 200);
    // Health and metrics stay open for operators.
    assert_eq!(common::http_get(&relay.base, "/healthz", &[]).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_keepalive_comments() {
    let (relay, _feed) = relay_with(&["AAA"], &["--keepalive-ms", "100"]).await;
    let (_, mut sse) = SseReader::open(&relay.base, "/v1/stream?symbols=AAA", None);
    let mut buf = Vec::new();
    let mut keepalives = 0;
    let start = Instant::now();
    while keepalives < 3 {
        assert!(start.elapsed() < Duration::from_secs(10), "no keep-alives");
        if sse.line(&mut buf).unwrap().starts_with(':') {
            keepalives += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscribes_to_every_symbol_and_can_be_turned_off() {
    let (relay, mut feed) = relay_with(&["AAA", "BBB", "CCC"], &[]).await;
    let mut ws = connect(&relay.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols":["*"]})).await;
    let sub = frame_of(&mut ws, "subscribed").await;
    assert_eq!(sub["symbols"], json!(["*"]));
    let snap = frame_of(&mut ws, "snapshot").await;
    assert_eq!(snap["quotes"].as_array().unwrap().len(), 3);
    let m = relay.metrics();
    assert_eq!(common::metric(&m, "tickrelay_wildcard_subscriptions"), 1.0);
    feed.send(&[Producer::quote(2, 4242)]);
    let f = frame_of(&mut ws, "ticks").await;
    assert_eq!(f["quotes"][0]["symbol"], "CCC");
    assert_eq!(f["quotes"][0]["bid"], price(4242));

    let (relay2, _feed2) = relay_with(&["AAA"], &["--allow-wildcard", "false"]).await;
    let mut ws = connect(&relay2.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols":["*"]})).await;
    let e = frame_of(&mut ws, "error").await;
    assert_eq!(e["code"], "wildcard_not_allowed");
    assert!(e["message"].as_str().unwrap().contains("allow_wildcard"));
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_pushes_feed_status() {
    let (relay, feed) = relay_with(&["AAA"], &["--stale-after-ms", "400"]).await;
    let (_, mut sse) = SseReader::open(&relay.base, "/v1/stream?symbols=AAA", None);
    let mut buf = Vec::new();
    sse.event_of(&mut buf, "snapshot");
    let ev = sse.event_of(&mut buf, "feed");
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(data["status"], "stale");
    assert!(ev.id.unwrap().starts_with("STREAMT:"));
    feed.heartbeat();
    let ev = sse.event_of(&mut buf, "feed");
    assert_eq!(
        serde_json::from_str::<Value>(&ev.data).unwrap()["status"],
        "live"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let group = common::unique_group();
    let relay = common::Relay::start(&[
        "--feed-a".into(),
        group.to_string(),
        "--write-timeout-ms".into(),
        "1000".into(),
    ]);
    common::run_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "50",
        "--count",
        "10",
        "--session",
        "SSESLOW",
    ]);
    relay.wait_ready();
    // every-mode SSE on all symbols, and never read a byte.
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "GET /v1/stream?mode=every HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::metric(&relay.metrics(), "tickrelay_clients{transport=\"sse\"}") < 1.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sim = common::spawn_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "50",
        "--duration",
        "8",
        "--rate",
        "100000",
        "--session",
        "SSESLOW2",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::metric(&relay.metrics(), "tickrelay_clients{transport=\"sse\"}") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled SSE client was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);
    let _ = tokio::task::spawn_blocking(move || sim.wait_with_output()).await;
}

/// What a `ticks` frame's promise demands: for each symbol, the newest change
/// sent at or below the envelope's `seq` has been delivered by then.
fn assert_promise_kept(sent: &[(u64, &str)], seen: &HashMap<String, u64>, promise: u64) {
    for (seq, sym) in sent.iter().rev().filter(|(s, _)| *s <= promise) {
        let have = seen.get(*sym).copied().unwrap_or(0);
        assert!(
            have >= *seq,
            "envelope seq {promise} promises {sym}@{seq}, delivered only up to {have}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ms_bounds_ws_frames_loses_nothing_and_keeps_the_promise() {
    let (relay, mut feed) = relay_with(&["AAA", "BBB"], &[]).await;
    let mut conflate = connect(&relay.base, None).await;
    let mut every = connect(&relay.base, Some("tickrelay.msgpack")).await;
    send_json(
        &mut conflate,
        json!({"op":"subscribe","symbols":["AAA","BBB"],"batch_ms":200}),
    )
    .await;
    send_json(
        &mut every,
        json!({"op":"subscribe","symbols":["AAA","BBB"],"mode":"every","batch_ms":200}),
    )
    .await;
    frame_of(&mut conflate, "snapshot").await;
    frame_of(&mut every, "snapshot").await;

    // 1.5 s of changes, 100 per second per symbol.
    let start = Instant::now();
    let mut sent: Vec<(u64, &str)> = Vec::new();
    for i in 1..=150 {
        let s = feed.send(&[Producer::quote(0, i), Producer::quote(1, 1000 + i)]);
        sent.push((s - 1, "AAA"));
        sent.push((s, "BBB"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Conflate: the newest prices arrive, in few frames, each keeping its promise.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut newest: HashMap<String, String> = HashMap::new();
    let mut frames = 0;
    while newest.get("AAA") != Some(&price(150)) || newest.get("BBB") != Some(&price(1150)) {
        let f = frame_of(&mut conflate, "ticks").await;
        frames += 1;
        for q in f["quotes"].as_array().unwrap() {
            let sym = q["symbol"].as_str().unwrap().to_owned();
            seen.insert(sym.clone(), q["seq"].as_u64().unwrap());
            newest.insert(sym, q["bid"].as_str().unwrap().to_owned());
        }
        assert_promise_kept(&sent, &seen, f["seq"].as_u64().unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        frames as f64 <= secs / 0.2 + 2.0,
        "{frames} frames in {secs:.2}s at batch_ms 200"
    );

    // Every: each change, in order, gathered into as few frames.
    let (mut aaa, mut bbb, mut frames) = (Vec::new(), Vec::new(), 0);
    while aaa.len() < 150 || bbb.len() < 150 {
        let f = frame_of(&mut every, "ticks").await;
        frames += 1;
        for q in f["quotes"].as_array().unwrap() {
            let bid = q["bid"].as_i64().expect("msgpack prices are integers");
            match q["symbol"].as_str().unwrap() {
                "AAA" => aaa.push(bid),
                _ => bbb.push(bid),
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(aaa, (1..=150).collect::<Vec<i64>>());
    assert_eq!(bbb, (1001..=1150).collect::<Vec<i64>>());
    assert!(
        frames as f64 <= secs / 0.2 + 2.0,
        "{frames} frames in {secs:.2}s at batch_ms 200"
    );

    // Out of range: an error frame naming the field, the connection stays.
    send_json(
        &mut conflate,
        json!({"op":"subscribe","symbols":["AAA"],"batch_ms":5000}),
    )
    .await;
    let e = frame_of(&mut conflate, "error").await;
    assert_eq!(e["code"], "bad_batch_ms");
    send_json(&mut conflate, json!({"op":"ping"})).await;
    frame_of(&mut conflate, "pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ms_bounds_sse_events() {
    let (relay, mut feed) = relay_with(&["AAA"], &[]).await;
    let r = common::http_get(&relay.base, "/v1/stream?symbols=AAA&batch_ms=1001", &[]);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("bad_batch_ms"), "{}", r.body);
    let (code, mut sse) = SseReader::open(&relay.base, "/v1/stream?symbols=AAA&batch_ms=200", None);
    assert_eq!(code, 200);
    let mut buf = Vec::new();
    sse.event_of(&mut buf, "snapshot");
    let start = Instant::now();
    let mut last = 0;
    for i in 1..=100 {
        last = feed.send(&[Producer::quote(0, i)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut events = 0;
    loop {
        let ev = sse.event_of(&mut buf, "tick");
        events += 1;
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        let q = &v["quotes"][0];
        if q["seq"].as_u64().unwrap() == last {
            assert_eq!(q["bid"], price(100));
            assert_eq!(ev.id.unwrap(), format!("STREAMT:{}", v["seq"]));
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        events as f64 <= secs / 0.2 + 2.0,
        "{events} events in {secs:.2}s at batch_ms 200"
    );
}
