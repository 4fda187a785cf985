//! Depth of book over REST against the real relay: `'L'` messages sent as
//! datagrams build each symbol's book; `/v1/book/{symbol}` answers it best
//! first to the depth asked, with a checksum a client can recompute from
//! what it got, an ETag that stands still with the book, and the errors
//! and entitlements of every other route.

use crate::support;

use serde_json::Value;
use support::jwt::{self, User};
use support::{FeedAddr, FeedWriter, Relay};
use tickrelay::price::Price;
use tickrelay::wire::{Message, Side};

/// A level of `locate`'s book.
fn level(locate: u16, side: Side, price: i64, size: u32, orders: u32) -> Message<'static> {
    Message::Level {
        locate,
        ts: support::feed::now_ns(),
        side,
        price: Price(price),
        size,
        orders,
    }
}

/// CRC-32 (IEEE, reflected, as zlib's), written here rather than taken from
/// the relay so the test checks the documented rule, not itself.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The checksum of a `book` object as docs/PROTOCOL.md describes it: the
/// top 10 asks then the top 10 bids, price digits (no point, no leading
/// zeros) then size, concatenated.
fn checksum(book: &Value) -> u32 {
    let mut s = String::new();
    for side in ["asks", "bids"] {
        for l in book[side].as_array().unwrap().iter().take(10) {
            let price: String = l[0]
                .as_str()
                .unwrap()
                .chars()
                .filter(|c| *c != '.')
                .collect();
            s.push_str(price.trim_start_matches('0'));
            s.push_str(&l[1].as_u64().unwrap().to_string());
        }
    }
    crc32(s.as_bytes())
}

