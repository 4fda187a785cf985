//! What the simulator has published: the book of listings by locate (what
//! the recovery loop sends), and each symbol's final state and the run's
//! summary (what a correct relay must show once the feed is drained).

use std::collections::BTreeMap;

use super::depth::Depth;
use crate::price::Price;
use crate::wire::{Locate, PriceLevel, StateQuote, StateTrade};

/// The last state the simulator published for one symbol: what a correct
/// relay's snapshot must show once the feed is drained, and what the last
/// recovery cycle carries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FinalQuote {
    /// Ticker.
    pub symbol: String,
    /// Sequence of the last message about this symbol (its first directory
    /// entry when it never ticked; repeats of the directory change nothing).
    pub seq: u64,
    /// Best bid, if any quote was published.
    pub bid: Option<Price>,
    /// Best ask, if any quote was published.
    pub ask: Option<Price>,
    /// Bid size (0 before the first quote).
    pub bid_size: u32,
    /// Ask size (0 before the first quote).
    pub ask_size: u32,
    /// Last trade price, if any trade.
    pub last: Option<Price>,
    /// Last trade size (0 before the first trade).
    pub last_size: u32,
    /// Cumulative volume.
    pub volume: u64,
    /// Previous close.
    pub prev_close: Price,
    /// Locate code.
    #[serde(default)]
    pub locate: Locate,
    /// Sequence of the last quote (0: none), the `quote_seq` of its `'S'`.
    #[serde(default)]
    pub quote_seq: u64,
    /// Sequence of the last trade (0: none), the `trade_seq` of its `'S'`.
    #[serde(default)]
    pub trade_seq: u64,
    /// Exchange timestamp of its newest change (its listing's when it never
    /// ticked), the `ts` of its `'S'`.
    #[serde(default)]
    pub ts: u64,
    /// Sequence of the last `'L'` (0: none), the `book_seq` of its `'B'`.
    #[serde(default)]
    pub book_seq: u64,
    /// The book's bids, best (highest) first, `[price, size, orders]`, to
    /// `--book-depth` levels.
    #[serde(default)]
    pub bids: Vec<(Price, u32, u32)>,
    /// The book's asks, best (lowest) first.
    #[serde(default)]
    pub asks: Vec<(Price, u32, u32)>,
}

/// What a finished run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SimSummary {
    /// Session id.
    pub session: String,
    /// Messages sent (directory and book levels included).
    pub messages: u64,
    /// Book levels (`'L'`) among them.
    pub book_messages: u64,
    /// Datagrams sent on line A.
    pub packets: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Achieved messages per second.
    pub rate: f64,
    /// Sequence one past the last message.
    pub next_seq: u64,
    /// Final state per symbol.
    pub quotes: Vec<FinalQuote>,
    /// Recovery-loop sequence one past its last message, when the loop ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_next_seq: Option<u64>,
    /// Why the recording is incomplete, if a write failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
}

/// One symbol as published so far: what the recovery loop and the final
/// state are made of.
#[derive(Clone, Debug)]
pub(crate) struct Listing {
    pub(crate) symbol: String,
    pub(crate) name: String,
    pub(crate) prev_close: Price,
    /// Sequence and time of the directory entry that listed it.
    pub(crate) listed_seq: u64,
    pub(crate) listed_ts: u64,
    /// The last quote and trade, with the sequences they had on the feed.
    pub(crate) quote: Option<StateQuote>,
    pub(crate) trade: Option<StateTrade>,
    /// Exchange time of the newest change.
    pub(crate) ts: u64,
    /// The book as published by `'L'`s.
    pub(crate) depth: Depth,
}

impl Listing {
    pub(super) fn final_quote(&self, locate: usize) -> FinalQuote {
        let quote_seq = self.quote.map_or(0, |q| q.seq);
        let trade_seq = self.trade.map_or(0, |t| t.seq);
        FinalQuote {
            symbol: self.symbol.clone(),
            seq: self.listed_seq.max(quote_seq).max(trade_seq),
            bid: self.quote.map(|q| q.bid),
            ask: self.quote.map(|q| q.ask),
            bid_size: self.quote.map_or(0, |q| q.bid_size),
            ask_size: self.quote.map_or(0, |q| q.ask_size),
            last: self.trade.map(|t| t.last),
            last_size: self.trade.map_or(0, |t| t.last_size),
            volume: self.trade.map_or(0, |t| t.volume),
            prev_close: self.prev_close,
            locate: locate as Locate,
            quote_seq,
            trade_seq,
            ts: self.ts,
            book_seq: self.depth.seq,
            bids: self.depth.bids.iter().map(row).collect(),
            asks: self.depth.asks.iter().map(row).collect(),
        }
    }
}

/// A level as the final state writes it: `[price, size, orders]`.
fn row(l: &PriceLevel) -> (Price, u32, u32) {
    (l.price, l.size, l.orders)
}

/// Every listed symbol by locate.
#[derive(Default)]
pub(crate) struct Book {
    pub(crate) listings: Vec<Option<Listing>>,
}

impl Book {
    /// The listing of `locate`, if listed.
    pub(crate) fn get(&self, locate: usize) -> Option<&Listing> {
        self.listings.get(locate).and_then(Option::as_ref)
    }

    /// The first listed locate at or after `from`.
    pub(crate) fn next_listed(&self, from: usize) -> Option<usize> {
        (from..self.listings.len()).find(|&i| self.listings[i].is_some())
    }

    pub(super) fn get_mut(&mut self, locate: usize) -> Option<&mut Listing> {
        self.listings.get_mut(locate).and_then(Option::as_mut)
    }

    pub(super) fn listed(&self) -> impl Iterator<Item = (usize, &Listing)> {
        self.listings
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
    }
}

/// The final state as a map by symbol (for tests and tools).
pub fn final_by_symbol(summary: &SimSummary) -> BTreeMap<String, FinalQuote> {
    summary
        .quotes
        .iter()
        .map(|q| (q.symbol.clone(), q.clone()))
        .collect()
}
