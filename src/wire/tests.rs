//! Unit and property tests of the codec: framing, every message kind both
//! ways, and the refusals.

use super::*;
use crate::price::Price;
use proptest::prelude::*;

fn quote(locate: Locate) -> Message<'static> {
    Message::Quote {
        locate,
        ts: 1_764_300_000_123_456_789,
        bid: Price(1_891_200),
        ask: Price(1_891_400),
        bid_size: 300,
        ask_size: 200,
    }
}

fn packet_of(msgs: &[Message<'_>]) -> Vec<u8> {
    let mut b = PacketBuilder::new(Session::new("S1"), 7);
    let mut out = Vec::new();
    for m in msgs {
        b.push(m, &mut |p| out.push(p.to_vec()));
    }
    b.flush(&mut |p| out.push(p.to_vec()));
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

#[test]
fn short_header_is_an_error() {
    for n in 0..HEADER_LEN {
        assert_eq!(
            Packet::parse(&vec![0; n]).unwrap_err(),
            DecodeError::ShortHeader
        );
    }
}

#[test]
fn count_overrun_is_an_error() {
    let mut p = packet_of(&[quote(1)]);
    p[18..20].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::CountOverrun);
}

#[test]
fn length_overrun_is_an_error() {
    let mut p = packet_of(&[quote(1)]);
    p[20..22].copy_from_slice(&500u16.to_be_bytes());
    assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::LengthOverrun);
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut p = packet_of(&[quote(1)]);
    p.push(0);
    assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::TrailingBytes);
}

#[test]
fn heartbeat_and_end_of_session_with_a_body_are_errors() {
    for count in [COUNT_HEARTBEAT, COUNT_END_OF_SESSION] {
        let mut p = header(Session::new("S1"), 7, count).to_vec();
        assert!(Packet::parse(&p).is_ok());
        p.push(0);
        assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::TrailingBytes);
        p.resize(130, 0xAB);
        assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::TrailingBytes);
    }
}

#[test]
fn session_ids_must_be_printable_ascii_space_padded() {
    for bad in [
        *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09",
        *b"          ",
        *b" LEADING  ",
        *b"IN SIDE   ",
        *b"TAB\t      ",
        [0xC3, 0xA9, b' ', b' ', b' ', b' ', b' ', b' ', b' ', b' '],
        *b"ABC\x7f      ",
    ] {
        let p = header(Session(bad), 1, 0);
        assert_eq!(
            Packet::parse(&p).unwrap_err(),
            DecodeError::BadSession,
            "{bad:?}"
        );
    }
    for good in ["A", "S1764300000", "0123456789", "a-b_c.~!"] {
        let p = header(Session::new(good), 1, 0);
        assert!(Packet::parse(&p).is_ok(), "{good}");
    }
}

#[test]
fn oversized_datagram_is_an_error() {
    assert_eq!(
        Packet::parse(&vec![b'A'; 10_000]).unwrap_err(),
        DecodeError::Oversized
    );
}

#[test]
fn bad_msgpack_is_an_error() {
    assert_eq!(decode_message(&[]).unwrap_err(), DecodeError::BadMsgpack);
    assert_eq!(
        decode_message(&[0xc1]).unwrap_err(),
        DecodeError::BadMsgpack
    );
    // Array of 7 announced, only the type present.
    assert_eq!(
        decode_message(&[0x97, 81]).unwrap_err(),
        DecodeError::BadMsgpack
    );
    // Type code is a string, not an integer.
    assert_eq!(
        decode_message(&[0x91, 0xa1, b'Q']).unwrap_err(),
        DecodeError::BadMsgpack
    );
    // A quote with too few fields.
    assert_eq!(
        decode_message(&[0x93, 81, 1, 2]).unwrap_err(),
        DecodeError::BadMsgpack
    );
}

#[test]
fn unknown_type_is_its_own_error() {
    assert_eq!(
        decode_message(&[0x92, b'Z', 1]).unwrap_err(),
        DecodeError::UnknownType
    );
}

