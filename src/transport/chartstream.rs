//! The chart and the tape streamed (docs/PROTOCOL.md, "Trades and bars
//! streamed"): a client's trades and bars subscriptions, kept beside its
//! quote and book subscriptions in `Subscriptions` and drained with the same
//! marks, and their frames' WebSocket and SSE encodings.
//!
//! Each subscription holds what its client last got, as a book subscription
//! does: a trades subscription its position on the symbol's tape (the
//! sequence it has every trade up to), a bars subscription the last bar it
//! sent. A drain reads the table's chart after that and sends what is newer:
//! every trade, in order, never conflated; of the bars, each that closed
//! since (once, `closed: true`) and the current one as it is now. So a
//! trades subscription holds no queue of its own: the tape is the queue,
//! and a client that falls behind it by more than `every_queue` trades, or
//! past what the tape keeps, is closed as slow (4008) and resumes with
//! `since`. A bar that closes because feed time passed its end, without a
//! trade, is found when the hub's clock wakes a client with bars (once per
//! feed second).

use std::sync::Arc;

use serde::Serialize;

use crate::api::{ApiError, AppState, ErrorCode, entitled, parse_symbols};
use crate::auth::{Channel, Identity};
use crate::fanout::Format;
use crate::table::Table;
use crate::table::chart::{Bar, Interval, LIVE, Trade};
use crate::transport::chart::interval_of;
use crate::transport::snapshot::resolve;
use crate::wire::{Locate, Session};

/// A `trades` or `bars` frame of one symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartFrame {
    /// Ticker.
    pub symbol: Arc<str>,
    /// The feed session (trades frames carry it: `since` is
    /// `SESSION:SEQ`).
    pub session: Session,
    /// Trades: every trade of the symbol up to this feed sequence has been
    /// sent (the `since` to resume from). Bars: the feed sequence applied
    /// when they were read.
    pub seq: u64,
    /// The subscription's first frame (its history).
    pub snapshot: bool,
    /// A first frame resuming from a `since` older than the kept tape:
    /// trades after `since` are missing before these.
    pub gap: bool,
    /// The trades or the bars.
    pub items: Items,
}

/// What a chart frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Items {
    /// Trades, oldest first.
    Trades(Vec<Trade>),
    /// Bars of one interval, oldest first.
    Bars(Interval, Vec<Bar>),
}

impl ChartFrame {
    /// `trades` or `bars`: the frame's `type` and the SSE event's name.
    pub fn name(&self) -> &'static str {
        match self.items {
            Items::Trades(_) => "trades",
            Items::Bars(..) => "bars",
        }
    }

    /// How many trades or bars it carries.
    pub fn len(&self) -> usize {
        match &self.items {
            Items::Trades(t) => t.len(),
            Items::Bars(_, b) => b.len(),
        }
    }

    /// Whether it carries none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Serialized with `"type"` (WebSocket) or without (SSE data).
    fn write<W: FnOnce(&dyn erased::Ser)>(&self, typed: bool, w: W) {
        let kind = typed.then(|| self.name());
        match &self.items {
            Items::Trades(trades) => w(&TradesOut {
                kind,
                symbol: &self.symbol,
                session: self.session.as_str(),
                seq: self.seq,
                snapshot: self.snapshot,
                gap: self.gap,
                trades,
            }),
            Items::Bars(interval, bars) => w(&BarsOut {
                kind,
                symbol: &self.symbol,
                interval: interval.as_str(),
                seq: self.seq,
                snapshot: self.snapshot,
                bars,
            }),
        }
    }

    /// The WebSocket frame's payload in `format`, appended to `out`
    /// (MessagePack prices as integers in 1/10,000, as book frames).
    pub fn ws_into(&self, out: &mut Vec<u8>, format: Format) {
        self.write(true, |v| v.encode(out, format));
    }

    /// The SSE event (`trades` or `bars`), appended to `out`: no `id:`, so
    /// a reconnect's `Last-Event-ID` stays the quotes' resume point (trades
    /// resume by `since`).
    pub fn sse_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(self.name().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        self.write(false, |v| v.encode(out, Format::Json));
        out.extend_from_slice(b"\n\n");
    }
}

