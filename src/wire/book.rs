//! Depth of book on the wire: the side of a level ([`Side`]), one price
//! level ([`PriceLevel`]) and the level arrays of a book state message
//! ([`Levels`]), read in place from the datagram without allocating.
//!
//! A `'B'` message's `bids` and `asks` are MessagePack arrays of
//! `[price, size, orders]`, best first, at most [`MAX_BOOK_LEVELS`] each.
//! The decoder checks every level once (three integers in range, a size
//! above 0, prices strictly worse level after level); a [`Levels`] that
//! decoded is therefore well formed, and walking it again cannot fail.

use super::DecodeError;
use super::message::read_int;
use crate::price::Price;

/// Most levels per side a `'B'` message may carry (a 1,400-byte packet
/// holds fewer than this anyway; the bound keeps a book's work bounded).
pub const MAX_BOOK_LEVELS: usize = 100;

/// Which side of the book a level is on: `0` bid, `1` ask on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Buyers: best is the highest price.
    Bid,
    /// Sellers: best is the lowest price.
    Ask,
}

impl Side {
    /// Both sides, bids first.
    pub const BOTH: [Side; 2] = [Side::Bid, Side::Ask];

    /// The wire code: 0 bid, 1 ask.
    pub const fn code(self) -> u8 {
        match self {
            Side::Bid => 0,
            Side::Ask => 1,
        }
    }

    /// From the wire code; `None` for anything but 0 and 1.
    pub const fn from_code(code: u64) -> Option<Side> {
        match code {
            0 => Some(Side::Bid),
            1 => Some(Side::Ask),
            _ => None,
        }
    }

    /// Whether `a` is a better price than `b` on this side.
    pub fn better(self, a: Price, b: Price) -> bool {
        match self {
            Side::Bid => a > b,
            Side::Ask => a < b,
        }
    }

    /// Index into per-side arrays: 0 bid, 1 ask.
    pub const fn index(self) -> usize {
        self.code() as usize
    }
}

/// One price level: the shares and the number of orders at a price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PriceLevel {
    /// The level's price.
    pub price: Price,
    /// Shares at that price (never 0 in a book: 0 deletes the level).
    pub size: u32,
    /// Orders at that price.
    pub orders: u32,
}

/// The levels of one side of a `'B'` message, best first: read in place
/// from the datagram, or a slice a producer encodes.
#[derive(Clone, Copy, Debug)]
pub struct Levels<'a>(Repr<'a>);

#[derive(Clone, Copy, Debug)]
enum Repr<'a> {
    /// `count` levels already checked by the decoder, starting at `bytes`.
    Wire { count: usize, bytes: &'a [u8] },
    /// Levels to encode.
    Slice(&'a [PriceLevel]),
}

impl<'a> Levels<'a> {
    /// Levels to encode, best first.
    pub const fn from_slice(levels: &'a [PriceLevel]) -> Self {
        Levels(Repr::Slice(levels))
    }

    /// Number of levels.
    pub fn len(&self) -> usize {
        match self.0 {
            Repr::Wire { count, .. } => count,
            Repr::Slice(s) => s.len(),
        }
    }

    /// Whether the side is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The levels, best first.
    pub fn iter(&self) -> LevelsIter<'a> {
        match self.0 {
            Repr::Wire { count, bytes } => LevelsIter(IterRepr::Wire { left: count, bytes }),
            Repr::Slice(s) => LevelsIter(IterRepr::Slice(s.iter())),
        }
    }

    /// Appends the array as MessagePack.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        use rmp::encode::{write_array_len, write_sint, write_uint};
        // Writing into a Vec cannot fail.
        let _ = write_array_len(out, self.len() as u32);
        for l in self.iter() {
            let _ = write_array_len(out, 3)
                .and_then(|_| write_sint(out, l.price.raw()).map(drop))
                .and_then(|_| write_uint(out, u64::from(l.size)).map(drop))
                .and_then(|_| write_uint(out, u64::from(l.orders)).map(drop));
        }
    }

    /// Reads and checks one side's array from `buf` (advanced past it).
    pub(super) fn decode(buf: &mut &'a [u8], side: Side) -> Result<Self, DecodeError> {
        let count = rmp::decode::read_array_len(buf).map_err(|_| DecodeError::BadLevels)? as usize;
        if count > MAX_BOOK_LEVELS {
            return Err(DecodeError::BadLevels);
        }
        let start = *buf;
        let mut prev: Option<Price> = None;
        for _ in 0..count {
            let l = read_level(buf)?;
            if l.size == 0 || prev.is_some_and(|p| !side.better(p, l.price)) {
                return Err(DecodeError::BadLevels);
            }
            prev = Some(l.price);
        }
        let used = start.len() - buf.len();
        Ok(Levels(Repr::Wire {
            count,
            bytes: &start[..used],
        }))
    }
}

