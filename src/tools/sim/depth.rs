//! The simulated depth of book: per symbol, the top `D` price levels of
//! each side (`--book-depth`), kept so that the top level always equals
//! the symbol's latest quote. Pure: the draws come from the market's
//! generator, time and sequence from the engine.
//!
//! When a quote moves the touch, the levels it crosses are deleted, the new
//! top is set to the quote's price and size, and the side is topped up to
//! `D` levels below it (a cent to three cents apart) or cut back to `D`
//! (the levels that leave the top `D` are deleted). Beside that, each quote
//! stirs the book a little ([`CHURN`]): a level behind the top changes size,
//! empties (and a new one enters at the back), or a new level appears in a
//! gap (and the worst leaves). Each change is one absolute `'L'`, deletes
//! first, so a relay never holds more than `D` levels on a side.

use rand::Rng;
use rand::rngs::SmallRng;

use super::market::{CENT, LOT, max_lots, skewed_lots};
use crate::price::Price;
use crate::wire::{PriceLevel, Side};

/// Chance per quote (in 1/100) that one level behind the top also changes.
pub(crate) const CHURN: u32 = 25;

/// One symbol's published book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Depth {
    /// Bids, best (highest) first.
    pub(crate) bids: Vec<PriceLevel>,
    /// Asks, best (lowest) first.
    pub(crate) asks: Vec<PriceLevel>,
    /// Sequence of the last `'L'` published (0: none), the `book_seq` of its `'B'`.
    pub(crate) seq: u64,
    /// Exchange time of the last `'L'`.
    pub(crate) ts: u64,
}

