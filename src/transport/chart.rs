//! The chart and the tape over REST: `GET /v1/bars/{symbol}` and
//! `GET /v1/trades/{symbol}`, read from the table's [`Chart`].
//!
//! Paging goes back in time: `before` (a bar's start, ns) and `before_seq`
//! (a trade's feed sequence) bound the answer from above, exclusive, and
//! `limit` takes the newest that many below it, oldest first. The ETag
//! moves with the symbol's history (the trades taken for it this session),
//! with the bars in the answer that are still open, and with `complete`, so
//! an unchanged chart answers 304 while other symbols trade.
//!
//! A delayed user reads the chart as of its cutoff (`table::chart`'s
//! `until`), and is told the delayed view's `seq` there; its ETag is a
//! digest of the answer's bars or trades, so it moves only with what the
//! user may see.

use std::hash::{DefaultHasher, Hash, Hasher};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, AppState, Door, Encoding, ErrorCode, parse_symbols};
use crate::auth::Channel;
use crate::table::Table;
use crate::table::chart::{Bar, Interval, LIVE, Trade};
use crate::transport::snapshot::{resolve, tagged};
use crate::wire::Locate;

/// The answer of `/v1/bars/{symbol}`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BarsBody {
    /// Ticker.
    pub symbol: String,
    /// `1s`, `1m`, `5m`, `15m` or `1h`.
    pub interval: String,
    /// Feed session.
    pub session: String,
    /// Feed sequence applied when this was built.
    pub seq: u64,
    /// Whether this relay's history holds every trade of the session.
    pub complete: bool,
    /// Oldest first.
    pub bars: Vec<Bar>,
}

/// The answer of `/v1/trades/{symbol}`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TradesBody {
    /// Ticker.
    pub symbol: String,
    /// Feed session.
    pub session: String,
    /// Feed sequence applied when this was built.
    pub seq: u64,
    /// Whether this relay's history holds every trade of the session.
    pub complete: bool,
    /// Oldest first.
    pub trades: Vec<Trade>,
}

/// Query of `/v1/bars/{symbol}` and `/v1/trades/{symbol}`.
#[derive(Debug, Deserialize)]
pub struct ChartQuery {
    /// Bars: `1s`, `1m` (the default), `5m`, `15m` or `1h`.
    pub interval: Option<String>,
    /// How many bars or trades, at most the kept length (all of them when absent).
    pub limit: Option<String>,
    /// Bars: only those starting before this time, ns since the Unix epoch.
    pub before: Option<String>,
    /// Trades: only those with a feed sequence below this.
    pub before_seq: Option<String>,
    /// Bearer token for clients that cannot set headers.
    pub token: Option<String>,
}

/// `GET /v1/bars/{symbol}?interval=…&limit=N&before=T`.
pub async fn bars(
    door: Door,
    State(state): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<ChartQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let interval = interval_of(q.interval.as_deref())?;
    let table = &state.table;
    let setting = match interval {
        Interval::S1 => "bars_1s",
        _ => "bars_1m",
    };
    let what = format!("{} bars", interval.as_str());
    let limit = limit(
        q.limit.as_deref(),
        interval.kept(&table.chart().limits()),
        &what,
        setting,
    )?;
    let before = number(
        q.before.as_deref(),
        "before",
        "a time in ns since the Unix epoch",
    )?;
    let (locate, symbol) = one_symbol(table, &door, Channel::Bars, &symbol)?;
    // The sequence first: the history read after it is at least as new.
    let (until, seq) = as_of(&state, &door);
    let complete = table.chart().complete();
    let page = table.chart().bars(locate, interval, before, limit, until);
    let open = page.items.iter().filter(|b| !b.closed).count();
    let session = table.session().to_string();
    let etag = match until {
        LIVE => format!(
            "\"{session}:{}:{open}:{}\"",
            page.version,
            u8::from(complete)
        ),
        _ => delayed_tag(&session, &page.items, complete),
    };
    let body = BarsBody {
        symbol,
        interval: interval.as_str().to_owned(),
        session,
        seq,
        complete,
        bars: page.items,
    };
    Ok(door.delivered(respond(&headers, &etag, door.encoding, &body)))
}

