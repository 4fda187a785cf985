//! permessage-deflate (RFC 7692) on `/v1/ws`, against a strict client that
//! inflates and compresses with flate2 itself (`support::ws`): each
//! negotiation variant carries quotes both ways, offers the relay cannot
//! honour are declined (the connection goes on uncompressed), a
//! compressed frame that inflates past `max_frame_bytes` is closed with
//! 1009, and `deflate = off` never negotiates. `small_context` keeps its
//! context across frames within the window it announces (checked by an
//! inflater in that window, `support::inflate`) in a few KiB a connection.

use crate::support;

use support::inflate::Windowed;
use support::ws::{Strict, TEXT, masked};
use support::{FeedAddr, FeedWriter, Relay};
use tickrelay::deflate::{Inflater, SMALL_WINDOW_BITS, SmallDeflater};

/// A relay with `extra` flags whose feed lists AAA and BBB, both quoted.
fn start(extra: &[&str]) -> (Relay, FeedWriter) {
    let group = FeedAddr::unique();
    let mut args = vec!["--fanout-shards", "1"];
    args.extend_from_slice(extra);
    let relay = Relay::in_process_feed(group, &args);
    let mut feed = FeedWriter::new(group, "DEFLATE");
    feed.list(&["AAA", "BBB"]);
    feed.send(&[
        FeedWriter::quote_msg(0, 10_000),
        FeedWriter::quote_msg(1, 20_000),
    ]);
    relay.wait_ready();
    (relay, feed)
}