impl Depth {
    /// The levels of `side`, best first.
    pub(crate) fn side(&self, side: Side) -> &[PriceLevel] {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Vec<PriceLevel> {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    /// Applies one published `'L'`: the level's size and orders replace
    /// what was there; size 0 deletes it.
    pub(crate) fn apply(&mut self, side: Side, l: PriceLevel) {
        let levels = self.side_mut(side);
        let at = levels.iter().position(|x| !side.better(x.price, l.price));
        match at {
            Some(i) if levels[i].price == l.price => {
                if l.size == 0 {
                    levels.remove(i);
                } else {
                    levels[i] = l;
                }
            }
            _ if l.size == 0 => {}
            Some(i) => levels.insert(i, l),
            None => levels.push(l),
        }
    }

    /// The `'L'`s that take this book to a quote of `bid`/`ask` with their
    /// sizes, `depth` levels a side, with some churn: deletes first.
    pub(crate) fn requote(
        &self,
        quote: [(Price, u32); 2],
        depth: usize,
        rng: &mut SmallRng,
    ) -> Vec<(Side, PriceLevel)> {
        let mut target = [Vec::new(), Vec::new()];
        for (side, (top, size)) in Side::BOTH.into_iter().zip(quote) {
            target[side.index()] = self.target_side(side, top, size, depth, rng);
        }
        if rng.gen_range(0..100) < CHURN {
            let side = if rng.r#gen() { Side::Bid } else { Side::Ask };
            churn(&mut target[side.index()], side, depth, rng);
        }
        let mut deletes = Vec::new();
        let mut sets = Vec::new();
        for side in Side::BOTH {
            let (now, want) = (self.side(side), &target[side.index()]);
            for l in now {
                if !want.iter().any(|w| w.price == l.price) {
                    deletes.push((
                        side,
                        PriceLevel {
                            price: l.price,
                            size: 0,
                            orders: 0,
                        },
                    ));
                }
            }
            for w in want {
                if !now.contains(w) {
                    sets.push((side, *w));
                }
            }
        }
        deletes.extend(sets);
        deletes
    }

    /// One side after a quote: the top at the quote, the levels behind it
    /// kept, topped up or cut to `depth`.
    fn target_side(
        &self,
        side: Side,
        top: Price,
        size: u32,
        depth: usize,
        rng: &mut SmallRng,
    ) -> Vec<PriceLevel> {
        let now = self.side(side);
        let orders = match now.iter().find(|l| l.price == top) {
            Some(l) if l.size == size => l.orders,
            _ => orders_for(size, rng),
        };
        let mut out = vec![PriceLevel {
            price: top,
            size,
            orders,
        }];
        out.extend(
            now.iter()
                .filter(|l| side.better(top, l.price))
                .take(depth.saturating_sub(1)),
        );
        while out.len() < depth {
            match behind(side, out[out.len() - 1].price, rng) {
                Some(price) => out.push(level_at(price, rng)),
                None => break,
            }
        }
        out.truncate(depth);
        out
    }
}

/// One change behind the top of a side: a level resized, emptied (a new
/// one enters at the back) or a new one in a gap (the worst leaves).
fn churn(levels: &mut Vec<PriceLevel>, side: Side, depth: usize, rng: &mut SmallRng) {
    if levels.len() < 2 {
        return;
    }
    let i = rng.gen_range(1..levels.len());
    match rng.gen_range(0..3) {
        0 => {
            let l = level_at(levels[i].price, rng);
            levels[i] = l;
        }
        1 => {
            levels.remove(i);
            if let Some(price) = behind(side, levels[levels.len() - 1].price, rng) {
                levels.push(level_at(price, rng));
            }
        }
        _ => {
            // A price strictly between level i-1 and level i, if there is one.
            let (a, b) = (levels[i - 1].price.raw(), levels[i].price.raw());
            let gap = (a - b).abs() / CENT;
            if gap >= 2 {
                let step = rng.gen_range(1..gap) * CENT;
                let price = Price(if side == Side::Bid {
                    a - step
                } else {
                    a + step
                });
                levels.insert(i, level_at(price, rng));
                levels.truncate(depth);
            }
        }
    }
}

/// A price one to three cents behind `worst` on `side` (none below a cent).
fn behind(side: Side, worst: Price, rng: &mut SmallRng) -> Option<Price> {
    let step = rng.gen_range(1..=3) * CENT;
    let price = match side {
        Side::Bid => worst.raw() - step,
        Side::Ask => worst.raw() + step,
    };
    (price >= CENT).then_some(Price(price))
}

/// A resting level at `price`: round lots as the quote's sizes, and orders.
fn level_at(price: Price, rng: &mut SmallRng) -> PriceLevel {
    let size = skewed_lots(rng, max_lots(price)) * LOT;
    PriceLevel {
        price,
        size,
        orders: orders_for(size, rng),
    }
}

/// Orders behind `size` shares: one to one per lot, at most 20.
fn orders_for(size: u32, rng: &mut SmallRng) -> u32 {
    let lots = (size / LOT).clamp(1, 20);
    rng.gen_range(1..=lots)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn well_formed(d: &Depth, depth: usize, bid: Price, ask: Price) {
        for side in Side::BOTH {
            let levels = d.side(side);
            assert!(levels.len() <= depth, "{side:?}: {}", levels.len());
            for w in levels.windows(2) {
                assert!(side.better(w[0].price, w[1].price), "{side:?} order");
            }
            assert!(levels.iter().all(|l| l.size > 0 && l.orders > 0));
        }
        assert_eq!(d.bids[0].price, bid);
        assert_eq!(d.asks[0].price, ask);
    }

    /// Applying the `'L'`s of each requote gives a book whose top is the
    /// quote, `depth` levels a side, best first; deletes come first.
    #[test]
    fn requotes_keep_the_top_at_the_quote_and_depth_levels() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut d = Depth::default();
        let mut mid = 50_000 * CENT;
        for _ in 0..2_000 {
            mid += rng.gen_range(-3..=3) * CENT;
            let (bid, ask) = (Price(mid - CENT), Price(mid + CENT));
            let sizes = (rng.gen_range(1..10) * LOT, rng.gen_range(1..10) * LOT);
            let ls = d.requote([(bid, sizes.0), (ask, sizes.1)], 10, &mut rng);
            let first_set = ls.iter().position(|(_, l)| l.size > 0).unwrap_or(ls.len());
            assert!(
                ls[first_set..].iter().all(|(_, l)| l.size > 0),
                "deletes first"
            );
            for (side, l) in ls {
                d.apply(side, l);
            }
            well_formed(&d, 10, bid, ask);
            assert_eq!(d.bids.len(), 10);
            assert_eq!(d.asks.len(), 10);
            assert_eq!((d.bids[0].size, d.asks[0].size), sizes);
        }
    }

    #[test]
    fn an_unchanged_quote_sends_only_churn() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut d = Depth::default();
        let q = [(Price(100 * CENT), 500), (Price(101 * CENT), 300)];
        for (side, l) in d.requote(q, 5, &mut rng) {
            d.apply(side, l);
        }
        for _ in 0..100 {
            let ls = d.requote(q, 5, &mut rng);
            // Churn: a resize is one 'L'; an emptied level and its
            // replacement, or a new level and the one it pushes out, two.
            assert!(ls.len() <= 2, "{ls:?}");
            for (side, l) in ls {
                d.apply(side, l);
            }
        }
    }
}
