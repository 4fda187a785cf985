//! The fuzz targets, one per file. Each states the invariants it checks; a
//! broken one panics, and the engine keeps the input.
//!
//! - [`PacketTarget`] (`packet`): whole datagrams.
//! - [`MessageTarget`] (`message`): single MessagePack payloads.
//! - [`SequencerTarget`] (`sequencer`): the sequencer fed scripts of datagrams.
//! - [`HttpHeadTarget`] (`http_head`): the request head parser of streams.
//! - [`ClientOpTarget`] (`client_op`): WebSocket client operations.
//! - [`DeflateTarget`] (`deflate`): permessage-deflate offers and
//!   compressed client frames.
//! - [`BookTarget`] (`book`): depth of book — `'L'`s and `'B'`s applied
//!   and merged, in and out of recovery, and raw book messages.
//! - [`BookFrameTarget`] (`book_frame`): the diff frames a streaming client
//!   gets, applied by the client's rules, against the book read.
//!
//! This file holds the table of targets and what more than one of them uses.

mod book;
mod book_frame;
mod client_op;
mod deflate;
mod http_head;
mod message;
mod packet;
mod sequencer;

use rand::Rng;
use rand::rngs::SmallRng;
use tickrelay::price::Price;
use tickrelay::wire::{
    DecodeError, Levels, Message, PriceLevel, Side, StateQuote, StateTrade, decode_message,
};

use crate::engine::{Target, fnv};

pub use book::BookTarget;
pub use book_frame::BookFrameTarget;
pub use client_op::ClientOpTarget;
pub use deflate::DeflateTarget;
pub use http_head::{HttpHeadTarget, ROUTE_EVERY, TCP_EVERY};
pub use message::MessageTarget;
pub use packet::PacketTarget;
pub use sequencer::SequencerTarget;

/// Every target, by name.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(PacketTarget),
        Box::new(MessageTarget),
        Box::new(SequencerTarget),
        Box::new(HttpHeadTarget::new()),
        Box::new(ClientOpTarget),
        Box::new(BookTarget::new()),
        Box::new(BookFrameTarget),
        Box::new(DeflateTarget),
    ]
}

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn Target>> {
    all().into_iter().find(|t| t.name() == name)
}

fn sig(parts: &[u64]) -> u64 {
    let mut bytes = Vec::with_capacity(parts.len() * 8);
    for p in parts {
        bytes.extend_from_slice(&p.to_le_bytes());
    }
    fnv(&bytes)
}

fn fnv_str(s: &str) -> u64 {
    fnv(s.as_bytes())
}

fn error_index(e: DecodeError) -> u64 {
    fnv(e.reason().as_bytes()) & 0xff
}

/// A message of any kind with random, often edge, values.
fn random_message(rng: &mut SmallRng) -> Message<'static> {
    fn int(rng: &mut SmallRng) -> u64 {
        match rng.gen_range(0..4) {
            0 => rng.gen_range(0..300),
            1 => u64::MAX - rng.gen_range(0..3),
            _ => rng.r#gen(),
        }
    }
    let locate = rng.r#gen();
    let ts = int(rng);
    match rng.gen_range(0..6) {
        0 => {
            let symbol: &'static str =
                ["AAPL", "MSFT", "X", "BRK.B", "ABCDEFGHIJKLMNOP"][rng.gen_range(0..5)];
            let name: &'static str = ["Apple Inc.", "", "Ünïcode Corp", "x"][rng.gen_range(0..4)];
            Message::Directory {
                locate,
                ts,
                symbol,
                name,
                prev_close: Price(int(rng) as i64),
            }
        }
        1 => Message::Quote {
            locate,
            ts,
            bid: Price(int(rng) as i64),
            ask: Price(int(rng) as i64),
            bid_size: rng.r#gen(),
            ask_size: rng.r#gen(),
        },
        2 => Message::Trade {
            locate,
            ts,
            price: Price(int(rng) as i64),
            size: rng.r#gen(),
            volume: int(rng),
        },
        4 => Message::Level {
            locate,
            ts,
            side: if rng.r#gen() { Side::Bid } else { Side::Ask },
            price: Price(int(rng) as i64),
            size: rng.r#gen(),
            orders: rng.r#gen(),
        },
        5 => Message::Book {
            locate,
            ts,
            book_seq: int(rng),
            bids: Levels::from_slice(&BIDS[..rng.gen_range(0..=BIDS.len())]),
            asks: Levels::from_slice(&ASKS[..rng.gen_range(0..=ASKS.len())]),
        },
        _ => Message::State {
            locate,
            ts,
            quote: rng.r#gen::<bool>().then(|| StateQuote {
                seq: int(rng).max(1),
                bid: Price(int(rng) as i64),
                ask: Price(int(rng) as i64),
                bid_size: rng.r#gen(),
                ask_size: rng.r#gen(),
            }),
            trade: rng.r#gen::<bool>().then(|| StateTrade {
                seq: int(rng).max(1),
                last: Price(int(rng) as i64),
                last_size: rng.r#gen(),
                volume: int(rng),
            }),
        },
    }
}

/// Book sides a `'B'` may carry: best first.
static BIDS: [PriceLevel; 3] = [
    PriceLevel {
        price: Price(1_891_200),
        size: 300,
        orders: 3,
    },
    PriceLevel {
        price: Price(1_891_100),
        size: 100,
        orders: 1,
    },
    PriceLevel {
        price: Price(-5),
        size: u32::MAX,
        orders: u32::MAX,
    },
];
static ASKS: [PriceLevel; 2] = [
    PriceLevel {
        price: Price(1_891_400),
        size: 200,
        orders: 2,
    },
    PriceLevel {
        price: Price(i64::MAX),
        size: 1,
        orders: 0,
    },
];

fn kind_code(m: &Message<'_>) -> u8 {
    match m {
        Message::Directory { .. } => b'D',
        Message::Quote { .. } => b'Q',
        Message::Trade { .. } => b'T',
        Message::State { .. } => b'S',
        Message::Level { .. } => b'L',
        Message::Book { .. } => b'B',
    }
}

fn round_trip(m: &Message<'_>) {
    let mut again = Vec::new();
    m.encode(&mut again);
    assert_eq!(
        decode_message(&again).as_ref(),
        Ok(m),
        "a decoded message must encode back to itself"
    );
}