/// Encoding either frame shape through one closure.
mod erased {
    use crate::fanout::Format;

    /// A frame shape that encodes itself.
    pub(super) trait Ser {
        fn encode(&self, out: &mut Vec<u8>, format: Format);
    }

    impl<T: serde::Serialize> Ser for T {
        fn encode(&self, out: &mut Vec<u8>, format: Format) {
            match format {
                Format::Json => {
                    let _ = serde_json::to_writer(&mut *out, self);
                }
                Format::Msgpack => {
                    let _ = rmp_serde::encode::write_named(out, self);
                }
            }
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct TradesOut<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    symbol: &'a str,
    session: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "is_false")]
    snapshot: bool,
    #[serde(skip_serializing_if = "is_false")]
    gap: bool,
    trades: &'a [Trade],
}

#[derive(Serialize)]
struct BarsOut<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    symbol: &'a str,
    interval: &'static str,
    seq: u64,
    #[serde(skip_serializing_if = "is_false")]
    snapshot: bool,
    bars: &'a [Bar],
}

/// One symbol's trades subscription.
#[derive(Debug)]
struct TradeSub {
    name: Arc<str>,
    locate: Locate,
    /// Every trade of the symbol up to this sequence has been sent.
    at: u64,
}

/// One symbol's bars subscription of one interval.
#[derive(Debug)]
struct BarSub {
    name: Arc<str>,
    locate: Locate,
    interval: Interval,
    /// The newest bar the client holds, as it was sent (`None`: none yet).
    last: Option<Bar>,
}

/// A client's trades and bars subscriptions (few: a scan finds one).
#[derive(Debug, Default)]
pub struct ChartSubs {
    trades: Vec<TradeSub>,
    bars: Vec<BarSub>,
    /// Most trades a client may fall behind the tape (`every_queue`).
    queue: usize,
}

/// Where a trades subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// With the newest `history` trades, then live.
    History(usize),
    /// After this sequence of the current session (a resume).
    Seq(u64),
    /// A resume point of another session: all it can get is a gap.
    Stale,
}