impl PartialEq for Levels<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Levels<'_> {}

/// One `[price, size, orders]`; any fault is [`DecodeError::BadLevels`].
fn read_level(buf: &mut &[u8]) -> Result<PriceLevel, DecodeError> {
    let n = rmp::decode::read_array_len(buf).map_err(|_| DecodeError::BadLevels)?;
    if n != 3 {
        return Err(DecodeError::BadLevels);
    }
    let bad = |_: DecodeError| DecodeError::BadLevels;
    Ok(PriceLevel {
        price: Price(read_int(buf).map_err(bad)?),
        size: read_int(buf).map_err(bad)?,
        orders: read_int(buf).map_err(bad)?,
    })
}

/// The levels of a [`Levels`], best first.
#[derive(Clone, Debug)]
pub struct LevelsIter<'a>(IterRepr<'a>);

#[derive(Clone, Debug)]
enum IterRepr<'a> {
    Wire { left: usize, bytes: &'a [u8] },
    Slice(std::slice::Iter<'a, PriceLevel>),
}

impl Iterator for LevelsIter<'_> {
    type Item = PriceLevel;

    fn next(&mut self) -> Option<PriceLevel> {
        match &mut self.0 {
            IterRepr::Slice(s) => s.next().copied(),
            IterRepr::Wire { left, bytes } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // Checked when decoded: this cannot fail; if it did, the
                // side would end here rather than panic.
                match read_level(bytes) {
                    Ok(l) => Some(l),
                    Err(_) => {
                        *left = 0;
                        None
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            IterRepr::Slice(s) => s.len(),
            IterRepr::Wire { left, .. } => *left,
        };
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{Message, decode_message};

    fn lv(price: i64, size: u32, orders: u32) -> PriceLevel {
        PriceLevel {
            price: Price(price),
            size,
            orders,
        }
    }

    /// A `'B'` as rmp-serde writes the tuple (another producer's encoder).
    fn serde_book(book_seq: u64, bids: &[(i64, u32, u32)], asks: &[(i64, u32, u32)]) -> Vec<u8> {
        rmp_serde::to_vec(&(66u8, 3u16, 9u64, book_seq, bids, asks)).unwrap()
    }

    #[test]
    fn level_and_book_decode_what_another_encoder_writes() {
        let raw = rmp_serde::to_vec(&(76u8, 3u16, 9u64, 1u8, 1_891_400i64, 200u32, 2u32)).unwrap();
        assert_eq!(
            decode_message(&raw),
            Ok(Message::Level {
                locate: 3,
                ts: 9,
                side: Side::Ask,
                price: Price(1_891_400),
                size: 200,
                orders: 2,
            })
        );
        let bids = [(1_891_200, 300, 3), (1_891_100, 100, 1)];
        let asks = [(1_891_400, 200, 2)];
        let raw = serde_book(42, &bids, &asks);
        let Ok(Message::Book {
            book_seq,
            bids: b,
            asks: a,
            ..
        }) = decode_message(&raw)
        else {
            panic!("not a book: {:?}", decode_message(&raw));
        };
        assert_eq!(book_seq, 42);
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [lv(1_891_200, 300, 3), lv(1_891_100, 100, 1)]
        );
        assert_eq!(a.iter().collect::<Vec<_>>(), [lv(1_891_400, 200, 2)]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.iter().size_hint(), (2, Some(2)));
    }

    #[test]
    fn malformed_levels_are_refused() {
        let side2 = rmp_serde::to_vec(&(76u8, 3u16, 9u64, 2u8, 1i64, 1u32, 1u32)).unwrap();
        assert_eq!(decode_message(&side2), Err(DecodeError::BadField));
        let ok = (100, 1, 1);
        let cases: [(&str, Vec<u8>); 6] = [
            (
                "bids not best first",
                serde_book(1, &[(99, 1, 1), (100, 1, 1)], &[]),
            ),
            (
                "asks not best first",
                serde_book(1, &[], &[(101, 1, 1), (100, 1, 1)]),
            ),
            ("a price twice", serde_book(1, &[ok, ok], &[])),
            ("size 0", serde_book(1, &[(100, 0, 1)], &[])),
            (
                "over the bound",
                serde_book(
                    1,
                    &[ok; 0],
                    &(0..101).map(|i| (100 + i, 1, 1)).collect::<Vec<_>>(),
                ),
            ),
            (
                "a level of two fields",
                rmp_serde::to_vec(&(66u8, 3u16, 9u64, 1u64, [(100i64, 1u32)], [(101i64, 1u32)]))
                    .unwrap(),
            ),
        ];
        for (what, raw) in cases {
            assert_eq!(decode_message(&raw), Err(DecodeError::BadLevels), "{what}");
        }
        // Not an array where the side should be; a negative size.
        let raw =
            rmp_serde::to_vec(&(66u8, 3u16, 9u64, 1u64, "bids", [(101i64, 1u32, 1u32)])).unwrap();
        assert_eq!(decode_message(&raw), Err(DecodeError::BadLevels));
        let raw =
            rmp_serde::to_vec(&(66u8, 3u16, 9u64, 1u64, [(100i64, -1i32, 1u32)], ())).unwrap();
        assert_eq!(decode_message(&raw), Err(DecodeError::BadLevels));
        // Exactly at the bound is fine, and a side may be empty.
        let at: Vec<(i64, u32, u32)> = (0..MAX_BOOK_LEVELS as i64)
            .map(|i| (100 + i, 1, 1))
            .collect();
        assert!(decode_message(&serde_book(1, &[], &at)).is_ok());
    }

    fn arb_side(side: Side) -> impl Strategy<Value = Vec<PriceLevel>> {
        proptest::collection::btree_map(any::<i64>(), (1u32.., any::<u32>()), 0..40).prop_map(
            move |m| {
                let mut v: Vec<PriceLevel> = m.into_iter().map(|(p, (s, o))| lv(p, s, o)).collect();
                if side == Side::Bid {
                    v.reverse();
                }
                v
            },
        )
    }

    proptest! {
        #[test]
        fn book_and_level_round_trip(
            bids in arb_side(Side::Bid),
            asks in arb_side(Side::Ask),
            book_seq in any::<u64>(),
            price in any::<i64>(),
            size in any::<u32>(),
            orders in any::<u32>(),
        ) {
            let book = Message::Book {
                locate: 7,
                ts: 1,
                book_seq,
                bids: Levels::from_slice(&bids),
                asks: Levels::from_slice(&asks),
            };
            let mut out = Vec::new();
            book.encode(&mut out);
            prop_assert_eq!(decode_message(&out), Ok(book));
            let level = Message::Level { locate: 7, ts: 1, side: Side::Bid, price: Price(price), size, orders };
            let mut out = Vec::new();
            level.encode(&mut out);
            prop_assert_eq!(decode_message(&out), Ok(level));
        }
    }
}
