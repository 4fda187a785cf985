//! The `book` target.

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::SmallRng;
use tickrelay::price::Price;
use tickrelay::table::{Applied, Books, Table};
use tickrelay::wire::{Levels, Message, PriceLevel, Session, Side, decode_message};

use super::{random_message, sig};
use crate::engine::Target;

/// `book`: depth of book in the table.
///
/// An input whose first byte is odd is a script: its 4-byte chunks are
/// `'L'`s (side, one of 32 prices a side, size 0–4 lots, orders); the
/// first `m` are applied in order, then a recovery begins and the rest
/// arrive in an order the input picks, with a `'B'` reflecting the first
/// `k` somewhere among them. Invariant: once settled, the book is exactly
/// the one applying every `'L'` in order gives (and still is after the
/// recovery ends), and every read is well formed.
///
/// Otherwise the rest of the input is one message payload applied to a
/// table that lists its locate. Invariant: no panic; the book read after it
/// is well formed (best first, sizes above 0, within the bound).
///
/// The books and the table are made once and reset before each run (a
/// reset is bounded by what the last run touched; making them anew is a
/// 65,536-locate allocation that cost ~1.7 ms a run).
pub struct BookTarget {
    books: Books,
    table: Table,
}

impl BookTarget {
    /// The target, its books and table made once.
    pub fn new() -> BookTarget {
        BookTarget {
            books: Books::new(MAX),
            table: Table::with_book_levels(4),
        }
    }
}

impl Default for BookTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// Levels a side in the script (never more than the 32 prices: no cut).
const MAX: usize = 40;

impl Target for BookTarget {
    fn name(&self) -> &'static str {
        "book"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        if rng.r#gen() {
            let n = rng.gen_range(1..64);
            let mut out = vec![
                1 | rng.r#gen::<u8>() << 1,
                rng.r#gen(),
                rng.r#gen(),
                rng.r#gen(),
            ];
            out.extend((0..4 * n).map(|_| rng.r#gen::<u8>()));
            out
        } else {
            let mut out = vec![0];
            random_message(rng).encode(&mut out);
            out
        }
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        match input {
            [first, m, k, at, rest @ ..] if first & 1 == 1 => {
                self.books.reset();
                script(&self.books, *m, *k, *at, rest)
            }
            [_, payload @ ..] => {
                self.table.reset(Session::default());
                raw(&self.table, payload)
            }
            [] => 0,
        }
    }
}

type L = (Side, PriceLevel);

fn script(books: &Books, m: u8, k: u8, at: u8, rest: &[u8]) -> u64 {
    let ls: Vec<(L, u8)> = rest
        .chunks_exact(4)
        .map(|c| {
            let side = if c[0] & 1 == 0 { Side::Bid } else { Side::Ask };
            let level = PriceLevel {
                price: Price(i64::from(c[0] >> 3) * 100 + 100),
                size: u32::from(c[1] % 5) * 100,
                orders: u32::from(c[2] % 4) + 1,
            };
            ((side, level), c[3])
        })
        .collect();
    let n = ls.len();
    let (m, k) = (usize::from(m) % (n + 1), usize::from(k) % (n + 1));
    let seq = |i: usize| 2 * i as u64 + 1;
    let all: Vec<L> = ls.iter().map(|&(l, _)| l).collect();
    for (i, &(side, l)) in all[..m].iter().enumerate() {
        books.apply_level(seq(i), 0, 0, side, l);
    }
    books.begin_recovery();
    let mut rest: Vec<usize> = (m..n).collect();
    rest.sort_by_key(|&i| ls[i].1);
    let at = usize::from(at) % (rest.len() + 1);
    let snap = reference(&all[..k]);
    let book_seq = if k == 0 { 0 } else { seq(k - 1) };
    let b = |books: &Books| {
        books.apply_book(
            0,
            0,
            book_seq,
            Levels::from_slice(&snap[0]),
            Levels::from_slice(&snap[1]),
        )
    };
    for (p, &i) in rest.iter().enumerate() {
        if p == at {
            b(books);
        }
        let (side, l) = all[i];
        books.apply_level(seq(i), 0, 0, side, l);
        well_formed(books, 0);
    }
    if at == rest.len() {
        b(books);
    }
    books.settle(|_, _| {});
    let want = reference(&all);
    let got = books.read(0, MAX);
    assert_eq!([&got.bids, &got.asks], [&want[0], &want[1]], "settled book");
    books.end_recovery(|_, _| {});
    let again = books.read(0, MAX);
    assert_eq!(again.bids, got.bids, "after recovery");
    assert_eq!(again.asks, got.asks, "after recovery");
    sig(&[
        2,
        got.bids.len() as u64,
        got.asks.len() as u64,
        (m == n) as u64,
    ])
}

/// The book a plain map gives after `ls`, best first per side.
fn reference(ls: &[L]) -> [Vec<PriceLevel>; 2] {
    let mut sides: [BTreeMap<i64, PriceLevel>; 2] = Default::default();
    for &(side, l) in ls {
        let s = &mut sides[side.index()];
        if l.size == 0 {
            s.remove(&l.price.raw());
        } else {
            s.insert(l.price.raw(), l);
        }
    }
    [
        sides[0].values().rev().copied().collect(),
        sides[1].values().copied().collect(),
    ]
}

fn well_formed(books: &Books, locate: u16) {
    let r = books.read(locate, usize::MAX);
    for (side, levels) in [(Side::Bid, &r.bids), (Side::Ask, &r.asks)] {
        assert!(
            levels.len() <= books.max_levels(),
            "{side:?} over the bound"
        );
        assert!(levels.iter().all(|l| l.size > 0), "{side:?}: a size 0 kept");
        assert!(
            levels
                .windows(2)
                .all(|w| side.better(w[0].price, w[1].price)),
            "{side:?} not best first: {levels:?}"
        );
    }
}

fn raw(table: &Table, payload: &[u8]) -> u64 {
    let Ok(msg) = decode_message(payload) else {
        return sig(&[0, payload.len().min(64) as u64 / 8]);
    };
    let listing = Message::Directory {
        locate: msg.locate(),
        ts: 0,
        symbol: "FUZZ",
        name: "",
        prev_close: Price(0),
    };
    table.apply(1, &listing);
    table.books().begin_recovery();
    let first = table.apply(5, &msg);
    table.books().end_recovery(|_, _| {});
    let second = table.apply(7, &msg);
    well_formed(table.books(), msg.locate());
    let book = table.book(msg.locate(), 50).expect("listed");
    let code = |a: Applied| match a {
        Applied::Changed(_) => 1,
        Applied::BookChanged(_) => 2,
        Applied::Unchanged => 3,
        Applied::UnknownLocate => 4,
    };
    sig(&[
        1,
        code(first),
        code(second),
        book.bids.len() as u64,
        book.asks.len() as u64,
    ])
}
