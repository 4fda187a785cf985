//! Depth of book streamed (docs/PROTOCOL.md, "Depth of book"): a client's
//! book subscriptions, each holding the levels this client was last sent
//! (its copy, like a quote subscription's `last` with `delta`), and the
//! frames that bring the copy to the current book — a snapshot first, then
//! only the levels that differ, size 0 for a level gone. A client marked
//! again before its frame went out gets one difference to the book as it
//! is then (conflation), never a backlog. The frames' encodings for each
//! transport are here too.

use std::sync::Arc;

use serde::Serialize;

use crate::api::{ApiError, AppState, ErrorCode, entitled, parse_symbols};
use crate::auth::{Channel, Identity};
use crate::fanout::Format;
use crate::price::Price;
use crate::table::book::checksum;
use crate::table::{BookFrame, BookRead, Table};
use crate::transport::book::{MAX_DEPTH, parse_depth};
use crate::transport::snapshot::resolve;
use crate::wire::{Locate, PriceLevel, Side};

/// One symbol's book subscription.
#[derive(Debug)]
struct BookSub {
    name: Arc<str>,
    locate: Locate,
    depth: usize,
    /// What this client holds: the levels of the last frame applied. `None`
    /// until the first frame (and after a new session): the next is a
    /// snapshot.
    last: Option<BookRead>,
    /// The `seq` of the last frame sent (its next frame's `prev`).
    prev: Option<u64>,
}

impl BookSub {
    /// The frame from what the client holds to `now`, which it then holds;
    /// `None` when nothing it holds differs (a change beyond its depth).
    fn frame(&mut self, now: BookRead) -> Option<BookFrame> {
        let mut frame = match &self.last {
            Some(last) if last.stamp == now.stamp => return None,
            Some(last) => {
                let mut f = BookFrame::snapshot(self.name.clone(), &now);
                f.snapshot = false;
                f.bids = diff(Side::Bid, &last.bids, &now.bids);
                f.asks = diff(Side::Ask, &last.asks, &now.asks);
                if f.bids.is_empty() && f.asks.is_empty() {
                    self.last = Some(now);
                    return None;
                }
                f
            }
            None => BookFrame::snapshot(self.name.clone(), &now),
        };
        frame.prev = self.prev.unwrap_or(now.seq);
        frame.checksum = checksum(&now.bids, &now.asks);
        self.prev = Some(now.seq);
        self.last = Some(now);
        Some(frame)
    }
}

/// The levels of `now` that differ from `last` (both one side, best first),
/// best first: a new or changed level as it is, a level gone with size 0.
pub fn diff(side: Side, last: &[PriceLevel], now: &[PriceLevel]) -> Vec<(Price, u32, u32)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    loop {
        match (last.get(i), now.get(j)) {
            (Some(a), Some(b)) if a.price == b.price => {
                if a != b {
                    out.push((b.price, b.size, b.orders));
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if side.better(b.price, a.price) => {
                out.push((b.price, b.size, b.orders));
                j += 1;
            }
            (Some(a), _) => {
                out.push((a.price, 0, 0));
                i += 1;
            }
            (None, Some(b)) => {
                out.push((b.price, b.size, b.orders));
                j += 1;
            }
            (None, None) => return out,
        }
    }
}

/// A client's book subscriptions (few: a scan finds one).
#[derive(Debug, Default)]
pub struct BookSubs {
    subs: Vec<BookSub>,
}

impl BookSubs {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether `name`'s book is subscribed.
    pub fn contains(&self, name: &str) -> bool {
        self.subs.iter().any(|s| &*s.name == name)
    }

    /// Every subscribed book's symbol.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.subs.iter().map(|s| s.name.clone()).collect()
    }

    /// Subscribes to `name`'s book (listed at `locate`) at `depth`, or
    /// changes the depth of a subscription; its snapshot, the whole book to
    /// `depth` (`prev` the last frame's `seq` when one was sent).
    pub fn subscribe(
        &mut self,
        name: &Arc<str>,
        locate: Locate,
        depth: usize,
        table: &Table,
    ) -> Option<BookFrame> {
        let now = table.book(locate, depth)?;
        let i = match self.subs.iter().position(|s| s.name == *name) {
            Some(i) => i,
            None => {
                self.subs.push(BookSub {
                    name: name.clone(),
                    locate,
                    depth,
                    last: None,
                    prev: None,
                });
                self.subs.len() - 1
            }
        };
        let sub = &mut self.subs[i];
        (sub.locate, sub.depth, sub.last) = (locate, depth, None);
        sub.frame(now)
    }

    /// Ends `name`'s book subscription; whether there was one.
    pub fn unsubscribe(&mut self, name: &str) -> bool {
        let before = self.subs.len();
        self.subs.retain(|s| &*s.name != name);
        self.subs.len() != before
    }

    /// `locate` changed: the frames of its subscriptions, into `out`.
    pub fn changed(&mut self, locate: Locate, table: &Table, out: &mut Vec<BookFrame>) {
        for sub in self.subs.iter_mut().filter(|s| s.locate == locate) {
            if let Some(f) = table.book(locate, sub.depth).and_then(|now| sub.frame(now)) {
                out.push(f);
            }
        }
    }

    /// A new feed session: every book starts again from a snapshot, found
    /// by its name (a ticker may be listed elsewhere now).
    pub fn resync(&mut self, table: &Table, out: &mut Vec<BookFrame>) {
        for sub in &mut self.subs {
            sub.last = None;
            if let Some(locate) = table.locate(&sub.name) {
                sub.locate = locate;
                if let Some(f) = table.book(locate, sub.depth).and_then(|now| sub.frame(now)) {
                    out.push(f);
                }
            }
        }
    }
}