impl ChartSubs {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.trades.is_empty() && self.bars.is_empty()
    }

    /// Whether any bars are subscribed (the client wants the feed clock).
    pub fn has_bars(&self) -> bool {
        !self.bars.is_empty()
    }

    /// How many (each symbol's trades, each symbol and interval's bars).
    pub fn len(&self) -> usize {
        self.trades.len() + self.bars.len()
    }

    /// Whether anything of `name` is subscribed.
    pub fn contains(&self, name: &str) -> bool {
        self.trades.iter().any(|s| &*s.name == name) || self.bars.iter().any(|s| &*s.name == name)
    }

    /// Every symbol with a subscription (each once).
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        let all = self.trades.iter().map(|s| &s.name);
        for n in all.chain(self.bars.iter().map(|s| &s.name)) {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }

    /// Subscribes to `name`'s trades (listed at `locate`), replacing a
    /// subscription it had; its first frame: the history asked for, or the
    /// trades after `since`, and the position the stream continues from.
    /// `queue`: most trades it may fall behind; `until`: the exchange time
    /// it sees trades before ([`LIVE`], or a delayed user's cutoff).
    pub fn subscribe_trades(
        &mut self,
        name: &Arc<str>,
        (locate, since): (Locate, Since),
        queue: usize,
        table: &Table,
        until: u64,
    ) -> ChartFrame {
        self.queue = queue;
        // The sequence first: every trade up to it is on the tape read next.
        let applied = table.last_seq();
        let chart = table.chart();
        let (trades, newest, gap) = match since {
            Since::History(n) => {
                let (trades, newest) = chart.tape_tail(locate, n, until);
                (trades, newest, false)
            }
            Since::Seq(after) => {
                let read = chart.trades_after(locate, after, chart.limits().trades, until);
                let newest = read.trades.last().map_or(after, |t| t.seq);
                (read.trades, newest, read.gap)
            }
            Since::Stale => {
                let (trades, newest) = chart.tape_tail(locate, chart.limits().trades, until);
                (trades, newest, true)
            }
        };
        // Delayed: no further than the newest trade it may see.
        let at = if until == LIVE {
            applied.max(newest)
        } else {
            newest
        };
        self.trades.retain(|s| s.name != *name);
        self.trades.push(TradeSub {
            name: name.clone(),
            locate,
            at,
        });
        ChartFrame {
            symbol: name.clone(),
            session: table.session(),
            seq: at,
            snapshot: true,
            gap,
            items: Items::Trades(trades),
        }
    }

    /// Subscribes to `name`'s bars of `interval`, replacing a subscription
    /// it had; its first frame: the newest `history` bars. With none, the
    /// stream continues from the current bar's next change. `until` and
    /// `seq`: as of when ([`LIVE`], or a delayed user's cutoff) and the
    /// feed position then.
    pub fn subscribe_bars(
        &mut self,
        name: &Arc<str>,
        (locate, interval, history): (Locate, Interval, usize),
        table: &Table,
        (until, seq): (u64, u64),
    ) -> ChartFrame {
        let mut bars = table
            .chart()
            .bars(locate, interval, u64::MAX, history.max(1), until)
            .items;
        let last = bars.last().copied();
        if history == 0 {
            bars.clear();
        }
        self.bars
            .retain(|s| !(s.name == *name && s.interval == interval));
        self.bars.push(BarSub {
            name: name.clone(),
            locate,
            interval,
            last,
        });
        ChartFrame {
            symbol: name.clone(),
            session: table.session(),
            seq,
            snapshot: true,
            gap: false,
            items: Items::Bars(interval, bars),
        }
    }

    /// Ends `name`'s trades subscription; whether there was one.
    pub fn unsubscribe_trades(&mut self, name: &str) -> bool {
        let before = self.trades.len();
        self.trades.retain(|s| &*s.name != name);
        self.trades.len() != before
    }

    /// Ends `name`'s bars subscriptions of `interval` (every interval when
    /// `None`); whether there was one.
    pub fn unsubscribe_bars(&mut self, name: &str, interval: Option<Interval>) -> bool {
        let before = self.bars.len();
        self.bars
            .retain(|s| !(&*s.name == name && interval.is_none_or(|i| i == s.interval)));
        self.bars.len() != before
    }

    /// What is newer than each subscription holds, into `out`: every trade
    /// after its position, and the bars that closed or changed since its
    /// last. `Err` when a client fell too far behind (close it, 4008).
    /// `until` and `seq`: as in [`Self::subscribe_bars`]. A delayed stream
    /// whose next trades left the tape before it could see them (the tape
    /// keeps fewer trades than the delay spans) is not the client's fault:
    /// it goes on, its next frame saying `gap`.
    pub fn drain(
        &mut self,
        table: &Table,
        (until, seq): (u64, u64),
        out: &mut Vec<ChartFrame>,
    ) -> Result<(), String> {
        let chart = table.chart();
        let session = table.session();
        for sub in &mut self.trades {
            let applied = table.last_seq();
            let read = chart.trades_after(sub.locate, sub.at, self.queue, until);
            if read.gap && until == LIVE {
                return Err(format!(
                    "slow consumer: trades of {} after {} are no longer kept (setting trade_history); resume with since",
                    sub.name, sub.at
                ));
            }
            if read.more {
                return Err(format!(
                    "slow consumer: more than {} trades of {} waiting (setting every_queue); resume with since {}",
                    self.queue, sub.name, sub.at
                ));
            }
            let Some(newest) = read.trades.last() else {
                continue;
            };
            sub.at = match until {
                LIVE => applied.max(newest.seq),
                _ => newest.seq,
            };
            out.push(ChartFrame {
                symbol: sub.name.clone(),
                session,
                seq: sub.at,
                snapshot: false,
                gap: read.gap,
                items: Items::Trades(read.trades),
            });
        }
        for sub in &mut self.bars {
            let seq = match until {
                LIVE => table.last_seq(),
                _ => seq,
            };
            let from = sub.last.map_or(0, |b| b.t);
            let kept = sub.interval.kept(&chart.limits());
            let now = chart.bars_from(sub.locate, sub.interval, from, kept, until);
            let last = sub.last;
            let fresh: Vec<Bar> = now
                .into_iter()
                .filter(|b| last.is_none_or(|l| b.t > l.t || (b.t == l.t && *b != l)))
                .collect();
            let Some(newest) = fresh.last() else {
                continue;
            };
            sub.last = Some(*newest);
            out.push(ChartFrame {
                symbol: sub.name.clone(),
                session,
                seq,
                snapshot: false,
                gap: false,
                items: Items::Bars(sub.interval, fresh),
            });
        }
        Ok(())
    }

    /// A new feed session: sequences and bars start again; each
    /// subscription is found by its name (a ticker may be listed elsewhere
    /// now) and gets everything of the new session.
    pub fn resync(&mut self, table: &Table) {
        for sub in &mut self.trades {
            sub.at = 0;
            sub.locate = table.locate(&sub.name).unwrap_or(sub.locate);
        }
        for sub in &mut self.bars {
            sub.last = None;
            sub.locate = table.locate(&sub.name).unwrap_or(sub.locate);
        }
    }
}

