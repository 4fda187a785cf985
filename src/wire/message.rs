//! The market events a packet carries, as MessagePack arrays: [`Message`]
//! (directory entry, quote, trade, book level, and the recovery loop's
//! state message with its [`StateQuote`] and [`StateTrade`] halves and its
//! book state), [`decode_message`] and [`Message::encode`].

use super::book::{Levels, Side};
use super::{
    DecodeError, Locate, TYPE_BOOK, TYPE_DIRECTORY, TYPE_LEVEL, TYPE_QUOTE, TYPE_STATE, TYPE_TRADE,
};
use crate::price::Price;

/// One market event, borrowing strings from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `[68, locate, ts, symbol, name, prev_close]`
    Directory {
        /// Locate code this entry defines.
        locate: Locate,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// Ticker, e.g. `AAPL`.
        symbol: &'a str,
        /// Company name.
        name: &'a str,
        /// Previous session's closing price.
        prev_close: Price,
    },
    /// `[81, locate, ts, bid, ask, bid_size, ask_size]`
    Quote {
        /// Symbol's locate code.
        locate: Locate,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// Best bid.
        bid: Price,
        /// Best ask.
        ask: Price,
        /// Shares at the bid.
        bid_size: u32,
        /// Shares at the ask.
        ask_size: u32,
    },
    /// `[84, locate, ts, price, size, volume]`
    Trade {
        /// Symbol's locate code.
        locate: Locate,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// Trade price.
        price: Price,
        /// Shares traded.
        size: u32,
        /// Cumulative session volume after this trade.
        volume: u64,
    },
    /// `[83, locate, ts, quote_seq, bid, ask, bid_size, ask_size, trade_seq,
    /// last, last_size, volume]`: a symbol's whole state, sent on the recovery
    /// line. Each half carries the incremental-feed sequence of the last
    /// message it reflects, so a relay applies it only if it is newer.
    State {
        /// Symbol's locate code.
        locate: Locate,
        /// Exchange timestamp of the symbol's last change, ns since the Unix epoch.
        ts: u64,
        /// The last quote, if the symbol has had one (`quote_seq` 0 and nil
        /// fields on the wire when not).
        quote: Option<StateQuote>,
        /// The last trade, if the symbol has traded (`trade_seq` 0 and nil
        /// fields when not).
        trade: Option<StateTrade>,
    },
    /// `[76, locate, ts, side, price, size, orders]`: one price level of the
    /// book, absolute — the size replaces what the level held, size 0
    /// deletes it.
    Level {
        /// Symbol's locate code.
        locate: Locate,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// Bid (0) or ask (1).
        side: Side,
        /// The level's price.
        price: Price,
        /// Shares at the level; 0 deletes it.
        size: u32,
        /// Orders at the level.
        orders: u32,
    },
    /// `[66, locate, ts, book_seq, bids, asks]`: a symbol's whole book, sent
    /// on the recovery line. `book_seq` is the incremental-feed sequence of
    /// the last `'L'` it reflects, so a relay merges it only if it is newer.
    Book {
        /// Symbol's locate code.
        locate: Locate,
        /// Exchange timestamp of the book's last change.
        ts: u64,
        /// Incremental-feed sequence of the last `'L'` reflected (0: none).
        book_seq: u64,
        /// Bids, best (highest) first.
        bids: Levels<'a>,
        /// Asks, best (lowest) first.
        asks: Levels<'a>,
    },
}

/// The quote half of a [`Message::State`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateQuote {
    /// Incremental-feed sequence of the quote this reflects (never 0).
    pub seq: u64,
    /// Best bid.
    pub bid: Price,
    /// Best ask.
    pub ask: Price,
    /// Shares at the bid.
    pub bid_size: u32,
    /// Shares at the ask.
    pub ask_size: u32,
}

/// The trade half of a [`Message::State`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTrade {
    /// Incremental-feed sequence of the trade this reflects (never 0).
    pub seq: u64,
    /// Last trade price.
    pub last: Price,
    /// Last trade size.
    pub last_size: u32,
    /// Cumulative session volume.
    pub volume: u64,
}

