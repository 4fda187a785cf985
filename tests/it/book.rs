//! Depth of book over REST against the real relay: `'L'` messages sent as
//! datagrams build each symbol's book; `/v1/book/{symbol}` answers it best
//! first to the depth asked, with a checksum a client can recompute from
//! what it got, an ETag that stands still with the book, and the errors
//! and entitlements of every other route.

use crate::support;

use serde_json::Value;
use support::{FeedAddr, FeedWriter, Relay, scratch};
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
    use tickrelay::auth::{Claims, Rights, mint_hs256};
    let secret = b"a-test-secret-of-more-than-32-bytes!!";
    let file = scratch(&format!("book-secret-{}", support::unique_suffix()));
    std::fs::write(&file, secret).unwrap();
    let group = FeedAddr::unique();
    let relay = Relay::in_process(&[
        "--feed-a",
        &group.arg(),
        "--jwt-secret-file",
        file.to_str().unwrap(),
    ]);
    let mut feed = FeedWriter::new(group, "ENTITLED");
    feed.list(&["AAA", "BBB"]);
    let seq = feed.send(&[level(0, Side::Bid, 1_000_000, 10, 1)]);
    relay.wait_seq(seq);
    let token = |symbols: &[&str], channels: &[&str], delay_ms: u64| {
        let claims = Claims {
            sub: "ladder".into(),
            exp: tickrelay::clock::now_ms() / 1000 + 3_600,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            tickrelay: Rights {
                symbols: Some(symbols.iter().map(|s| s.to_string()).collect()),
                channels: Some(channels.iter().map(|s| s.to_string()).collect()),
                delay_ms,
                ..Rights::default()
            },
        };
        format!("Bearer {}", mint_hs256(secret, &claims).unwrap())
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
