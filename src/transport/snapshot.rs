//! Short polling: `GET /v1/snapshot` and the symbol directory.
//!
//! The ETag is `"SESSION:SEQ"`, SEQ being the newest `seq` among the requested
//! symbols, so a watchlist that did not change answers 304 even while other
//! symbols tick: an unchanged poll costs a table scan of the watchlist and a
//! few bytes on the wire.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, AppState, Door, Encoding, ErrorCode, parse_symbols};
use crate::auth::{Channel, Identity};
use crate::fanout::{At, Hub};
use crate::table::{Quote, SymbolInfo, Table};
use crate::wire::Locate;

/// The envelope of a snapshot, a poll answer and an SSE `snapshot` event.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotBody {
    /// Feed sequence applied when this was built.
    pub seq: u64,
    /// Feed session.
    pub session: String,
    /// The quotes.
    pub quotes: Vec<Quote>,
}

#[derive(Serialize)]
struct Directory<'a> {
    symbols: &'a [std::sync::Arc<SymbolInfo>],
}

/// `GET /v1/symbols`: the symbol directory, in locate order.
pub async fn symbols(door: Door, State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut dir = state.table.directory();
    // A user sees the directory of what it may see.
    let rights = &door.identity.rights;
    if !rights.all_symbols() {
        dir.retain(|i| rights.symbol(&i.symbol));
    }
    let enc = door.encoding;
    Ok((
        [(header::CONTENT_TYPE, enc.content_type())],
        enc.body(&Directory { symbols: &dir }),
    )
        .into_response())
}

/// Query of `/v1/snapshot`.
#[derive(Debug, Deserialize)]
pub struct SnapshotQuery {
    /// Comma-separated tickers; all symbols when absent.
    pub symbols: Option<String>,
    /// Bearer token for clients that cannot set headers.
    pub token: Option<String>,
}

/// `GET /v1/snapshot[?symbols=A,B]`.
pub async fn snapshot(
    door: Door,
    State(state): State<AppState>,
    Query(q): Query<SnapshotQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let locates = requested(&state, &door, q.symbols.as_deref())?;
    let at = state.hub.at_now(door.identity.rights.delay_ms);
    Ok(door.delivered(respond(&state.hub, at, &locates, &headers, door.encoding)))
}

/// `GET /v1/snapshot/{symbol}`.
pub async fn snapshot_one(
    door: Door,
    State(state): State<AppState>,
    Path(symbol): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let names = parse_symbols(Some(&symbol), 1)?.unwrap_or_default();
    if names.is_empty() {
        return Err(ApiError::new(ErrorCode::BadSymbol, "empty symbol"));
    }
    door.entitled(Channel::Quotes, names.iter().map(String::as_str))?;
    let locates = resolve(&state.table, &names)?;
    let at = state.hub.at_now(door.identity.rights.delay_ms);
    Ok(door.delivered(respond(&state.hub, at, &locates, &headers, door.encoding)))
}

/// The locates a snapshot asks for (every symbol the user may see when
/// none is named), each one checked against the user's entitlement.
fn requested(
    state: &AppState,
    door: &Door,
    symbols: Option<&str>,
) -> Result<Vec<Locate>, ApiError> {
    let identity = &door.identity;
    door.entitled(Channel::Quotes, [])?;
    let cap = identity.rights.symbol_cap(state.config.policy.max_symbols);
    match parse_symbols(symbols, cap)? {
        Some(names) if !names.iter().any(|n| n == "*") => {
            door.entitled(Channel::Quotes, names.iter().map(String::as_str))?;
            resolve(&state.table, &names)
        }
        _ => Ok(allowed_locates(&state.table, identity).unwrap_or_else(|| state.table.locates())),
    }
}

/// Every symbol `identity` may see: `None` (the wildcard) when that is
/// all of them, else the listed symbols its claims allow, now.
pub fn allowed_locates(table: &Table, identity: &Identity) -> Option<Vec<Locate>> {
    let rights = &identity.rights;
    if rights.all_symbols() {
        return None;
    }
    Some(
        table
            .locates()
            .into_iter()
            .filter(|&l| table.info(l).is_some_and(|i| rights.symbol(&i.symbol)))
            .collect(),
    )
}

/// Maps tickers to locate codes; any unknown one is a 404 naming them all.
pub fn resolve(table: &Table, names: &[String]) -> Result<Vec<Locate>, ApiError> {
    if table.symbol_count() == 0 {
        // No directory yet (just started, or a new session): the symbols may
        // well exist a moment from now, so this is "retry", not "unknown".
        return Err(ApiError::not_ready());
    }
    let mut unknown = Vec::new();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        match table.locate(n) {
            Some(l) => out.push(l),
            None => unknown.push(n.clone()),
        }
    }
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::unknown_symbols(&unknown))
    }
}

/// The quotes of `locates` at `at` (now, or a delayed user's cutoff), with
/// the envelope's `seq` and session.
pub fn build(hub: &Hub, at: At, locates: &[Locate]) -> SnapshotBody {
    // Read the sequence first: every quote read after it is at least as new,
    // so the envelope never promises more than it holds.
    let seq = hub.seq_at(at);
    let session = hub.table().session().to_string();
    let quotes = locates
        .iter()
        .filter_map(|&l| hub.quote_at(l, at))
        .collect();
    SnapshotBody {
        seq,
        session,
        quotes,
    }
}

/// Whether `If-None-Match` names `etag` (or `*`); a `W/` prefix is accepted.
pub fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// A REST answer behind `etag`: 304 when the client holds it already, else
/// the body `body` encodes (built only then), both `Cache-Control: no-cache`.
pub fn tagged(
    headers: &HeaderMap,
    etag: &str,
    enc: Encoding,
    body: impl FnOnce() -> Vec<u8>,
) -> Response {
    let etag_value = HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if etag_matches(headers, etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), cache],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, enc.content_type()),
            (header::ETAG, etag_value),
            cache,
        ],
        body(),
    )
        .into_response()
}

fn respond(hub: &Hub, at: At, locates: &[Locate], headers: &HeaderMap, enc: Encoding) -> Response {
    let table = hub.table();
    let newest = locates
        .iter()
        .map(|&l| hub.seq_of_at(l, at))
        .max()
        .unwrap_or(0);
    // A recovered half can change a symbol without moving its `seq`: once a
    // session has had a recovery, its generation joins the tag, so every
    // client refetches when one begins and when it completes.
    let etag = match table.recovery_generation() {
        0 => format!("\"{}:{}\"", table.session(), newest),
        g => format!("\"{}:{}:r{}\"", table.session(), newest, g),
    };
    tagged(headers, &etag, enc, || enc.body(&build(hub, at, locates)))
}
