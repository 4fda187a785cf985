//! The `book` object clients get (docs/PROTOCOL.md, "Depth of book") and
//! its checksum: one shape for every transport, prices as exact decimal
//! strings in JSON and fixed-point integers in MessagePack.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::BookRead;
use crate::price::Price;
use crate::wire::PriceLevel;

/// Levels per side the checksum covers.
pub const CHECKSUM_LEVELS: usize = 10;

/// A `book` object: `{"symbol","seq","prev","snapshot","bids","asks","checksum"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookFrame {
    /// Ticker.
    pub symbol: Arc<str>,
    /// Feed sequence of the last `'L'` the book reflects.
    pub seq: u64,
    /// The `seq` of the client's previous `book` frame of this symbol (a
    /// REST answer, which has none, carries its own `seq`).
    pub prev: u64,
    /// The whole book to the depth asked (true), or only the levels that
    /// changed since the previous frame.
    pub snapshot: bool,
    /// Bids, best (highest) first: `[price, size, orders]`.
    pub bids: Vec<(Price, u32, u32)>,
    /// Asks, best (lowest) first: `[price, size, orders]`.
    pub asks: Vec<(Price, u32, u32)>,
    /// [`checksum`] of the book after this frame.
    pub checksum: u32,
}

impl BookFrame {
    /// A whole book as read (its levels are the depth asked for), for a
    /// REST answer: `prev` is its own `seq`.
    pub fn snapshot(symbol: Arc<str>, book: &BookRead) -> BookFrame {
        let row = |l: &PriceLevel| (l.price, l.size, l.orders);
        BookFrame {
            symbol,
            seq: book.seq,
            prev: book.seq,
            snapshot: true,
            bids: book.bids.iter().map(row).collect(),
            asks: book.asks.iter().map(row).collect(),
            checksum: checksum(&book.bids, &book.asks),
        }
    }
}

/// The book's checksum (docs/PROTOCOL.md, "The checksum"): CRC-32 (IEEE
/// 802.3, zlib's `crc32`) of the ASCII string of the top
/// [`CHECKSUM_LEVELS`] asks (lowest first) then the top bids (highest
/// first), each level its price then its size as decimal digits, the price
/// without its decimal point and leading zeros (`189.1200` → `1891200`),
/// with no separator. `bids` and `asks` are the book as the client holds
/// it: at a depth below 10, only those levels.
pub fn checksum(bids: &[PriceLevel], asks: &[PriceLevel]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    let mut digits = itoa::Buffer::new();
    for l in asks
        .iter()
        .take(CHECKSUM_LEVELS)
        .chain(bids.iter().take(CHECKSUM_LEVELS))
    {
        // Four decimals always: the digits without the point are the raw
        // integer; a zero has no digits left once its leading zeros go.
        crc.update(
            digits
                .format(l.price.raw())
                .trim_start_matches('0')
                .as_bytes(),
        );
        crc.update(digits.format(l.size).trim_start_matches('0').as_bytes());
    }
    crc.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(price: &str, size: u32) -> PriceLevel {
        PriceLevel {
            price: price.parse().unwrap(),
            size,
            orders: 1,
        }
    }

    /// The worked example of docs/PROTOCOL.md ("The checksum"): a reader
    /// gets the same number from `zlib.crc32(b"1891400200189150050018912003001891100100")`.
    #[test]
    fn the_documented_example() {
        let bids = [level("189.1200", 300), level("189.1100", 100)];
        let asks = [level("189.1400", 200), level("189.1500", 500)];
        let text = "1891400200189150050018912003001891100100";
        assert_eq!(checksum(&bids, &asks), crc32fast::hash(text.as_bytes()));
        assert_eq!(checksum(&bids, &asks), EXAMPLE_CHECKSUM);
    }

    /// What `zlib.crc32` gives for the example's string.
    const EXAMPLE_CHECKSUM: u32 = 1_731_565_731;

    #[test]
    fn only_the_top_ten_per_side_count() {
        let bids: Vec<PriceLevel> = (0..15)
            .map(|i| level(&format!("{}.0000", 100 - i), 100))
            .collect();
        let asks: Vec<PriceLevel> = (0..15)
            .map(|i| level(&format!("{}.0000", 101 + i), 100))
            .collect();
        assert_eq!(checksum(&bids, &asks), checksum(&bids[..10], &asks[..10]));
        assert_ne!(checksum(&bids, &asks), checksum(&bids[..9], &asks[..10]));
        // Leading zeros of a sub-dollar price go: 0.0500 is "500".
        let small = [level("0.0500", 100)];
        assert_eq!(checksum(&small, &[]), crc32fast::hash(b"500100"));
    }

    #[test]
    fn json_prices_are_strings_msgpack_integers() {
        let book = BookRead {
            seq: 7,
            ts: 1,
            stamp: 2,
            bids: vec![level("189.1200", 300)],
            asks: vec![],
        };
        let f = BookFrame::snapshot(Arc::from("AAPL"), &book);
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains(r#""bids":[["189.1200",300,1]]"#), "{json}");
        assert!(json.contains(r#""prev":7"#), "{json}");
        let packed = rmp_serde::to_vec_named(&f).unwrap();
        let back: BookFrame = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.bids[0].0, Price(1_891_200));
    }
}