impl Message<'_> {
    /// The symbol's locate code.
    pub fn locate(&self) -> Locate {
        match *self {
            Message::Directory { locate, .. }
            | Message::Quote { locate, .. }
            | Message::Trade { locate, .. }
            | Message::State { locate, .. }
            | Message::Level { locate, .. }
            | Message::Book { locate, .. } => locate,
        }
    }

    /// The exchange timestamp.
    pub fn ts(&self) -> u64 {
        match *self {
            Message::Directory { ts, .. }
            | Message::Quote { ts, .. }
            | Message::Trade { ts, .. }
            | Message::State { ts, .. }
            | Message::Level { ts, .. }
            | Message::Book { ts, .. } => ts,
        }
    }

    /// Appends this message as MessagePack (compact array form, the same bytes
    /// `rmp-serde` writes for the tuple) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use rmp::encode::{write_array_len, write_sint, write_str, write_uint};
        // Writing into a Vec cannot fail.
        let _ = match *self {
            Message::Directory {
                locate,
                ts,
                symbol,
                name,
                prev_close,
            } => write_array_len(out, 6)
                .and_then(|_| write_uint(out, TYPE_DIRECTORY).map(drop))
                .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                .and_then(|_| write_uint(out, ts).map(drop))
                .and_then(|_| write_str(out, symbol))
                .and_then(|_| write_str(out, name))
                .and_then(|_| write_sint(out, prev_close.raw()).map(drop)),
            Message::Quote {
                locate,
                ts,
                bid,
                ask,
                bid_size,
                ask_size,
            } => write_array_len(out, 7)
                .and_then(|_| write_uint(out, TYPE_QUOTE).map(drop))
                .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                .and_then(|_| write_uint(out, ts).map(drop))
                .and_then(|_| write_sint(out, bid.raw()).map(drop))
                .and_then(|_| write_sint(out, ask.raw()).map(drop))
                .and_then(|_| write_uint(out, u64::from(bid_size)).map(drop))
                .and_then(|_| write_uint(out, u64::from(ask_size)).map(drop)),
            Message::Trade {
                locate,
                ts,
                price,
                size,
                volume,
            } => write_array_len(out, 6)
                .and_then(|_| write_uint(out, TYPE_TRADE).map(drop))
                .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                .and_then(|_| write_uint(out, ts).map(drop))
                .and_then(|_| write_sint(out, price.raw()).map(drop))
                .and_then(|_| write_uint(out, u64::from(size)).map(drop))
                .and_then(|_| write_uint(out, volume).map(drop)),
            Message::State {
                locate,
                ts,
                quote,
                trade,
            } => {
                let head = write_array_len(out, 12)
                    .and_then(|_| write_uint(out, TYPE_STATE).map(drop))
                    .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                    .and_then(|_| write_uint(out, ts).map(drop));
                let q = match quote {
                    Some(q) => write_uint(out, q.seq)
                        .map(drop)
                        .and_then(|_| write_sint(out, q.bid.raw()).map(drop))
                        .and_then(|_| write_sint(out, q.ask.raw()).map(drop))
                        .and_then(|_| write_uint(out, u64::from(q.bid_size)).map(drop))
                        .and_then(|_| write_uint(out, u64::from(q.ask_size)).map(drop)),
                    None => write_empty_half(out, 4),
                };
                let t = match trade {
                    Some(t) => write_uint(out, t.seq)
                        .map(drop)
                        .and_then(|_| write_sint(out, t.last.raw()).map(drop))
                        .and_then(|_| write_uint(out, u64::from(t.last_size)).map(drop))
                        .and_then(|_| write_uint(out, t.volume).map(drop)),
                    None => write_empty_half(out, 3),
                };
                head.and(q).and(t)
            }
            Message::Level {
                locate,
                ts,
                side,
                price,
                size,
                orders,
            } => write_array_len(out, 7)
                .and_then(|_| write_uint(out, TYPE_LEVEL).map(drop))
                .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                .and_then(|_| write_uint(out, ts).map(drop))
                .and_then(|_| write_uint(out, u64::from(side.code())).map(drop))
                .and_then(|_| write_sint(out, price.raw()).map(drop))
                .and_then(|_| write_uint(out, u64::from(size)).map(drop))
                .and_then(|_| write_uint(out, u64::from(orders)).map(drop)),
            Message::Book {
                locate,
                ts,
                book_seq,
                bids,
                asks,
            } => {
                let head = write_array_len(out, 6)
                    .and_then(|_| write_uint(out, TYPE_BOOK).map(drop))
                    .and_then(|_| write_uint(out, u64::from(locate)).map(drop))
                    .and_then(|_| write_uint(out, ts).map(drop))
                    .and_then(|_| write_uint(out, book_seq).map(drop));
                bids.encode(out);
                asks.encode(out);
                head
            }
        };
    }
}

/// A state half with nothing in it: sequence 0, then `fields` nils.
fn write_empty_half(out: &mut Vec<u8>, fields: usize) -> Result<(), rmp::encode::ValueWriteError> {
    rmp::encode::write_uint(out, 0)?;
    for _ in 0..fields {
        rmp::encode::write_nil(out).map_err(rmp::encode::ValueWriteError::InvalidMarkerWrite)?;
    }
    Ok(())
}