/// `GET /v1/trades/{symbol}?limit=N&before_seq=S`.
pub async fn trades(
    door: Door,
    State(state): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<ChartQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let table = &state.table;
    let limit = limit(
        q.limit.as_deref(),
        table.chart().limits().trades,
        "trades",
        "trade_history",
    )?;
    let before = number(q.before_seq.as_deref(), "before_seq", "a feed sequence")?;
    let (locate, symbol) = one_symbol(table, &door, Channel::Trades, &symbol)?;
    let (until, seq) = as_of(&state, &door);
    let complete = table.chart().complete();
    let page = table.chart().trades(locate, before, limit, until);
    let session = table.session().to_string();
    let etag = match until {
        LIVE => format!("\"{session}:{}:{}\"", page.version, u8::from(complete)),
        _ => delayed_tag(&session, &page.items, complete),
    };
    let body = TradesBody {
        symbol,
        session,
        seq,
        complete,
        trades: page.items,
    };
    Ok(door.delivered(respond(&headers, &etag, door.encoding, &body)))
}

/// What the door's user reads the chart as of, and the feed position it
/// is told: live, the table's applied sequence; delayed, its cutoff now and
/// the delayed view's sequence there.
fn as_of(state: &AppState, door: &Door) -> (u64, u64) {
    let at = state.hub.at_now(door.identity.rights.delay_ms);
    (state.hub.until_at(at), state.hub.seq_at(at))
}

/// A delayed answer's ETag: a digest of what it holds, so it reveals
/// nothing the answer does not.
fn delayed_tag<T: Hash>(session: &str, items: &[T], complete: bool) -> String {
    let mut h = DefaultHasher::new();
    items.hash(&mut h);
    format!("\"{session}:d{:016x}:{}\"", h.finish(), u8::from(complete))
}

/// `interval` of a bars request: `1s`, `1m` (when absent), `5m`, `15m` or
/// `1h`; anything else is `bad_interval`.
pub fn interval_of(raw: Option<&str>) -> Result<Interval, ApiError> {
    match raw {
        None => Ok(Interval::M1),
        Some(s) => Interval::parse(s).ok_or_else(|| {
            let shown: String = s.chars().take(20).collect();
            ApiError::new(
                ErrorCode::BadInterval,
                format!("`{shown}` is not an interval: 1s, 1m, 5m, 15m or 1h"),
            )
        }),
    }
}

/// The one symbol of the path, entitled on `channel` and listed.
fn one_symbol(
    table: &Table,
    door: &Door,
    channel: Channel,
    raw: &str,
) -> Result<(Locate, String), ApiError> {
    let names = parse_symbols(Some(raw), 1)?.unwrap_or_default();
    let Some(name) = names.first() else {
        return Err(ApiError::new(ErrorCode::BadSymbol, "empty symbol"));
    };
    door.entitled(channel, [name.as_str()])?;
    let locate = resolve(table, &names)?[0];
    Ok((locate, name.clone()))
}

/// `limit`: 1 up to what is kept (setting `setting`); all of it when absent.
fn limit(raw: Option<&str>, kept: usize, what: &str, setting: &str) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(kept) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=kept).contains(&n) => Ok(n),
        Ok(n) => Err(ApiError::new(
            ErrorCode::BadHistory,
            format!(
                "limit {n} is outside 1..={kept}: this relay keeps {kept} {what} per symbol (setting {setting})"
            ),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::BadHistory,
            format!("limit `{}` is not a whole number", shown(raw)),
        )),
    }
}

/// An optional bound (`before`, `before_seq`); no bound when absent.
fn number(raw: Option<&str>, name: &str, what: &str) -> Result<u64, ApiError> {
    match raw {
        None => Ok(u64::MAX),
        Some(raw) => raw.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("{name} `{}` is not {what}", shown(raw)),
            )
        }),
    }
}

fn shown(raw: &str) -> String {
    raw.chars().take(24).collect()
}

fn respond<T: Serialize>(headers: &HeaderMap, etag: &str, enc: Encoding, body: &T) -> Response {
    tagged(headers, etag, enc, || enc.body(body))
}