/// `history` of a subscription: 0 up to `kept`, 0 when absent; more than
/// is kept is `bad_history`.
pub fn history_of(raw: Option<u64>, kept: usize, what: &str) -> Result<usize, ApiError> {
    let n = raw.unwrap_or(0);
    match usize::try_from(n) {
        Ok(n) if n <= kept => Ok(n),
        _ => Err(ApiError::new(
            ErrorCode::BadHistory,
            format!("history {n} is over the {kept} {what} this relay keeps per symbol"),
        )),
    }
}

/// The chart subscriptions a `/v1/stream` request names
/// (`?trades=A&bars=B&interval=1m&history=N&since=S`).
#[derive(Debug)]
pub struct ChartRequest {
    /// Symbols whose trades to stream, with where each is listed.
    pub trades: Vec<(Arc<str>, Locate)>,
    /// Symbols whose bars to stream.
    pub bars: Vec<(Arc<str>, Locate)>,
    /// The bars' interval.
    pub interval: Interval,
    /// Bars of history in the first frame.
    pub bar_history: usize,
    /// Where the trades start.
    pub since: Since,
}

/// The symbols of `raw`, each entitled on `channel` and listed.
fn listed(
    state: &AppState,
    identity: &Identity,
    channel: Channel,
    raw: Option<&str>,
) -> Result<Vec<(Arc<str>, Locate)>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let cap = identity.rights.symbol_cap(state.config.policy.max_symbols);
    let names = parse_symbols(Some(raw), cap)?.unwrap_or_default();
    if names.is_empty() || names.iter().any(|n| n == "*") {
        return Err(ApiError::new(
            ErrorCode::BadSymbol,
            format!("`{}` names symbols, not `*`", channel.as_str()),
        ));
    }
    entitled(identity, channel, names.iter().map(String::as_str))?;
    let locates = resolve(&state.table, &names)?;
    Ok(locates
        .into_iter()
        .filter_map(|l| state.table.info(l).map(|i| (i.symbol.clone(), l)))
        .collect())
}

