//! The synthetic market: what each symbol's fair value does, and the quotes
//! and trades it shows. Pure: no sockets and no clock reads; time comes in as
//! the exchange timestamp of the event being made.
//!
//! # The walk
//!
//! Each symbol has a fair value, held as an integer in 1/100,000,000 of the
//! currency (a hundredth of a feed price unit), and an annualised volatility
//! σ drawn once between 15 % and 80 %. Every time the symbol ticks, its fair
//! value takes a step
//!
//! ```text
//! fair += fair · σ · √(Δt / YEAR) · z        z ~ N(0, 1)
//! ```
//!
//! where Δt is the exchange time since the symbol's previous step and YEAR is
//! a trading year of 252 days × 6.5 hours. Scaling each step by the time it
//! covers scales the volatility to the symbol's own tick rate: a symbol that
//! ticks a thousand times a second takes a thousand small steps, a quiet one a
//! few large ones, and both have variance σ² · t / YEAR over any span t of
//! feed time, so one simulated trading year of feed has volatility σ
//! whatever the rate. The step has mean zero, so the fair value is a
//! martingale: no drift up or down. The step is computed in f64 (a random
//! draw scaled by a volatility) and rounded to an integer *stochastically*
//! (down or up with the probabilities that make the rounding exact on
//! average), so rounding adds no bias either, however small the steps.
//!
//! # The quote
//!
//! The quote is cut from the fair value on the cent grid: a spread of whole
//! cents that widens with the price level (1 cent below $80, about 1.25 bp
//! of the price above), centred so that the quote's mid is the fair value
//! rounded to the nearest cent (even spreads) or half cent (odd spreads) —
//! again unbiased. Sizes are round lots, more of them on cheap stocks (a $5
//! stock shows up to 10,000 shares, a $500 one up to 1,000). Trades print at
//! the bid or the ask, for at most the size shown there.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::Book;
use crate::price::Price;
use crate::tools::zipf::Zipf;
use crate::wire::Locate;

/// Fair-value units per feed price unit: the fair value is kept 10,000 times
/// finer than a price, so tiny steps accumulate instead of vanishing.
const FAIR_PER_PRICE: i64 = 10_000;
/// A cent in feed price units (1/10,000).
pub(crate) const CENT: i64 = 100;
/// A cent in fair-value units.
const FAIR_CENT: i64 = CENT * FAIR_PER_PRICE;
/// A trading year of 252 sessions of 6.5 hours, in nanoseconds.
const YEAR_NS: f64 = 252.0 * 6.5 * 3600.0 * 1e9;
/// The fair value never goes below a dollar (a floor the walk does not reach
/// in any realistic run; it keeps a quote possible).
const FLOOR: i64 = 100 * FAIR_CENT;
/// Shares in a round lot.
pub(crate) const LOT: u32 = 100;

/// One quote or trade, ready to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// New best bid and ask.
    Quote {
        /// Best bid.
        bid: Price,
        /// Best ask.
        ask: Price,
        /// Shares at the bid.
        bid_size: u32,
        /// Shares at the ask.
        ask_size: u32,
    },
    /// A print.
    Trade {
        /// Trade price.
        price: Price,
        /// Shares.
        size: u32,
        /// Cumulative volume after it.
        volume: u64,
    },
}

/// The hidden part of one symbol: what moves it.
#[derive(Clone, Debug)]
struct Model {
    /// Fair value in 1/100,000,000 of the currency.
    fair: i64,
    /// Annualised volatility (0.15 = 15 %).
    vol: f64,
    /// Exchange time of the last step, ns (0: not started).
    stepped_at: u64,
    /// Cents the spread is wider than its base, for a while.
    wider: i64,
}

/// Every symbol's model and the draws that drive them.
pub(crate) struct Market {
    models: Vec<Model>,
    zipf: Zipf,
    rng: SmallRng,
}

/// A symbol as the market lists it.
pub(crate) struct Listed {
    /// Ticker.
    pub(crate) symbol: String,
    /// Company name.
    pub(crate) name: String,
    /// Previous close.
    pub(crate) prev_close: Price,
}

impl Market {
    /// `n` symbols with real-looking tickers, prices between $5 and $600,
    /// volatilities between 15 % and 80 %, activity Zipf-skewed by `zipf`.
    pub(crate) fn new(n: usize, zipf: f64, seed: u64) -> (Market, Vec<Listed>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut models = Vec::with_capacity(n);
        let mut listed = Vec::with_capacity(n);
        for (symbol, name) in super::tickers(n) {
            let cents: i64 = rng.gen_range(500..60_000);
            // The open is within 2 % of the close, anywhere inside its cent.
            let open_cents = cents + rng.gen_range(-cents / 50..=cents / 50);
            models.push(Model {
                fair: open_cents * FAIR_CENT + rng.gen_range(0..FAIR_CENT),
                vol: rng.gen_range(0.15..0.80),
                stepped_at: 0,
                wider: 0,
            });
            listed.push(Listed {
                symbol,
                name,
                prev_close: Price(cents * CENT),
            });
        }
        let market = Market {
            zipf: Zipf::new(n.max(1), zipf),
            models,
            rng,
        };
        (market, listed)
    }

