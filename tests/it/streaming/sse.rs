//! Server-Sent Events: resume by Last-Event-ID, headers and errors,
//! keep-alives, feed status, slow readers, `batch_ms`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resume_gets_only_changed_symbols_even_on_another_relay() {
    let group = support::FeedAddr::unique();
    let args = ["--feed-a".to_string(), group.to_string()];
    let relay1 = support::Relay::in_process(&args);
    let relay2 = support::Relay::in_process(&args);
    let mut feed = FeedWriter::new(group, "SSERES");
    feed.list(&["AAA", "BBB", "CCC"]);
    let s0 = feed.send(&[
        FeedWriter::quote_msg(0, 1),
        FeedWriter::quote_msg(1, 2),
        FeedWriter::quote_msg(2, 3),
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
        FeedWriter::quote_msg(0, 10),
        FeedWriter::quote_msg(2, 30),
        FeedWriter::quote_msg(0, 11),
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
    feed.send(&[FeedWriter::quote_msg(1, 99)]);
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
    let r = support::http_get(&relay.base, "/v1/stream?symbols=NOPE", &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("unknown_symbol"));
    let r = support::http_get(&relay.base, "/v1/stream?symbols=A,B,C", &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("too_many_symbols"));
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
    let (relay, group) = slow_reader_relay("SSESLOW");
    // every-mode SSE on all symbols, and never read a byte.
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "GET /v1/stream?mode=every HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.metrics().get("tickrelay_clients{transport=\"sse\"}") < 1.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sim = flood(group, "SSESLOW2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.metrics().get("tickrelay_clients{transport=\"sse\"}") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled SSE client was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ms_bounds_sse_events() {
    let (relay, mut feed) = relay_with(&["AAA"], &[]).await;
    let r = support::http_get(&relay.base, "/v1/stream?symbols=AAA&batch_ms=1001", &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("bad_batch_ms"), "{}", r.text());
    let (code, mut sse) = SseReader::open(&relay.base, "/v1/stream?symbols=AAA&batch_ms=200", None);
    assert_eq!(code, 200);
    let mut buf = Vec::new();
    sse.event_of(&mut buf, "snapshot");
    let start = Instant::now();
    let mut last = 0;
    for i in 1..=100 {
        last = feed.send(&[FeedWriter::quote_msg(0, i)]);
        // The pace is the subject: a change every 10 ms, for 1 s, into
        // 200 ms windows.
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
