//! WebSocket: subscribe, snapshot then ticks, MessagePack, `every` and
//! `max_hz`, `batch_ms`, feed status, the wildcard, framing, slow readers.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_subscribe_snapshot_then_ticks_in_order() {
    let (relay, mut feed) = relay_with(&["AAA", "BBB", "CCC"], &[]).await;
    feed.send(&[
        FeedWriter::quote_msg(0, 10_000),
        FeedWriter::quote_msg(1, 20_000),
    ]);
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
    let mut sent: Vec<(u64, &str)> = Vec::new();
    for i in 1..=200 {
        last = feed.send(&[
            FeedWriter::quote_msg(0, 10_000 + i),
            FeedWriter::quote_msg(2, 5),
        ]);
        sent.push((last - 1, "AAA"));
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
        // The envelope's seq is a promise (docs/PROTOCOL.md): every AAA
        // change at or below it has been delivered by this frame. (It does
        // not bound the quotes' seq: the table moves on while a frame is
        // built, so a quote may be newer than the promise.)
        let promise = f["seq"].as_u64().unwrap();
        assert_promise_kept(&sent, &HashMap::from([("AAA".into(), seen_seq)]), promise);
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
    feed.send(&[
        FeedWriter::quote_msg(0, 1),
        FeedWriter::quote_msg(1, 77_700),
    ]);
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
    let last = feed.send(&[
        FeedWriter::quote_msg(0, 1_234_567),
        FeedWriter::quote_msg(1, 42),
    ]);
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
    let group = support::FeedAddr::unique();
    let relay = support::Relay::in_process(&["--feed-a".to_string(), group.to_string()]);
    let dir = tempdir();
    let final_path = dir.join("final.json");
    // A first short run lists the symbols so the client can subscribe.
    support::run_simulator(&[
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
    let sim = support::spawn_simulator(&[
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
    // The session of each symbol's quote in `got`, and the current one (from
    // the snapshot, then the `feed` frame that announces a new session).
    let mut got_session: HashMap<String, String> = HashMap::new();
    let mut session = String::new();
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
        if let Some(s) = f["session"].as_str() {
            session = s.to_owned();
        }
        if f["type"] == "ticks" || f["type"] == "snapshot" {
            for q in f["quotes"].as_array().unwrap() {
                let sym = q["symbol"].as_str().unwrap().to_owned();
                if let Some(prev) = got.get(&sym)
                    && f["type"] == "ticks"
                    && got_session[&sym] == session
                {
                    assert!(
                        q["seq"].as_u64() > prev["seq"].as_u64(),
                        "{sym}: ticks strictly increasing within session {session}: {} after {}",
                        q["seq"],
                        prev["seq"]
                    );
                }
                got_session.insert(sym.clone(), session.clone());
                got.insert(sym, q.clone());
            }
        }
    }
    for (sym, w) in &want {
        let g = &got[sym];
        support::assert_final_quote(g, w, sym);
    }
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
    let burst: Vec<Message<'_>> = (0..3000).map(|i| FeedWriter::quote_msg(0, i)).collect();
    feed.send(&burst);
    let (code, reason) = close_code(&mut ws, Duration::from_secs(10))
        .await
        .expect("closed");
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("every_queue"), "{reason}");
    let m = relay.metrics();
    assert!(
        m.get(
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
    let burst: Vec<Message<'_>> = (1..=500).map(|i| FeedWriter::quote_msg(0, i)).collect();
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
        feed.send(&[FeedWriter::quote_msg(0, i)]);
        // The pace is the subject: 20 changes a second against max_hz 2.
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
async fn wildcard_subscribes_to_every_symbol_and_can_be_turned_off() {
    let (relay, mut feed) = relay_with(&["AAA", "BBB", "CCC"], &[]).await;
    let mut ws = connect(&relay.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols":["*"]})).await;
    let sub = frame_of(&mut ws, "subscribed").await;
    assert_eq!(sub["symbols"], json!(["*"]));
    let snap = frame_of(&mut ws, "snapshot").await;
    assert_eq!(snap["quotes"].as_array().unwrap().len(), 3);
    let m = relay.metrics();
    assert_eq!(m.get("tickrelay_wildcard_subscriptions"), 1.0);
    feed.send(&[FeedWriter::quote_msg(2, 4242)]);
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
        let s = feed.send(&[
            FeedWriter::quote_msg(0, i),
            FeedWriter::quote_msg(1, 1000 + i),
        ]);
        sent.push((s - 1, "AAA"));
        sent.push((s, "BBB"));
        // The pace is the subject: 100 changes a second per symbol against
        // 200 ms windows.
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

/// A client frame, masked as RFC 6455 requires (or not, to test refusal).
fn client_frame(fin: bool, op: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let key = [0x1f, 0x83, 0x5a, 0xc4];
    let mut out = vec![(u8::from(fin) << 7) | op];
    let m = if mask { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(m | payload.len() as u8);
    } else {
        out.push(m | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    if mask {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// One server frame off a raw socket: opcode and payload.
fn server_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            s.read_exact(&mut n).unwrap();
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            s.read_exact(&mut n).unwrap();
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    assert_eq!(h[0] & 0x80, 0x80, "server frames are whole");
    (h[0] & 0x0f, payload)
}

/// Sends a WebSocket upgrade on `s` and reads the 101 head.
fn raw_upgrade(s: &mut TcpStream) {
    write!(
        s,
        "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_reads_masked_fragmented_frames_and_refuses_unmasked_ones() {
    let (relay, mut feed) = relay_with(&["AAA"], &[]).await;
    feed.send(&[FeedWriter::quote_msg(0, 4242)]);
    let addr = relay.base.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        raw_upgrade(&mut s);
        // A subscribe in two fragments with a ping between them.
        let mut bytes = client_frame(false, 0x1, br#"{"op":"subscribe","#, true);
        bytes.extend(client_frame(true, 0x9, b"p1", true));
        bytes.extend(client_frame(true, 0x0, br#""symbols":["AAA"]}"#, true));
        s.write_all(&bytes).unwrap();
        assert_eq!(server_frame(&mut s), (0xA, b"p1".to_vec()), "pong first");
        let (op, sub) = server_frame(&mut s);
        assert_eq!(op, 0x1);
        let sub: Value = serde_json::from_slice(&sub).unwrap();
        assert_eq!(sub["type"], "subscribed");
        let (_, snap) = server_frame(&mut s);
        let snap: Value = serde_json::from_slice(&snap).unwrap();
        assert_eq!(snap["quotes"][0]["bid"], price(4242));
        // An unmasked client frame breaks the protocol: close 1002.
        s.write_all(&client_frame(true, 0x1, br#"{"op":"ping"}"#, false))
            .unwrap();
        let (op, close) = loop {
            let f = server_frame(&mut s);
            if f.0 == 0x8 {
                break f;
            }
        };
        assert_eq!(op, 0x8);
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1002);

        // An upgrade after another request on the same connection works too.
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        raw_upgrade(&mut s);
        s.write_all(&client_frame(true, 0x1, br#"{"op":"ping"}"#, true))
            .unwrap();
        let (op, pong) = server_frame(&mut s);
        assert_eq!(op, 0x1);
        assert_eq!(
            serde_json::from_slice::<Value>(&pong).unwrap()["type"],
            "pong"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ws_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let (relay, group) = slow_reader_relay("WSSLOW");
    // Every symbol, and never read a byte.
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    raw_upgrade(&mut s);
    s.write_all(&client_frame(
        true,
        0x1,
        br#"{"op":"subscribe","symbols":["*"]}"#,
        true,
    ))
    .unwrap();
    let mut other = connect(&relay.base, None).await;
    send_json(&mut other, json!({"op":"subscribe","symbols":["*"]})).await;
    frame_of(&mut other, "snapshot").await;
    let sim = flood(group, "WSSLOW2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.metrics().get("tickrelay_clients{transport=\"ws\"}") > 1.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled WebSocket client was never dropped"
        );
        // The reading client keeps getting its frames meanwhile.
        next_frame(&mut other, Duration::from_secs(5))
            .await
            .expect("the other client is served");
    }
    assert!(
        relay.metrics().get(
            "tickrelay_slow_client_disconnects_total{transport=\"ws\",reason=\"write_timeout\"}"
        ) >= 1.0
    );
    drop(s);
    drop(sim);
}