    /// Number of symbols.
    pub(crate) fn len(&self) -> usize {
        self.models.len()
    }

    /// The annualised volatility of `locate`.
    #[cfg(test)]
    pub(crate) fn volatility(&self, locate: usize) -> f64 {
        self.models[locate].vol
    }

    /// The fair value of `locate` as a price (rounded down).
    #[cfg(test)]
    pub(crate) fn fair(&self, locate: usize) -> f64 {
        self.models[locate].fair as f64 / FAIR_PER_PRICE as f64
    }

    /// The next event at exchange time `ts`: a Zipf-chosen symbol quotes
    /// (four times in five) or trades at its bid or ask. A symbol that has no
    /// quote yet quotes first.
    pub(crate) fn next(&mut self, ts: u64, book: &Book) -> (Locate, Tick) {
        let idx = self.zipf.sample(&mut self.rng);
        let listing = book.get(idx);
        let quote = listing.and_then(|l| l.quote);
        let volume = listing.and_then(|l| l.trade).map_or(0, |t| t.volume);
        let tick = match quote {
            Some(q) if self.rng.gen_ratio(1, 5) => {
                let buy = self.rng.r#gen::<bool>();
                let (price, shown) = if buy {
                    (q.ask, q.ask_size)
                } else {
                    (q.bid, q.bid_size)
                };
                let lots = skewed_lots(&mut self.rng, (shown / LOT).max(1));
                let size = lots * LOT;
                Tick::Trade {
                    price,
                    size,
                    volume: volume + u64::from(size),
                }
            }
            _ => self.quote(idx, ts, quote, listing.map(|l| &l.depth)),
        };
        (idx as Locate, tick)
    }

    /// The opening auction of `locate` at `ts`: its opening quote and the
    /// opening print, a large trade at the bid or the ask.
    pub(crate) fn opening(&mut self, locate: usize, ts: u64, book: &Book) -> [Tick; 2] {
        let quote = self.quote(locate, ts, None, None);
        let Tick::Quote { bid, ask, .. } = quote else {
            unreachable!("quote() makes quotes")
        };
        let price = if self.rng.r#gen() { bid } else { ask };
        let lots = self.rng.gen_range(10..=50) * max_lots(price);
        let size = lots * LOT;
        let volume = book
            .get(locate)
            .and_then(|l| l.trade)
            .map_or(0, |t| t.volume);
        [
            quote,
            Tick::Trade {
                price,
                size,
                volume: volume + u64::from(size),
            },
        ]
    }

    /// The `'L'`s that bring `book` to a new quote at `depth` levels a side
    /// (see `depth`), drawn from the market's own generator.
    pub(crate) fn requote_book(
        &mut self,
        book: &super::depth::Depth,
        quote: [(Price, u32); 2],
        depth: usize,
    ) -> Vec<(crate::wire::Side, crate::wire::PriceLevel)> {
        book.requote(quote, depth, &mut self.rng)
    }

    /// Steps `idx`'s fair value to `ts` and cuts a quote from it. A side
    /// whose price stays keeps its size half the time (`prev` is the last
    /// quote): most quote updates change one side. A side that moves to a
    /// price resting in the book (`depth`) shows that level's size.
    fn quote(
        &mut self,
        idx: usize,
        ts: u64,
        prev: Option<crate::wire::StateQuote>,
        depth: Option<&super::depth::Depth>,
    ) -> Tick {
        self.step(idx, ts);
        let fair = self.models[idx].fair;
        let (bid, ask) = cut_quote(fair, self.spread_cents(idx, fair));
        let top = max_lots(bid);
        let mut size = |side: crate::wire::Side, price: Price, prev: Option<(Price, u32)>| {
            let resting = depth.and_then(|d| d.side(side).iter().find(|l| l.price == price));
            match (prev, resting) {
                (Some((p, s)), _) if p == price && self.rng.r#gen::<bool>() => s,
                (Some((p, _)), Some(l)) if p != price => l.size,
                _ => skewed_lots(&mut self.rng, top) * LOT,
            }
        };
        let bid_size = size(
            crate::wire::Side::Bid,
            bid,
            prev.map(|q| (q.bid, q.bid_size)),
        );
        let ask_size = size(
            crate::wire::Side::Ask,
            ask,
            prev.map(|q| (q.ask, q.ask_size)),
        );
        Tick::Quote {
            bid,
            ask,
            bid_size,
            ask_size,
        }
    }