/// The next data frame whose text holds `needle` (pings and feed status
/// skipped), and whether it came compressed.
fn data_with(ws: &mut Strict, needle: &str) -> (String, bool) {
    loop {
        let f = ws.frame().unwrap_or_else(|| panic!("EOF before {needle}"));
        if f.op == 0x1 && f.text().contains(needle) {
            return (f.text(), f.compressed);
        }
        assert!(
            f.op == 0x9 || f.text().contains(r#""type":"feed""#),
            "{f:?}"
        );
    }
}

/// Subscribes (compressed when `compressed_ops`), then checks the snapshot
/// and `rounds` ticks of AAA, each with its price, all compressed iff the
/// extension was agreed; a compressed `ping` is answered.
fn round_trip(ws: &mut Strict, feed: &mut FeedWriter, compressed_ops: bool, rounds: i64) {
    let agreed = ws.deflate.is_some();
    let sub = br#"{"op":"subscribe","symbols":["AAA"]}"#;
    if compressed_ops {
        ws.send_compressed(sub);
    } else {
        ws.send(&masked(TEXT, sub));
    }
    assert_eq!(data_with(ws, r#""type":"subscribed""#).1, agreed);
    let (snap, c) = data_with(ws, r#""type":"snapshot""#);
    assert!(snap.contains(r#""symbol":"AAA""#), "{snap}");
    assert_eq!(c, agreed);
    for i in 1..=rounds {
        feed.send(&[FeedWriter::quote_msg(0, 10_000 + i)]);
        let want = format!(r#""bid":"{}""#, price(10_000 + i));
        loop {
            let (ticks, c) = data_with(ws, r#""type":"ticks""#);
            assert_eq!(c, agreed, "every data frame compressed iff agreed");
            if ticks.contains(&want) {
                break;
            }
        }
    }
    if compressed_ops {
        ws.send_compressed(br#"{"op":"ping"}"#);
    } else {
        ws.send(&masked(TEXT, br#"{"op":"ping"}"#));
    }
    assert_eq!(data_with(ws, r#""type":"pong""#).1, agreed);
}

/// The text of a bid `n` as the feed writer quotes it.
fn price(n: i64) -> String {
    tickrelay::price::Price(n).to_string()
}

#[test]
fn every_negotiation_variant_round_trips_quotes() {
    let (relay, mut feed) = start(&["--deflate", "context"]);
    for (offer, answer) in [
        ("permessage-deflate", "permessage-deflate"),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
        ),
        (
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=15",
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            // The first offer asks a window the relay cannot keep to.
            "permessage-deflate; server_max_window_bits=10, permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ),
    ] {
        let mut ws = Strict::connect_offering(relay.addr, "", &[offer]);
        let got = ws.deflate.as_ref().map(|d| d.answer.clone());
        assert_eq!(got.as_deref(), Some(answer), "offer {offer}");
        round_trip(&mut ws, &mut feed, true, 5);
    }
    // A connection with context takeover holds a compressor and an inflater.
    let ws = {
        let mut ws = Strict::connect_offering(relay.addr, "", &["permessage-deflate"]);
        round_trip(&mut ws, &mut feed, true, 2);
        ws
    };
    relay.wait_metric("tickrelay_ws_deflate_bytes", |v| v > 300_000.0);
    drop(ws);
    relay.wait_metric("tickrelay_ws_deflate_bytes", |v| v == 0.0);
    relay.wait_metric("tickrelay_ws_deflate_connections", |v| v == 0.0);

    // The default, no_context: both sides reset per message, whatever the
    // offer; nothing held between messages; two clients sent the same
    // frames share one compression.
    let (relay, mut feed) = start(&[]);
    let offer = "permessage-deflate; client_max_window_bits";
    let mut a = Strict::connect_offering(relay.addr, "", &[offer]);
    let mut b = Strict::connect_offering(relay.addr, "", &[offer]);
    assert_eq!(
        a.deflate.as_ref().unwrap().answer,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    round_trip(&mut a, &mut feed, true, 3);
    round_trip(&mut b, &mut feed, false, 3);
    for i in 0..20 {
        feed.send(&[FeedWriter::quote_msg(0, 30_000 + i)]);
        let want = format!(r#""bid":"{}""#, price(30_000 + i));
        for ws in [&mut a, &mut b] {
            while !data_with(ws, r#""type":"ticks""#).0.contains(&want) {}
        }
    }
    let m = relay.metrics();
    assert_eq!(m.get("tickrelay_ws_deflate_bytes"), 0.0);
    assert_eq!(m.get("tickrelay_ws_deflate_connections"), 2.0);
    assert!(
        m.get("tickrelay_ws_deflate_shared_messages_total") > 0.0,
        "the same ticks frame to both clients compressed once"
    );
}

/// Ticks written by the fan-out's sweep (staged, then sent with the rest of
/// its run) and answers written by the connection's own task interleave on
/// one stream. With context takeover each message is compressed against
/// the ones before it, so a message sent out of the order it was compressed
/// in would not inflate: every frame must inflate to JSON, every `ping` op
/// be answered, and the ticks end at the last price.
#[test]
fn ticks_and_answers_interleaved_keep_their_compression_order() {
    let (relay, mut feed) = start(&["--deflate", "context"]);
    let mut ws = Strict::connect_offering(relay.addr, "", &["permessage-deflate"]);
    assert_eq!(
        ws.deflate.as_ref().map(|d| d.answer.as_str()),
        Some("permessage-deflate")
    );
    round_trip(&mut ws, &mut feed, true, 1);
    // Other subscribers make each sweep long, so answers are written while
    // this client's tick waits in the sweep's run.
    let others: Vec<Strict> = (0..300)
        .map(|_| {
            let mut o = Strict::connect(relay.addr, "");
            o.send(&masked(TEXT, br#"{"op":"subscribe","symbols":["AAA"]}"#));
            o
        })
        .collect();
    relay.wait_metric("tickrelay_subscriptions", |v| v >= 301.0);
    let rounds = 400;
    for i in 1..=rounds {
        feed.send(&[FeedWriter::quote_msg(0, 20_000 + i)]);
        ws.send_compressed(br#"{"op":"ping"}"#);
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let last = format!(r#""bid":"{}""#, price(20_000 + rounds));
    let (mut pongs, mut at_last) = (0, false);
    while pongs < rounds || !at_last {
        let f = ws.frame().expect("the connection stays open");
        if f.op != 0x1 {
            continue;
        }
        let text = f.text();
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a frame that is not JSON ({e}): {text:?}"));
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("ticks") => at_last |= text.contains(&last),
            _ => {}
        }
    }
    assert_eq!(pongs, rounds);
    drop(others);
}

#[test]
fn offers_the_relay_cannot_honour_are_declined_and_the_connection_works() {
    let (relay, mut feed) = start(&["--deflate", "context"]);
    for offer in [
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=yes",
        "permessage-deflate; unknown_param",
        "x-webkit-deflate-frame",
    ] {
        let mut ws = Strict::connect_offering(relay.addr, "", &[offer]);
        assert!(ws.deflate.is_none(), "declined: {offer}");
        round_trip(&mut ws, &mut feed, false, 2);
        // RSV1 without the extension: a protocol error.
        ws.send(&masked(TEXT | 0x40, b"x"));
        assert_eq!(ws.until_close().0, 1002, "{offer}");
    }
}

#[test]
fn a_compressed_frame_inflating_past_max_frame_bytes_is_closed_1009() {
    let (relay, mut feed) = start(&["--max-frame-bytes", "65536"]);
    let mut ws = Strict::connect_offering(relay.addr, "", &["permessage-deflate"]);
    round_trip(&mut ws, &mut feed, true, 1);
    // 32 MiB of spaces in a frame of about 32 KiB.
    let bomb = {
        let d = ws.deflate.as_mut().unwrap();
        let chunk = vec![b' '; 1 << 20];
        let mut all = Vec::new();
        for _ in 0..32 {
            all.extend_from_slice(&chunk);
        }
        d.compress(&all)
    };
    assert!(bomb.len() < 65_536, "{}", bomb.len());
    ws.send(&masked(TEXT | 0x40, &bomb));
    let (code, reason) = ws.until_close();
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("max_frame_bytes"), "{reason}");
    ws.answer_close(1009, "1009 after a bomb");
}

#[test]
fn deflate_off_never_negotiates() {
    let (relay, mut feed) = start(&["--deflate", "off"]);
    let mut ws = Strict::connect_offering(
        relay.addr,
        "",
        &[
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
        ],
    );
    assert!(ws.deflate.is_none());
    round_trip(&mut ws, &mut feed, false, 2);
    assert_eq!(relay.metrics().get("tickrelay_ws_deflate_connections"), 0.0);
}

#[test]
fn small_context_keeps_its_context_across_frames_in_a_few_kib() {
    let (relay, mut feed) = start(&["--deflate", "small_context"]);
    // What Chromium offers.
    let chromium = "permessage-deflate; client_max_window_bits";
    let mut ws = Strict::connect_offering(relay.addr, "", &[chromium]);
    assert_eq!(
        ws.deflate.as_ref().unwrap().answer,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=11"
    );
    round_trip(&mut ws, &mut feed, true, 5);
    // Many frames, each inflated in the 2 KiB window after the ones
    // before: a frame of ticks alone would compress to most of its size.
    let (mut raw, mut wire) = (0, 0);
    for i in 1..=300 {
        feed.send(&[FeedWriter::quote_msg(0, 40_000 + i as i64 * 7)]);
        let want = format!(r#""bid":"{}""#, price(40_000 + i as i64 * 7));
        loop {
            let f = ws.text_with(r#""type":"ticks""#);
            assert!(f.compressed);
            raw += f.payload.len();
            wire += f.wire;
            if f.text().contains(&want) {
                break;
            }
        }
    }
    assert!(
        wire * 3 < raw,
        "{wire} bytes on the wire for {raw} of ticks"
    );
    let m = relay.metrics();
    assert_eq!(m.get("tickrelay_ws_deflate_connections"), 1.0);
    let held = m.get("tickrelay_ws_deflate_bytes");
    assert!(held > 4096.0 && held <= 16384.0, "{held} bytes held");

    // Asked to compress each message alone, in a smaller window: the
    // connection holds nothing more.
    let alone = "permessage-deflate; server_no_context_takeover; server_max_window_bits=9";
    let mut b = Strict::connect_offering(relay.addr, "", &[alone]);
    assert_eq!(
        b.deflate.as_ref().unwrap().answer,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=9"
    );
    round_trip(&mut b, &mut feed, false, 3);
    assert_eq!(relay.metrics().get("tickrelay_ws_deflate_bytes"), held);
    drop(ws);
    relay.wait_metric("tickrelay_ws_deflate_bytes", |v| v == 0.0);
    relay.wait_metric("tickrelay_ws_deflate_connections", |v| v == 1.0);
}

/// Quote-like messages, then edge cases: empty, long runs, bytes that do
/// not compress (stored), a run longer than a match.
fn messages() -> Vec<Vec<u8>> {
    let mut x = 1u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) as u32
    };
    let symbols = ["AAPL", "MSFT", "NVDA", "V", "QUBT", "XGX"];
    let mut out: Vec<Vec<u8>> = (0..400)
        .map(|i| {
            let s = symbols[next() as usize % symbols.len()];
            let bid = 10_000 + next() % 500;
            format!(
                r#"{{"type":"ticks","seq":{},"quotes":[{{"symbol":"{s}","seq":{},"bid":"{}.{:02}00","bid_size":{},"ts":{}}}]}}"#,
                50_000 + i * 3,
                49_990 + i * 3,
                bid / 100,
                bid % 100,
                100 * (1 + next() % 20),
                1_796_664_714_000_000_000u64 + u64::from(next()),
            )
            .into_bytes()
        })
        .collect();
    out.push(Vec::new());
    out.push(vec![b'a'; 100_000]);
    out.push((0..70_000).map(|_| next() as u8).collect());
    out.push(b"xyz".repeat(300));
    out.push(b"{}".to_vec());
    out
}

#[test]
fn the_small_compressor_round_trips_within_its_window() {
    let msgs = messages();
    let raw: usize = msgs[..400].iter().map(Vec::len).sum();
    for bits in [8, SMALL_WINDOW_BITS, 15] {
        for context in [true, false] {
            let mut d = SmallDeflater::new(bits);
            let mut flate = Inflater::new(context);
            let mut strict = Windowed::new(u32::from(bits));
            let mut compressed = 0;
            for (k, m) in msgs.iter().enumerate() {
                let mut out = vec![0xAA; 3];
                d.message(m, &mut out, context);
                assert_eq!(&out[..3], [0xAA; 3]);
                let out = &out[3..];
                assert!(!out.ends_with(&[0, 0, 0xff, 0xff]));
                // Never more than stored blocks would take.
                let blocks = m.len().div_ceil(65_535);
                assert!(out.len() <= m.len() + 5 * blocks + 1, "message {k}");
                if k < 400 {
                    compressed += out.len();
                }
                assert_eq!(&flate.message(out, 1 << 20).unwrap(), m, "message {k}");
                if !context {
                    strict.reset();
                }
                assert_eq!(&strict.message(out), m, "message {k}, {bits} bits");
            }
            if context && bits == SMALL_WINDOW_BITS {
                assert!(compressed * 3 < raw, "{compressed} of {raw} bytes");
            }
            if !context {
                assert!(compressed * 2 > raw, "each alone: {compressed} of {raw}");
            }
        }
    }
}

#[test]
fn every_length_and_distance_the_small_compressor_writes_is_coded_right() {
    let mut x = 7u32;
    let mut byte = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    };
    let mut data: Vec<u8> = (0..40_000).map(|_| byte()).collect();
    for (k, len) in (4..=258).enumerate() {
        let dist = [1, 2, 3, 4, 5, 7, 100, 1_000, 8_000, 24_577, 32_768][k % 11];
        let from = data.len() - dist;
        for i in 0..len {
            data.push(data[from + i]);
        }
        data.push(byte());
    }
    let mut d = SmallDeflater::new(15);
    let mut strict = Windowed::new(15);
    let mut flate = Inflater::new(true);
    for part in [&data[..40_000], &data[40_000..]] {
        let mut out = Vec::new();
        d.message(part, &mut out, true);
        assert_eq!(strict.message(&out), part);
        assert_eq!(flate.message(&out, 1 << 20).unwrap(), part);
    }
    let mut out = Vec::new();
    SmallDeflater::new(15).message(&data, &mut out, true);
    assert!(out.len() < data.len() / 2 + 20_000, "{}", out.len());
}
