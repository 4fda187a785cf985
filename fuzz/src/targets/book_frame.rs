//! The `book_frame` target.

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::SmallRng;
use tickrelay::price::Price;
use tickrelay::table::Books;
use tickrelay::table::book::checksum;
use tickrelay::transport::bookstream::diff;
use tickrelay::wire::{PriceLevel, Side};

use super::sig;
use crate::engine::Target;

/// `book_frame`: the frames a streaming client gets and the way it applies
/// them (docs/PROTOCOL.md, "Depth of book").
///
/// The input's first byte picks the depth asked (1–12) and the bound a side
/// (`max_book_levels`, 1–16); then 4-byte chunks are `'L'`s (side, one of 24
/// prices a side, size 0–3 lots, orders) applied to a table's book, and a
/// chunk whose last byte is odd also sends a frame: the difference between
/// the levels the client last got and the book read at the depth now (as
/// the relay's `bookstream` builds it), which the client applies by the
/// documented rules — each level replaces the one at its price, size 0
/// deletes, the side sorted best first and cut to the depth. Invariants:
/// after every frame the client's copy is exactly the book read at the
/// depth, and its checksum is the relay's; a frame carries only levels
/// that differ, each side best first with no price twice.
pub struct BookFrameTarget;

impl Target for BookFrameTarget {
    fn name(&self) -> &'static str {
        "book_frame"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        let n = rng.gen_range(1..96);
        let mut out = vec![rng.r#gen()];
        out.extend((0..4 * n).map(|_| rng.r#gen::<u8>()));
        out
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        let Some((&head, rest)) = input.split_first() else {
            return 0;
        };
        let depth = usize::from(head % 12) + 1;
        let max = usize::from(head >> 4) + 1;
        let books = Books::new(max);
        let mut copy: [BTreeMap<i64, PriceLevel>; 2] = Default::default();
        let mut last: [Vec<PriceLevel>; 2] = Default::default();
        let (mut frames, mut carried) = (0u64, 0u64);
        for (i, c) in rest.chunks_exact(4).enumerate() {
            let side = if c[0] & 1 == 0 { Side::Bid } else { Side::Ask };
            let level = PriceLevel {
                price: Price(i64::from((c[0] >> 1) % 24) * 100 + 1000),
                size: u32::from(c[1] % 4) * 100,
                orders: u32::from(c[2] % 3) + 1,
            };
            books.apply_level(i as u64 + 1, 0, 0, side, level);
            if c[3] & 1 == 0 {
                continue;
            }
            let now = books.read(0, depth);
            for (s, side) in [Side::Bid, Side::Ask].into_iter().enumerate() {
                let changes = diff(side, &last[s], &now_side(&now, side));
                well_ordered(side, &changes);
                carried += changes.len() as u64;
                apply(&mut copy[s], &changes);
                last[s] = now_side(&now, side);
            }
            frames += 1;
            let held = [
                held(&copy[0], Side::Bid, depth),
                held(&copy[1], Side::Ask, depth),
            ];
            // The client cuts to the depth: what falls off is forgotten.
            for (s, levels) in held.iter().enumerate() {
                copy[s] = levels.iter().map(|l| (l.price.raw(), *l)).collect();
            }
            assert_eq!(held[0], now.bids, "bids after frame {frames}");
            assert_eq!(held[1], now.asks, "asks after frame {frames}");
            assert_eq!(
                checksum(&held[0], &held[1]),
                checksum(&now.bids, &now.asks),
                "checksum after frame {frames}"
            );
        }
        sig(&[depth as u64, frames.min(8), carried.min(64) / 8])
    }
}

fn now_side(now: &tickrelay::table::BookRead, side: Side) -> Vec<PriceLevel> {
    match side {
        Side::Bid => now.bids.clone(),
        Side::Ask => now.asks.clone(),
    }
}

/// A frame's side: best first, each price once, only sizes as they are now.
fn well_ordered(side: Side, changes: &[(Price, u32, u32)]) {
    assert!(
        changes.windows(2).all(|w| side.better(w[0].0, w[1].0)),
        "{side:?} frame not best first, or a price twice: {changes:?}"
    );
}

/// The client's rule: each level replaces the one at its price, size 0 deletes.
fn apply(copy: &mut BTreeMap<i64, PriceLevel>, changes: &[(Price, u32, u32)]) {
    for &(price, size, orders) in changes {
        if size == 0 {
            copy.remove(&price.raw());
        } else {
            copy.insert(
                price.raw(),
                PriceLevel {
                    price,
                    size,
                    orders,
                },
            );
        }
    }
}

/// The copy's side best first, cut to `depth`.
fn held(copy: &BTreeMap<i64, PriceLevel>, side: Side, depth: usize) -> Vec<PriceLevel> {
    match side {
        Side::Bid => copy.values().rev().take(depth).copied().collect(),
        Side::Ask => copy.values().take(depth).copied().collect(),
    }
}