#[test]
fn out_of_range_fields_are_errors() {
    // Locate 70,000 does not fit u16.
    let mut buf = Vec::new();
    rmp::encode::write_array_len(&mut buf, 7).unwrap();
    for v in [81u64, 70_000, 1, 1, 1, 1, 1] {
        rmp::encode::write_uint(&mut buf, v).unwrap();
    }
    assert_eq!(decode_message(&buf).unwrap_err(), DecodeError::BadField);
    // Negative size.
    let mut buf = Vec::new();
    rmp::encode::write_array_len(&mut buf, 7).unwrap();
    for v in [81i64, 1, 1, 1, 1, -5, 1] {
        rmp::encode::write_sint(&mut buf, v).unwrap();
    }
    assert_eq!(decode_message(&buf).unwrap_err(), DecodeError::BadField);
}

#[test]
fn heartbeat_and_end_of_session() {
    let b = PacketBuilder::new(Session::new("S1"), 42);
    let hb = b.heartbeat();
    let p = Packet::parse(&hb).unwrap();
    assert_eq!((p.kind, p.seq, p.count), (PacketKind::Heartbeat, 42, 0));
    assert_eq!(p.messages().count(), 0);
    let eos = b.end_of_session();
    assert_eq!(Packet::parse(&eos).unwrap().kind, PacketKind::EndOfSession);
}

#[test]
fn builder_splits_at_packet_limit() {
    let mut b = PacketBuilder::new(Session::new("S1"), 1);
    let mut packets = Vec::new();
    for i in 0..500 {
        b.push(&quote(i), &mut |p| packets.push(p.to_vec()));
    }
    b.flush(&mut |p| packets.push(p.to_vec()));
    assert!(packets.len() > 1);
    let mut next = 1;
    for p in &packets {
        assert!(p.len() <= MAX_PACKET);
        let parsed = Packet::parse(p).unwrap();
        assert_eq!(parsed.seq, next);
        next = parsed.end_seq();
    }
    assert_eq!(next, 501);
}

#[test]
fn session_padding() {
    let s = Session::new("ABC");
    assert_eq!(&s.0, b"ABC       ");
    assert_eq!(s.as_str(), "ABC");
    assert_eq!(Session::new("0123456789XYZ").as_str(), "0123456789");
}

fn arb_message() -> impl Strategy<Value = (u8, u16, u64, i64, i64, u32, u32, u64, String, String)> {
    (
        0u8..3,
        any::<u16>(),
        any::<u64>(),
        any::<i64>(),
        any::<i64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        "[A-Z]{1,8}",
        "[ -~]{0,40}",
    )
}

fn build<'a>(t: &'a (u8, u16, u64, i64, i64, u32, u32, u64, String, String)) -> Message<'a> {
    let (k, locate, ts, p1, p2, s1, s2, vol, sym, name) = t;
    match k {
        0 => Message::Directory {
            locate: *locate,
            ts: *ts,
            symbol: sym,
            name,
            prev_close: Price(*p1),
        },
        1 => Message::Quote {
            locate: *locate,
            ts: *ts,
            bid: Price(*p1),
            ask: Price(*p2),
            bid_size: *s1,
            ask_size: *s2,
        },
        _ => Message::Trade {
            locate: *locate,
            ts: *ts,
            price: Price(*p1),
            size: *s1,
            volume: *vol,
        },
    }
}

fn arb_state() -> impl Strategy<Value = Message<'static>> {
    let quote = proptest::option::of((
        1u64..,
        any::<i64>(),
        any::<i64>(),
        any::<u32>(),
        any::<u32>(),
    ));
    let trade = proptest::option::of((1u64.., any::<i64>(), any::<u32>(), any::<u64>()));
    (any::<u16>(), any::<u64>(), quote, trade).prop_map(|(locate, ts, q, t)| Message::State {
        locate,
        ts,
        quote: q.map(|(seq, b, a, bs, as_)| StateQuote {
            seq,
            bid: Price(b),
            ask: Price(a),
            bid_size: bs,
            ask_size: as_,
        }),
        trade: t.map(|(seq, p, sz, v)| StateTrade {
            seq,
            last: Price(p),
            last_size: sz,
            volume: v,
        }),
    })
}