/// `depth` of a book subscription: 1–50, 10 when absent; anything else,
/// including a depth that is not a number, is `bad_depth`.
pub fn depth_of(raw: Option<&serde_json::Value>) -> Result<usize, ApiError> {
    match raw {
        None | Some(serde_json::Value::Null) => parse_depth(None),
        Some(serde_json::Value::String(s)) => parse_depth(Some(s)),
        Some(v) => match v.as_u64() {
            Some(d) => parse_depth(Some(&d.to_string())),
            None => Err(ApiError::new(
                ErrorCode::BadDepth,
                format!("depth is not a whole number from 1 to {MAX_DEPTH}"),
            )),
        },
    }
}

/// The books a request names (`?book=A,B&depth=N` of `/v1/stream` and
/// `/v1/poll`): listed, entitled, at one depth.
#[derive(Debug)]
pub struct BookRequest {
    /// Where each is listed.
    pub locates: Vec<Locate>,
    /// Their tickers, in the same order.
    pub names: Vec<Arc<str>>,
    /// Levels a side.
    pub depth: usize,
}

/// Reads `book` and `depth` of a query: `None` without `book`; the books
/// named, each entitled on the `book` channel (no `*`: a book is one
/// symbol's), or the error a REST request for them would get.
pub fn requested_books(
    state: &AppState,
    identity: &Identity,
    book: Option<&str>,
    depth: Option<&str>,
) -> Result<Option<BookRequest>, ApiError> {
    let Some(raw) = book else { return Ok(None) };
    let depth = parse_depth(depth)?;
    let cap = identity.rights.symbol_cap(state.config.policy.max_symbols);
    let names = parse_symbols(Some(raw), cap)?.unwrap_or_default();
    if names.is_empty() || names.iter().any(|n| n == "*") {
        return Err(ApiError::new(
            ErrorCode::BadSymbol,
            "`book` names symbols, not `*`: a book is one symbol's",
        ));
    }
    entitled(identity, Channel::Book, names.iter().map(String::as_str))?;
    let locates = resolve(&state.table, &names)?;
    let names = locates
        .iter()
        .filter_map(|&l| state.table.info(l).map(|i| i.symbol.clone()))
        .collect();
    Ok(Some(BookRequest {
        locates,
        names,
        depth,
    }))
}

/// A WebSocket `book` frame: the book object with `"type":"book"`.
#[derive(Serialize)]
struct Typed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    symbol: &'a str,
    seq: u64,
    prev: u64,
    snapshot: bool,
    bids: &'a [(Price, u32, u32)],
    asks: &'a [(Price, u32, u32)],
    checksum: u32,
}