/// Reads `trades`, `bars`, `interval`, `history` and `since` of a query:
/// `None` without `trades` and `bars`; else the subscriptions, or the error
/// a REST request for them would get.
pub fn requested_charts(
    state: &AppState,
    identity: &Identity,
    trades: Option<&str>,
    bars: Option<&str>,
    interval: Option<&str>,
    history: Option<&str>,
    since: Option<&str>,
) -> Result<Option<ChartRequest>, ApiError> {
    if trades.is_none() && bars.is_none() {
        return Ok(None);
    }
    let interval = interval_of(interval)?;
    let history = match history {
        None => None,
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
            let shown: String = raw.chars().take(20).collect();
            ApiError::new(
                ErrorCode::BadHistory,
                format!("history `{shown}` is not a whole number"),
            )
        })?),
    };
    let limits = state.table.chart().limits();
    let since = match (trades, since) {
        (None, _) => Since::History(0),
        (Some(_), None) => Since::History(history_of(history, limits.trades, "trades")?),
        (Some(_), Some(raw)) => since_of(raw, state.table.session().as_str())?,
    };
    let bar_history = match bars {
        None => 0,
        Some(_) => history_of(history, interval.kept(&limits), "bars")?,
    };
    Ok(Some(ChartRequest {
        trades: listed(state, identity, Channel::Trades, trades)?,
        bars: listed(state, identity, Channel::Bars, bars)?,
        interval,
        bar_history,
        since,
    }))
}

/// A trades `since`: a feed sequence of this session, or `SESSION:SEQ`
/// (another session's is [`Since::Stale`]).
pub fn since_of(raw: &str, session: &str) -> Result<Since, ApiError> {
    let bad = || {
        let shown: String = raw.chars().take(40).collect();
        ApiError::new(
            ErrorCode::BadRequest,
            format!("since `{shown}` is not a trade sequence (or SESSION:SEQ)"),
        )
    };
    match raw.rsplit_once(':') {
        Some((s, seq)) => {
            let seq = seq.parse().map_err(|_| bad())?;
            Ok(if s == session {
                Since::Seq(seq)
            } else {
                Since::Stale
            })
        }
        None => raw.parse().map(Since::Seq).map_err(|_| bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::Price;

    fn frame(items: Items) -> ChartFrame {
        ChartFrame {
            symbol: Arc::from("AAPL"),
            session: Session::new("S1"),
            seq: 7,
            snapshot: true,
            gap: false,
            items,
        }
    }

    #[test]
    fn frames_carry_the_protocol_shapes() {
        let trade = Trade {
            seq: 7,
            ts: 1,
            price: Price(1_891_300),
            size: 100,
        };
        let f = frame(Items::Trades(vec![trade]));
        let mut json = Vec::new();
        f.ws_into(&mut json, Format::Json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["type"], "trades");
        assert_eq!(v["trades"][0]["price"], "189.1300");
        assert_eq!(v["snapshot"], true);
        assert_eq!(v["session"], "S1");
        assert!(v.get("gap").is_none());
        let mut packed = Vec::new();
        f.ws_into(&mut packed, Format::Msgpack);
        let v: serde_json::Value = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(v["trades"][0]["price"], 1_891_300);
        let mut sse = Vec::new();
        frame(Items::Bars(Interval::M1, Vec::new())).sse_into(&mut sse);
        let text = String::from_utf8(sse).unwrap();
        assert!(text.starts_with("event: bars\ndata: {\"symbol\":\"AAPL\",\"interval\":\"1m\""));
    }

    #[test]
    fn since_is_a_sequence_of_this_session() {
        assert_eq!(since_of("42", "S1").unwrap(), Since::Seq(42));
        assert_eq!(since_of("S1:42", "S1").unwrap(), Since::Seq(42));
        assert_eq!(since_of("S0:42", "S1").unwrap(), Since::Stale);
        assert!(since_of("x", "S1").is_err());
        assert!(history_of(Some(5), 4, "trades").is_err());
        assert_eq!(history_of(None, 4, "trades").unwrap(), 0);
    }
}