#[test]
fn state_with_zeros_for_an_empty_half_decodes() {
    // A producer that writes 0 instead of nil in an empty half.
    let raw = rmp_serde::to_vec(&(
        83u8,
        7u16,
        5u64,
        0u8,
        0u8,
        0u8,
        0u8,
        0u8,
        9u64,
        1_000_000i64,
        10u32,
        20u64,
    ))
    .unwrap();
    assert_eq!(
        decode_message(&raw),
        Ok(Message::State {
            locate: 7,
            ts: 5,
            quote: None,
            trade: Some(StateTrade {
                seq: 9,
                last: Price(1_000_000),
                last_size: 10,
                volume: 20
            }),
        })
    );
    let short = rmp_serde::to_vec(&(83u8, 7u16, 5u64, 0u8)).unwrap();
    assert_eq!(decode_message(&short), Err(DecodeError::BadMsgpack));
}

proptest! {
    #[test]
    fn state_round_trip_and_matches_rmp_serde(msg in arb_state()) {
        let mut ours = Vec::new();
        msg.encode(&mut ours);
        prop_assert_eq!(decode_message(&ours), Ok(msg));
        let Message::State { locate, ts, quote, trade } = msg else { unreachable!() };
        let theirs = rmp_serde::to_vec(&(
            83u8, locate, ts,
            quote.map_or(0, |q| q.seq), quote.map(|q| q.bid.raw()), quote.map(|q| q.ask.raw()),
            quote.map(|q| q.bid_size), quote.map(|q| q.ask_size),
            trade.map_or(0, |t| t.seq), trade.map(|t| t.last.raw()),
            trade.map(|t| t.last_size), trade.map(|t| t.volume),
        )).unwrap();
        prop_assert_eq!(decode_message(&theirs), Ok(msg));
    }

    #[test]
    fn message_round_trip(t in arb_message()) {
        let msg = build(&t);
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        prop_assert_eq!(decode_message(&buf), Ok(msg));
    }

    #[test]
    fn encoding_matches_rmp_serde_tuples(t in arb_message()) {
        let msg = build(&t);
        let mut ours = Vec::new();
        msg.encode(&mut ours);
        let theirs = match msg {
            Message::Directory { locate, ts, symbol, name, prev_close } =>
                rmp_serde::to_vec(&(68u8, locate, ts, symbol, name, prev_close.raw())).unwrap(),
            Message::Quote { locate, ts, bid, ask, bid_size, ask_size } =>
                rmp_serde::to_vec(&(81u8, locate, ts, bid.raw(), ask.raw(), bid_size, ask_size)).unwrap(),
            Message::Trade { locate, ts, price, size, volume } =>
                rmp_serde::to_vec(&(84u8, locate, ts, price.raw(), size, volume)).unwrap(),
            Message::State { .. } | Message::Level { .. } | Message::Book { .. } => {
                unreachable!("arb_message makes quotes, trades and directory entries")
            }
        };
        // Same values whatever integer widths each encoder picked.
        prop_assert_eq!(decode_message(&theirs), Ok(msg));
        prop_assert_eq!(decode_message(&ours), decode_message(&theirs));
    }

    #[test]
    fn packet_round_trip(ts in proptest::collection::vec(arb_message(), 1..40), first in 1u64..1_000_000) {
        let msgs: Vec<Message<'_>> = ts.iter().map(build).collect();
        let mut b = PacketBuilder::new(Session::new("PROP"), first);
        let mut packets = Vec::new();
        for m in &msgs {
            b.push(m, &mut |p| packets.push(p.to_vec()));
        }
        b.flush(&mut |p| packets.push(p.to_vec()));
        let mut decoded = Vec::new();
        let mut next = first;
        for p in &packets {
            prop_assert!(p.len() <= MAX_PACKET);
            let parsed = Packet::parse(p).unwrap();
            prop_assert_eq!(parsed.seq, next);
            prop_assert_eq!(parsed.session.as_str(), "PROP");
            next = parsed.end_seq();
            for raw in parsed.messages() {
                decoded.push(decode_message(raw).unwrap());
            }
        }
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        if let Ok(p) = Packet::parse(&data) {
            for raw in p.messages() {
                let _ = decode_message(raw);
            }
        }
        let _ = decode_message(&data);
    }
}