/// A WebSocket `book` frame's payload in `format`, appended to `out`
/// (MessagePack prices as integers in 1/10,000).
pub fn ws_into(out: &mut Vec<u8>, format: Format, f: &BookFrame) {
    let typed = Typed {
        kind: "book",
        symbol: &f.symbol,
        seq: f.seq,
        prev: f.prev,
        snapshot: f.snapshot,
        bids: &f.bids,
        asks: &f.asks,
        checksum: f.checksum,
    };
    match format {
        Format::Json => {
            let _ = serde_json::to_writer(&mut *out, &typed);
        }
        Format::Msgpack => {
            let _ = rmp_serde::encode::write_named(out, &typed);
        }
    }
}

/// An SSE `book` event, appended to `out`: no `id:`, so a reconnect's
/// `Last-Event-ID` stays the quotes' resume point (a book always starts
/// again from a snapshot).
pub fn sse_into(out: &mut Vec<u8>, f: &BookFrame) {
    out.extend_from_slice(b"event: book\ndata: ");
    let _ = serde_json::to_writer(&mut *out, f);
    out.extend_from_slice(b"\n\n");
}

/// Adds `"books":[…]` to an envelope (a JSON object, or a MessagePack map
/// of fewer than 15 entries) built without it.
pub fn append_books(body: &mut Vec<u8>, format: Format, books: &[BookFrame]) {
    match format {
        Format::Json => {
            if body.last() == Some(&b'}') {
                body.pop();
                body.extend_from_slice(if body.len() > 1 { b"," } else { b"" });
                body.extend_from_slice(b"\"books\":");
                let _ = serde_json::to_writer(&mut *body, books);
                body.push(b'}');
            }
        }
        Format::Msgpack => {
            // A fixmap: its entry count is in its first byte.
            if let Some(first) = body.first_mut()
                && *first & 0xf0 == 0x80
                && *first & 0x0f < 15
            {
                *first += 1;
                let _ = rmp::encode::write_str(body, "books");
                let _ = rmp_serde::encode::write_named(body, books);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(price: i64, size: u32) -> PriceLevel {
        PriceLevel {
            price: Price(price),
            size,
            orders: 1,
        }
    }

    /// Applies `rows` to `copy` as a client does (docs/PROTOCOL.md).
    fn apply(side: Side, copy: &mut Vec<PriceLevel>, rows: &[(Price, u32, u32)]) {
        for &(price, size, orders) in rows {
            copy.retain(|x| x.price != price);
            if size > 0 {
                let at = copy.partition_point(|x| side.better(x.price, price));
                copy.insert(
                    at,
                    PriceLevel {
                        price,
                        size,
                        orders,
                    },
                );
            }
        }
    }

    #[test]
    fn a_diff_applied_gives_the_new_side() {
        let cases: [(&[PriceLevel], &[PriceLevel]); 4] = [
            (&[l(100, 1), l(99, 2)], &[l(101, 5), l(100, 1), l(98, 3)]),
            (&[l(100, 1), l(99, 2), l(98, 3)], &[l(99, 7)]),
            (&[], &[l(100, 1)]),
            (&[l(100, 1)], &[]),
        ];
        for (last, now) in cases {
            let rows = diff(Side::Bid, last, now);
            let mut copy = last.to_vec();
            apply(Side::Bid, &mut copy, &rows);
            assert_eq!(copy, now, "{rows:?}");
            for kept in now.iter().filter(|x| last.contains(x)) {
                let row = (kept.price, kept.size, kept.orders);
                assert!(!rows.contains(&row), "unchanged levels stay out");
            }
        }
        // Asks are best lowest first.
        let rows = diff(Side::Ask, &[l(101, 1)], &[l(100, 1), l(101, 1)]);
        assert_eq!(rows, [(Price(100), 1, 1)]);
    }

    #[test]
    fn books_go_into_poll_envelopes() {
        let f = BookFrame::snapshot(Arc::from("A"), &BookRead::default());
        let mut json = br#"{"seq":1,"quotes":[]}"#.to_vec();
        append_books(&mut json, Format::Json, std::slice::from_ref(&f));
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["books"][0]["symbol"], "A");
        let mut packed = Vec::new();
        rmp::encode::write_map_len(&mut packed, 1).unwrap();
        rmp::encode::write_str(&mut packed, "seq").unwrap();
        rmp::encode::write_uint(&mut packed, 1).unwrap();
        append_books(&mut packed, Format::Msgpack, &[f]);
        let v: serde_json::Value = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(v["books"][0]["symbol"], "A");
    }
}