/// `[price, size, orders]` rows of one side.
fn rows(book: &Value, side: &str) -> Vec<(String, u64, u64)> {
    book[side]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l[0].as_str().unwrap().to_owned(),
                l[1].as_u64().unwrap(),
                l[2].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(price: &str, size: u64, orders: u64) -> (String, u64, u64) {
    (price.to_owned(), size, orders)
}

#[test]
fn the_book_is_served_best_first_to_the_depth_asked_with_its_checksum() {
    let group = FeedAddr::unique();
    let relay = Relay::in_process_feed(group, &[]);
    let mut feed = FeedWriter::new(group, "BOOKS");
    feed.list(&["AAPL", "MSFT"]);
    // Out of order on purpose: the book sorts.
    let seq = feed.send(&[
        level(0, Side::Bid, 1_891_100, 100, 1),
        level(0, Side::Ask, 1_891_500, 500, 4),
        level(0, Side::Bid, 1_891_200, 300, 3),
        level(0, Side::Ask, 1_891_400, 200, 2),
        level(0, Side::Bid, 1_891_000, 700, 5),
    ]);
    relay.wait_seq(seq);
    let r = relay.get("/v1/book/AAPL");
    assert_eq!(r.status, 200, "{}", r.text());
    let book: Value = r.json();
    assert_eq!(book["symbol"], "AAPL");
    assert_eq!(book["snapshot"], true);
    assert_eq!(book["seq"].as_u64(), Some(seq), "the book's last 'L'");
    assert_eq!(book["prev"], book["seq"], "a REST answer is its own prev");
    assert_eq!(
        rows(&book, "bids"),
        [
            row("189.1200", 300, 3),
            row("189.1100", 100, 1),
            row("189.1000", 700, 5)
        ]
    );
    assert_eq!(
        rows(&book, "asks"),
        [row("189.1400", 200, 2), row("189.1500", 500, 4)]
    );
    assert_eq!(book["checksum"].as_u64(), Some(u64::from(checksum(&book))));

    // Depth 1: the top of each side, and the checksum of what was sent.
    let top: Value = relay.get("/v1/book/AAPL?depth=1").json();
    assert_eq!(rows(&top, "bids"), [row("189.1200", 300, 3)]);
    assert_eq!(rows(&top, "asks"), [row("189.1400", 200, 2)]);
    assert_eq!(top["checksum"].as_u64(), Some(u64::from(checksum(&top))));

    // Size 0 takes a level away; a new size replaces it.
    let seq = feed.send(&[
        level(0, Side::Bid, 1_891_200, 0, 0),
        level(0, Side::Ask, 1_891_400, 250, 3),
    ]);
    relay.wait_seq(seq);
    let book: Value = relay.get("/v1/book/AAPL").json();
    assert_eq!(
        rows(&book, "bids"),
        [row("189.1100", 100, 1), row("189.1000", 700, 5)]
    );
    assert_eq!(
        rows(&book, "asks"),
        [row("189.1400", 250, 3), row("189.1500", 500, 4)]
    );
    assert_eq!(book["seq"].as_u64(), Some(seq));
    assert_eq!(book["checksum"].as_u64(), Some(u64::from(checksum(&book))));

    // A listed symbol without levels has an empty book.
    let empty: Value = relay.get("/v1/book/MSFT").json();
    assert_eq!(
        (
            empty["bids"].as_array().map(Vec::len),
            empty["asks"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{empty}"
    );
}

#[test]
fn the_etag_stands_while_the_book_does_and_bad_requests_get_their_codes() {
    let group = FeedAddr::unique();
    let relay = Relay::in_process_feed(group, &[]);
    let mut feed = FeedWriter::new(group, "ETAGS");
    feed.list(&["AAPL", "MSFT"]);
    let seq = feed.send(&[level(0, Side::Bid, 1_000_000, 10, 1)]);
    relay.wait_seq(seq);
    let first = relay.get("/v1/book/AAPL?depth=5");
    let tag = first.header("etag").expect("an ETag").to_owned();
    assert!(
        first.header("tickrelay-feed").is_some(),
        "the feed's status"
    );
    // Another symbol's change, or its quote, leaves this book's tag alone.
    let seq = feed.send(&[level(1, Side::Ask, 2_000_000, 10, 1)]);
    let seq2 = feed.quote(0, 990_000, 1_010_000, (5, 5));
    relay.wait_seq(seq.max(seq2));
    let again = relay.get_with("/v1/book/AAPL?depth=5", &[("If-None-Match", &tag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    // A depth of its own has a tag of its own.
    let deeper = relay.get_with("/v1/book/AAPL?depth=6", &[("If-None-Match", &tag)]);
    assert_eq!(deeper.status, 200);
    // A change to the book moves the tag.
    let seq = feed.send(&[level(0, Side::Bid, 999_900, 10, 1)]);
    relay.wait_seq(seq);
    let moved = relay.get_with("/v1/book/AAPL?depth=5", &[("If-None-Match", &tag)]);
    assert_eq!(moved.status, 200);
    assert_ne!(moved.header("etag"), Some(tag.as_str()));

    let code = |path: &str| {
        let r = relay.get(path);
        let v: Value = r.json();
        (
            r.status,
            v["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    for depth in ["0", "51", "ten", "-1", "1.5", ""] {
        assert_eq!(
            code(&format!("/v1/book/AAPL?depth={depth}")),
            (400, "bad_depth".to_owned()),
            "depth={depth}"
        );
    }
    assert_eq!(code("/v1/book/NOPE"), (404, "unknown_symbol".to_owned()));
    assert_eq!(code("/v1/book/*").0, 400, "a book is one symbol's");
}

#[test]
fn the_book_asks_the_users_entitlements_and_a_delayed_user_gets_none() {
    let group = FeedAddr::unique();
    let relay = jwt::relay(group, &[]);
    let mut feed = FeedWriter::new(group, "ENTITLED");
    feed.list(&["AAA", "BBB"]);
    let seq = feed.send(&[level(0, Side::Bid, 1_000_000, 10, 1)]);
    relay.wait_seq(seq);
    let token = |symbols: &[&str], channels: &[&str], delay_ms: u64| {
        User::named("ladder")
            .symbols(symbols)
            .channels(channels)
            .delayed(delay_ms)
            .bearer()
    };
    let status = |path: &str, auth: &str| {
        let r = relay.get_with(path, &[("Authorization", auth)]);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (
            r.status,
            v["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    let refused = (403, "not_entitled".to_owned());
    let ok = (200, String::new());
    assert_eq!(
        status("/v1/book/AAA", &token(&["*"], &["quotes"], 0)),
        refused
    );
    assert_eq!(status("/v1/book/AAA", &token(&["*"], &["book"], 0)), ok);
    assert_eq!(
        status("/v1/book/AAA", &token(&["B*"], &["book"], 0)),
        refused
    );
    assert_eq!(status("/v1/book/BBB", &token(&["B*"], &["book"], 0)), ok);
    // The delayed view holds quotes only: no real-time book instead.
    let delayed = token(&["*"], &["quotes", "book"], 60_000);
    assert_eq!(status("/v1/book/AAA", &delayed), refused);
    assert_eq!(status("/v1/snapshot/AAA", &delayed).0, 200);
    assert_eq!(relay.get("/v1/book/AAA").status, 401, "no token");
}

// ---- Streaming: WebSocket, SSE and long polling ----

use std::io::{Read, Write};
use std::net::TcpStream;
use support::ws::{Strict, TEXT, masked};

/// A price's raw integer from its decimal text (four decimals always).
fn raw(price: &str) -> i64 {
    price.replace('.', "").parse().unwrap()
}

pub(crate) type Row = (i64, u64, u64);

pub(crate) fn rows_raw(v: &Value, side: &str) -> Vec<Row> {
    rows(v, side)
        .into_iter()
        .map(|(p, s, o)| (raw(&p), s, o))
        .collect()
}

/// A client's copy of one book, kept by the rules of docs/PROTOCOL.md.
#[derive(Debug, Default)]
pub(crate) struct Copy {
    pub(crate) seq: Option<u64>,
    pub(crate) bids: Vec<Row>,
    pub(crate) asks: Vec<Row>,
    pub(crate) depth: usize,
    pub(crate) frames: usize,
}

impl Copy {
    pub(crate) fn new(depth: usize) -> Copy {
        Copy {
            depth,
            ..Copy::default()
        }
    }

    /// Applies one `book` frame: `prev` checked, levels replaced by price
    /// (size 0 deletes), sides kept best first and cut to the depth, and
    /// the checksum recomputed from the copy.
    pub(crate) fn apply(&mut self, f: &Value) {
        if f["snapshot"] == true {
            self.bids = rows_raw(f, "bids");
            self.asks = rows_raw(f, "asks");
        } else {
            assert_eq!(
                f["prev"].as_u64(),
                self.seq,
                "prev names the last frame this client got: {f}"
            );
            for (side, copy) in [("bids", &mut self.bids), ("asks", &mut self.asks)] {
                for r in rows_raw(f, side) {
                    copy.retain(|x| x.0 != r.0);
                    if r.1 > 0 {
                        copy.push(r);
                    }
                }
            }
            self.bids.sort_by_key(|r| std::cmp::Reverse(r.0));
            self.asks.sort_by_key(|r| r.0);
            self.bids.truncate(self.depth);
            self.asks.truncate(self.depth);
        }
        self.seq = f["seq"].as_u64();
        self.frames += 1;
        let text = |r: &[Row]| -> Vec<Value> {
            r.iter()
                .map(|&(p, s, o)| {
                    serde_json::json!([format!("{}.{:04}", p / 10_000, p % 10_000), s, o])
                })
                .collect()
        };
        let held = serde_json::json!({"bids": text(&self.bids), "asks": text(&self.asks)});
        assert_eq!(
            f["checksum"].as_u64(),
            Some(u64::from(checksum(&held))),
            "the checksum of the copy after {f}"
        );
    }

    /// Whether the copy is the REST book. Its `seq` may be older: a change
    /// beyond the depth moves the book's `seq` but sends no frame.
    pub(crate) fn equals(&self, rest: &Value) -> bool {
        self.seq <= rest["seq"].as_u64()
            && self.bids == rows_raw(rest, "bids")
            && self.asks == rows_raw(rest, "asks")
    }
}

/// A seeded generator (xorshift): the same changes every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A random level change of `locate`: about one in four deletes.
    fn level(&mut self, locate: u16) -> Message<'static> {
        let side = if self.next(2) == 0 {
            Side::Bid
        } else {
            Side::Ask
        };
        let tick = self.next(30) as i64;
        let price = match side {
            Side::Bid => 1_000_000 - tick * 100,
            Side::Ask => 1_000_100 + tick * 100,
        };
        let size = if self.next(4) == 0 {
            0
        } else {
            1 + self.next(900) as u32
        };
        level(locate, side, price, size, size.min(1) + self.next(5) as u32)
    }
}

fn ws_send(ws: &mut Strict, v: Value) {
    ws.send(&masked(TEXT, v.to_string().as_bytes()));
}

/// The next text frame's JSON (pings and other frames skipped).
fn ws_next(ws: &mut Strict) -> Value {
    loop {
        let f = ws.frame().expect("the relay closed the connection");
        if f.op == 1 {
            return serde_json::from_slice(&f.payload).unwrap();
        }
        assert_ne!(f.op, 8, "closed: {:?} {}", f.close_code(), f.text());
    }
}

/// The next `book` frame (of any symbol).
fn ws_book(ws: &mut Strict) -> Value {
    loop {
        let v = ws_next(ws);
        if v["type"] == "book" {
            return v;
        }
    }
}

/// Reads book frames into `copies` until each equals its REST book.
fn ws_until_equal(relay: &Relay, ws: &mut Strict, copies: &mut [(&str, Copy)]) {
    loop {
        let all = copies.iter().all(|(sym, c)| {
            let rest: Value = relay
                .get(&format!("/v1/book/{sym}?depth={}", c.depth))
                .json();
            c.equals(&rest)
        });
        if all {
            return;
        }
        let f = ws_book(ws);
        let (_, c) = copies
            .iter_mut()
            .find(|(s, _)| f["symbol"] == *s)
            .expect("a subscribed symbol");
        c.apply(&f);
    }
}

fn subscribe_book(ws: &mut Strict, symbols: &[&str], depth: usize) {
    ws_send(
        ws,
        serde_json::json!({"op":"subscribe","channel":"book","symbols":symbols,"depth":depth}),
    );
}

/// A relay with AAPL, MSFT and IBM listed and a few levels each.
fn book_relay(session: &str) -> (Relay, FeedWriter) {
    let group = FeedAddr::unique();
    let relay = Relay::in_process_feed(group, &[]);
    let mut feed = FeedWriter::new(group, session);
    feed.list(&["AAPL", "MSFT", "IBM"]);
    let mut rng = Rng(7);
    let msgs: Vec<Message<'static>> = (0..3)
        .flat_map(|l| (0..20).map(move |_| l))
        .map(|l| rng.level(l))
        .collect();
    relay.wait_seq(feed.send(&msgs));
    (relay, feed)
}

#[test]
fn a_ws_client_applying_book_frames_ends_with_the_rest_book() {
    let (relay, mut feed) = book_relay("BOOKWS");
    let mut ws = Strict::connect(relay.addr, "");
    subscribe_book(&mut ws, &["AAPL"], 5);
    let sub = ws_next(&mut ws);
    assert_eq!(
        (sub["type"].as_str(), sub["channel"].as_str()),
        (Some("subscribed"), Some("book")),
        "{sub}"
    );
    let first = ws_book(&mut ws);
    assert_eq!(first["snapshot"], true, "the first frame is the whole book");
    let mut copies = [("AAPL", Copy::new(5))];
    copies[0].1.apply(&first);
    let mut rng = Rng(42);
    for _ in 0..10 {
        let burst: Vec<Message<'static>> = (0..30).map(|_| rng.level(0)).collect();
        relay.wait_seq(feed.send(&burst));
    }
    ws_until_equal(&relay, &mut ws, &mut copies);
    assert!(copies[0].1.frames > 1, "diffs followed the snapshot");

    // Bad depths and channels are error frames; the connection stays.
    for depth in [
        serde_json::json!(0),
        serde_json::json!(51),
        serde_json::json!("x"),
    ] {
        ws_send(
            &mut ws,
            serde_json::json!({"op":"subscribe","channel":"book","symbols":["AAPL"],"depth":depth}),
        );
        let e = ws_next(&mut ws);
        assert_eq!(e["code"], "bad_depth", "{e}");
    }
    // Unsubscribed: no more book frames, while quotes still come.
    ws_send(
        &mut ws,
        serde_json::json!({"op":"unsubscribe","channel":"book","symbols":["AAPL"]}),
    );
    ws_send(
        &mut ws,
        serde_json::json!({"op":"subscribe","symbols":["MSFT"]}),
    );
    loop {
        if ws_next(&mut ws)["type"] == "snapshot" {
            break;
        }
    }
    feed.send(&[level(0, Side::Bid, 1_000_050, 5, 1)]);
    relay.wait_seq(feed.quote(1, 990_000, 1_010_000, (5, 5)));
    loop {
        let v = ws_next(&mut ws);
        assert_ne!(v["type"], "book", "unsubscribed: {v}");
        if v["type"] == "ticks" {
            break;
        }
    }
}

#[test]
fn a_client_that_does_not_read_is_conflated_and_still_ends_right() {
    let (relay, mut feed) = book_relay("BOOKSLOW");
    let mut ws = Strict::connect(relay.addr, "");
    subscribe_book(&mut ws, &["AAPL", "MSFT"], 10);
    // Not read while the book moves: what it then reads are differences to
    // what it last got, never a gap its `prev` cannot explain.
    let mut rng = Rng(99);
    let mut sent = 0;
    for _ in 0..20 {
        let burst: Vec<Message<'static>> = (0..40).map(|i| rng.level(i % 2)).collect();
        sent += burst.len();
        relay.wait_seq(feed.send(&burst));
    }
    let mut copies = [("AAPL", Copy::new(10)), ("MSFT", Copy::new(10))];
    ws_until_equal(&relay, &mut ws, &mut copies);
    let frames: usize = copies.iter().map(|(_, c)| c.frames).sum();
    assert!(frames <= sent, "{frames} frames for {sent} changes");
}

#[test]
fn a_seeded_run_over_several_symbols_checks_every_frame() {
    let (relay, mut feed) = book_relay("BOOKFUZZ");
    let mut ws = Strict::connect(relay.addr, "");
    let mut shallow = Strict::connect(relay.addr, "");
    subscribe_book(&mut ws, &["AAPL", "MSFT", "IBM"], 10);
    subscribe_book(&mut shallow, &["AAPL", "MSFT", "IBM"], 2);
    let mut rng = Rng(0x5eed);
    let mut deep = [
        ("AAPL", Copy::new(10)),
        ("MSFT", Copy::new(10)),
        ("IBM", Copy::new(10)),
    ];
    let mut top = [
        ("AAPL", Copy::new(2)),
        ("MSFT", Copy::new(2)),
        ("IBM", Copy::new(2)),
    ];
    for round in 0..15 {
        let burst: Vec<Message<'static>> = (0..25)
            .map(|_| {
                let locate = rng.next(3) as u16;
                rng.level(locate)
            })
            .collect();
        relay.wait_seq(feed.send(&burst));
        if round % 5 == 4 {
            // Caught up on the way, not only at the end.
            ws_until_equal(&relay, &mut ws, &mut deep);
        }
    }
    ws_until_equal(&relay, &mut ws, &mut deep);
    ws_until_equal(&relay, &mut shallow, &mut top);
}

#[test]
fn book_frames_are_refused_without_the_book_channel() {
    let group = FeedAddr::unique();
    let relay = jwt::relay(group, &[]);
    let mut feed = FeedWriter::new(group, "BOOKAUTH");
    relay.wait_seq(feed.list(&["AAPL"]));
    let token = |channels: &[&str]| User::named("ladder").channels(channels).token();
    let mut ws = Strict::connect(relay.addr, &format!("?token={}", token(&["quotes"])));
    subscribe_book(&mut ws, &["AAPL"], 10);
    let e = ws_next(&mut ws);
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("not_entitled")),
        "{e}"
    );
    let r = relay.get(&format!(
        "/v1/stream?book=AAPL&token={}",
        token(&["quotes"])
    ));
    assert_eq!(r.status, 403);
    let r = relay.get(&format!("/v1/poll?book=AAPL&token={}", token(&["quotes"])));
    assert_eq!(r.status, 403);
    let mut ok = Strict::connect(relay.addr, &format!("?token={}", token(&["book"])));
    subscribe_book(&mut ok, &["AAPL"], 10);
    assert_eq!(ws_book(&mut ok)["snapshot"], true);
}

/// An SSE stream's `book` events, read off a raw socket.
struct SseBooks {
    tcp: TcpStream,
    dechunk: support::Dechunker,
    text: String,
}

impl SseBooks {
    fn open(relay: &Relay, query: &str) -> SseBooks {
        let mut tcp = TcpStream::connect(relay.addr).unwrap();
        tcp.set_read_timeout(Some(support::DEADLINE)).unwrap();
        write!(
            tcp,
            "GET /v1/stream?{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        SseBooks {
            tcp,
            dechunk: support::Dechunker::default(),
            text: String::new(),
        }
    }

    /// The next `book` event's data.
    fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                if event.lines().any(|l| l == "event: book") {
                    let data = event
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap();
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let mut buf = [0u8; 65_536];
            let n = self.tcp.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended");
            let body = self.dechunk.feed(&buf[..n]);
            self.text.push_str(&String::from_utf8_lossy(&body));
        }
    }
}

#[test]
fn sse_and_poll_books_end_with_the_rest_book() {
    let (relay, mut feed) = book_relay("BOOKSSE");
    let mut sse = SseBooks::open(&relay, "book=AAPL&depth=5");
    let mut copy = Copy::new(5);
    copy.apply(&sse.next());
    // A poll with no prior state: whole books, no quotes without symbols=.
    let r = relay.get("/v1/poll?book=AAPL,MSFT&depth=5");
    assert_eq!(r.status, 200, "{}", r.text());
    let first: Value = r.json();
    assert_eq!(first["quotes"].as_array().map(Vec::len), Some(0), "{first}");
    assert_eq!(first["books"].as_array().map(Vec::len), Some(2), "{first}");
    assert!(
        first["books"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["snapshot"] == true)
    );
    let since = format!("{}:{}", "BOOKSSE", first["seq"]);

    let mut rng = Rng(1234);
    let mut last = 0;
    for _ in 0..8 {
        let burst: Vec<Message<'static>> = (0..30).map(|_| rng.level(0)).collect();
        last = feed.send(&burst);
        relay.wait_seq(last);
    }
    let rest: Value = relay.get("/v1/book/AAPL?depth=5").json();
    while !copy.equals(&rest) {
        copy.apply(&sse.next());
    }
    // Resuming from `since`: only AAPL's book moved, and it comes whole.
    let later: Value = relay
        .get(&format!(
            "/v1/poll?book=AAPL,MSFT&depth=5&since={since}&timeout_ms=0"
        ))
        .json();
    let books = later["books"].as_array().unwrap();
    assert_eq!(books.len(), 1, "{later}");
    assert_eq!(books[0]["symbol"], "AAPL");
    let mut polled = Copy::new(5);
    polled.apply(&books[0]);
    assert!(polled.equals(&rest), "{later} vs {rest}");
    assert!(books[0]["seq"].as_u64() <= Some(last));
    // Nothing moved since: the poll waits, and answers no books.
    let since = format!("BOOKSSE:{}", later["seq"]);
    let idle: Value = relay
        .get(&format!("/v1/poll?book=AAPL&since={since}&timeout_ms=100"))
        .json();
    assert_eq!(idle["books"].as_array().map(Vec::len), Some(0), "{idle}");
}