/// Decodes one message payload. Arrays longer than the layout are accepted
/// (the feed may grow fields at the end); shorter ones are malformed.
pub fn decode_message(mut buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let len = rmp::decode::read_array_len(&mut buf).map_err(|_| DecodeError::BadMsgpack)?;
    if len == 0 {
        return Err(DecodeError::BadMsgpack);
    }
    let kind: u64 = read_int(&mut buf)?;
    let need = match kind {
        TYPE_DIRECTORY => 6,
        TYPE_QUOTE => 7,
        TYPE_TRADE => 6,
        TYPE_STATE => 12,
        TYPE_LEVEL => 7,
        TYPE_BOOK => 6,
        _ => return Err(DecodeError::UnknownType),
    };
    if len < need {
        return Err(DecodeError::BadMsgpack);
    }
    let locate: Locate = read_int(&mut buf)?;
    let ts: u64 = read_int(&mut buf)?;
    match kind {
        TYPE_DIRECTORY => {
            let (symbol, rest) =
                rmp::decode::read_str_from_slice(buf).map_err(|_| DecodeError::BadMsgpack)?;
            let (name, mut rest) =
                rmp::decode::read_str_from_slice(rest).map_err(|_| DecodeError::BadMsgpack)?;
            if symbol.is_empty() || symbol.len() > 16 {
                return Err(DecodeError::BadField);
            }
            let prev_close = Price(read_int(&mut rest)?);
            Ok(Message::Directory {
                locate,
                ts,
                symbol,
                name,
                prev_close,
            })
        }
        TYPE_QUOTE => Ok(Message::Quote {
            locate,
            ts,
            bid: Price(read_int(&mut buf)?),
            ask: Price(read_int(&mut buf)?),
            bid_size: read_int(&mut buf)?,
            ask_size: read_int(&mut buf)?,
        }),
        TYPE_TRADE => Ok(Message::Trade {
            locate,
            ts,
            price: Price(read_int(&mut buf)?),
            size: read_int(&mut buf)?,
            volume: read_int(&mut buf)?,
        }),
        TYPE_LEVEL => Ok(Message::Level {
            locate,
            ts,
            side: Side::from_code(read_int(&mut buf)?).ok_or(DecodeError::BadField)?,
            price: Price(read_int(&mut buf)?),
            size: read_int(&mut buf)?,
            orders: read_int(&mut buf)?,
        }),
        TYPE_BOOK => {
            let book_seq = read_int(&mut buf)?;
            let bids = Levels::decode(&mut buf, Side::Bid)?;
            let asks = Levels::decode(&mut buf, Side::Ask)?;
            Ok(Message::Book {
                locate,
                ts,
                book_seq,
                bids,
                asks,
            })
        }
        _ => {
            let quote_seq: u64 = read_int(&mut buf)?;
            let quote = if quote_seq == 0 {
                skip_half(&mut buf, 4)?;
                None
            } else {
                Some(StateQuote {
                    seq: quote_seq,
                    bid: Price(read_int(&mut buf)?),
                    ask: Price(read_int(&mut buf)?),
                    bid_size: read_int(&mut buf)?,
                    ask_size: read_int(&mut buf)?,
                })
            };
            let trade_seq: u64 = read_int(&mut buf)?;
            let trade = if trade_seq == 0 {
                skip_half(&mut buf, 3)?;
                None
            } else {
                Some(StateTrade {
                    seq: trade_seq,
                    last: Price(read_int(&mut buf)?),
                    last_size: read_int(&mut buf)?,
                    volume: read_int(&mut buf)?,
                })
            };
            Ok(Message::State {
                locate,
                ts,
                quote,
                trade,
            })
        }
    }
}

/// Skips the fields of an empty state half: each nil or an integer (a
/// producer may write zeros instead of nils).
fn skip_half(buf: &mut &[u8], fields: usize) -> Result<(), DecodeError> {
    for _ in 0..fields {
        match buf.first() {
            Some(&0xc0) => *buf = &buf[1..],
            Some(_) => {
                read_int::<i64>(buf)?;
            }
            None => return Err(DecodeError::BadMsgpack),
        }
    }
    Ok(())
}

pub(super) fn read_int<T: TryFrom<i128>>(buf: &mut &[u8]) -> Result<T, DecodeError> {
    let marker = *buf.first().ok_or(DecodeError::BadMsgpack)?;
    // Negative fixint (0xe0..) and int8..int64 (0xd0..0xd3) are signed.
    let v: i128 = if marker >= 0xe0 || (0xd0..=0xd3).contains(&marker) {
        i128::from(rmp::decode::read_int::<i64, _>(buf).map_err(|_| DecodeError::BadMsgpack)?)
    } else {
        i128::from(rmp::decode::read_int::<u64, _>(buf).map_err(|_| DecodeError::BadMsgpack)?)
    };
    T::try_from(v).map_err(|_| DecodeError::BadField)
}
