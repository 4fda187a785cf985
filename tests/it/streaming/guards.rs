//! What guards the relay against its clients: bounded memory for a stalled
//! reader, limits with codes and reasons, idle peers, the shutdown notice,
//! token and origin checks.

use super::*;

/// The relay as a process: its resident memory is the subject, and in this
/// process it would be the test's too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_costs_bounded_memory_and_gets_current_prices() {
    let group = support::FeedAddr::unique();
    let relay = support::Relay::loopback(
        "serve",
        &[
            "--feed-a".to_string(),
            group.to_string(),
            "--write-timeout-ms".into(),
            "60000".into(),
        ],
    );
    support::run_simulator(&[
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
    let watch: Vec<String> = tickrelay::tools::sim::tickers(200)
        .into_iter()
        .map(|(s, _)| s)
        .take(100)
        .collect();
    let mut ws = connect(&relay.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols": watch})).await;
    frame_of(&mut ws, "snapshot").await;
    let rss_before = relay.rss_kib();
    // The client stops reading while 200,000 messages go by.
    let sim = support::spawn_simulator(&[
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
    // Measured once the relay has applied the whole run, not after a guess.
    let sent: Value = serde_json::from_slice(&std::fs::read(&final_path).unwrap()).unwrap();
    relay.wait_seq(sent["next_seq"].as_u64().unwrap() - 1);
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
    assert!(m.get("tickrelay_quotes_conflated_total") > 0.0);
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
    let r = support::http_get(&relay.base, "/v1/stream?symbols=AAA", &[]);
    assert_eq!(r.status, 429);
    assert!(r.text().contains("limit_exceeded"));
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
    // Say nothing and read nothing (a read would answer the pings) until
    // the relay gives up on the peer: counted just before its close frame.
    relay.wait_metric(
        "tickrelay_slow_client_disconnects_total{transport=\"ws\",reason=\"no_pong\"}",
        |n| n >= 1.0,
    );
    let (code, _) = close_code(&mut ws, Duration::from_secs(5))
        .await
        .expect("closed");
    assert_eq!(code, 4010);
}

/// The shutdown as SIGTERM starts it (`Relay::shutdown`); that the signal
/// starts it is spine.rs's `sigterm_stops_the_relay_cleanly`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_notice_reaches_ws_and_sse() {
    let (mut relay, _feed) = relay_with(&["AAA"], &[]).await;
    let mut ws = connect(&relay.base, None).await;
    send_json(&mut ws, json!({"op":"subscribe","symbols":["AAA"]})).await;
    frame_of(&mut ws, "snapshot").await;
    let (_, mut sse) = SseReader::open(&relay.base, "/v1/stream?symbols=AAA", None);
    let mut buf = Vec::new();
    sse.event_of(&mut buf, "snapshot");
    relay.shutdown();
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
    let stopped = relay
        .wait_stopped(Duration::from_secs(10))
        .expect("the relay stops after the shutdown");
    assert_eq!(stopped, Ok(()), "the relay stopped cleanly");
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
        let r = support::http_get(&relay.base, path, &[]);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.text().contains("unauthorized"));
    }
    let r = support::http_get(
        &relay.base,
        "/v1/snapshot?symbols=AAA",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(r.status, 200);
    let r = support::http_get(&relay.base, "/v1/poll?symbols=AAA&token=s3cret", &[]);
    assert_eq!(r.status, 200);
    // Health and metrics stay open for operators.
    assert_eq!(support::http_get(&relay.base, "/healthz", &[]).status, 200);
}