    /// One step of the walk (see the module docs).
    fn step(&mut self, idx: usize, ts: u64) {
        let m = &mut self.models[idx];
        let dt = match m.stepped_at {
            0 => 0,
            t => ts.saturating_sub(t),
        };
        m.stepped_at = ts.max(m.stepped_at);
        if dt == 0 {
            return;
        }
        let sd = m.vol * (dt as f64 / YEAR_NS).sqrt();
        let z = normal(&mut self.rng);
        let delta = stochastic_round(m.fair as f64 * sd * z, self.rng.r#gen::<f64>());
        m.fair = (m.fair + delta).max(FLOOR);
    }

    /// The spread in cents at this fair value: 1 cent below $80, about
    /// 1.25 bp of the price above; a quarter of the quotes above $20 are
    /// wider by up to as much again. A wider spread lasts about ten quotes
    /// (a spread that flickered quote by quote would churn the book).
    fn spread_cents(&mut self, idx: usize, fair: i64) -> i64 {
        let cents = fair / FAIR_CENT;
        let base = (cents / 8_000).max(1);
        if self.rng.gen_ratio(1, 10) {
            self.models[idx].wider = if self.rng.gen_ratio(1, 4) {
                self.rng.gen_range(1..=base)
            } else {
                0
            };
        }
        if cents >= 2_000 {
            base + self.models[idx].wider.min(base)
        } else {
            base
        }
    }
}

/// Cuts a bid and an ask `spread` cents apart (at least 1) around `fair`: the
/// mid is `fair` rounded to the nearest cent when the spread is even, to the
/// half cent inside its cent when it is odd. The bid is at least a cent.
pub(crate) fn cut_quote(fair: i64, spread: i64) -> (Price, Price) {
    let spread = spread.max(1);
    let bid_cents = if spread % 2 == 0 {
        (fair + FAIR_CENT / 2).div_euclid(FAIR_CENT) - spread / 2
    } else {
        fair.div_euclid(FAIR_CENT) - spread / 2
    };
    let bid_cents = bid_cents.max(1);
    (Price(bid_cents * CENT), Price((bid_cents + spread) * CENT))
}

/// Most round lots shown at one price: about $500,000 of stock, at least
/// 1 lot, at most 100.
pub(crate) fn max_lots(price: Price) -> u32 {
    let cents = (price.raw() / CENT).max(1);
    (500_000 / cents).clamp(1, 100) as u32
}

/// 1 to `max` lots, small sizes more likely than large ones.
pub(crate) fn skewed_lots(rng: &mut SmallRng, max: u32) -> u32 {
    let u: f64 = rng.r#gen();
    (1 + (f64::from(max) * u * u) as u32).min(max.max(1))
}

/// Rounds `x` down or up to an integer, up with probability equal to its
/// fractional part (`u` uniform in [0, 1)): exact on average.
fn stochastic_round(x: f64, u: f64) -> i64 {
    (x + u).floor() as i64
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    // 1 - u keeps the logarithm's argument in (0, 1].
    let u1: f64 = 1.0 - rng.r#gen::<f64>();
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_on_the_cent_grid_and_centred_on_the_fair_value() {
        // $12.3456789 (in fair units): even spread rounds the mid to the cent,
        // odd spread puts it on the half cent inside the fair value's cent.
        let fair = 1_234 * FAIR_CENT + 567_890;
        assert_eq!(cut_quote(fair, 2), (Price(123_400), Price(123_600)));
        assert_eq!(cut_quote(fair, 1), (Price(123_400), Price(123_500)));
        assert_eq!(cut_quote(fair, 3), (Price(123_300), Price(123_600)));
        // Never a bid below a cent.
        assert_eq!(cut_quote(FAIR_CENT / 3, 4), (Price(100), Price(500)));
        // Over fair values spread evenly across a cent, the mean offset of
        // the mid from the fair value is zero (no rounding bias).
        for spread in 1..=4 {
            let mut sum: i64 = 0;
            for frac in 0..FAIR_CENT {
                let (b, a) = cut_quote(50_000 * FAIR_CENT + frac, spread);
                assert!(b < a && b.raw() % CENT == 0 && a.raw() % CENT == 0);
                let mid2 = (b.raw() + a.raw()) * FAIR_PER_PRICE; // twice the mid
                sum += mid2 - 2 * (50_000 * FAIR_CENT + frac);
            }
            let mean_offset = sum as f64 / 2.0 / FAIR_CENT as f64;
            assert!(
                mean_offset.abs() <= 1.0,
                "spread {spread}: mean offset {mean_offset} fair units"
            );
        }
    }

    #[test]
    fn stochastic_rounding_is_exact_on_average() {
        let mut rng = SmallRng::seed_from_u64(9);
        for x in [0.25, -0.25, 3.7, -3.7, 0.01] {
            let n = 200_000;
            let sum: i64 = (0..n)
                .map(|_| stochastic_round(x, rng.r#gen::<f64>()))
                .sum();
            let mean = sum as f64 / n as f64;
            assert!((mean - x).abs() < 0.01, "{x}: mean {mean}");
        }
    }

    #[test]
    fn sizes_follow_the_price_level() {
        assert_eq!(max_lots(Price(5 * 10_000)), 100);
        assert_eq!(max_lots(Price(500 * 10_000)), 10);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..1000 {
            let l = skewed_lots(&mut rng, 10);
            assert!((1..=10).contains(&l));
        }
    }
}
