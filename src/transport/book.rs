//! Depth of book over REST: `GET /v1/book/{symbol}?depth=N` answers the
//! symbol's book to `depth` levels a side (1–50, default 10) as a `book`
//! object (docs/PROTOCOL.md, "Depth of book"), with `ETag` / 304 like
//! `/v1/snapshot`.
//!
//! The ETag is `"SESSION:SEQ:DEPTH:STAMP"`: the book's `seq`, the depth
//! asked for, and the book's change stamp (recovery can fill a book in
//! without moving its `seq`), so an unchanged book answers 304.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::snapshot::{etag_matches, resolve};
use crate::api::{ApiError, AppState, Door, ErrorCode, parse_symbols};
use crate::auth::Channel;
use crate::table::BookFrame;

/// Levels a side when `depth` is not given.
pub const DEFAULT_DEPTH: usize = 10;
/// Most levels a side a client may ask for.
pub const MAX_DEPTH: usize = 50;

/// Query of `/v1/book/{symbol}`.
#[derive(Debug, Deserialize)]
pub struct BookQuery {
    /// Levels a side, 1–50 (default 10).
    pub depth: Option<String>,
    /// Bearer token for clients that cannot set headers.
    pub token: Option<String>,
}

/// Reads `depth`: a whole number from 1 to 50, 10 when absent.
pub fn parse_depth(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_DEPTH);
    };
    match raw.trim().parse::<usize>() {
        Ok(d) if (1..=MAX_DEPTH).contains(&d) => Ok(d),
        _ => {
            let shown: String = raw.chars().take(20).collect();
            Err(ApiError::new(
                ErrorCode::BadDepth,
                format!("depth `{shown}` is not a whole number from 1 to {MAX_DEPTH}"),
            ))
        }
    }
}

/// `GET /v1/book/{symbol}[?depth=N]`.
pub async fn book(
    door: Door,
    State(state): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<BookQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let names = parse_symbols(Some(&symbol), 1)?.unwrap_or_default();
    let [name] = names.as_slice() else {
        return Err(ApiError::new(ErrorCode::BadSymbol, "one symbol, not empty"));
    };
    if name == "*" {
        return Err(ApiError::new(
            ErrorCode::BadSymbol,
            "a book is one symbol's: name it",
        ));
    }
    let depth = parse_depth(q.depth.as_deref())?;
    door.entitled(Channel::Book, [name.as_str()])?;
    let &[locate] = resolve(&state.table, &names)?.as_slice() else {
        return Err(ApiError::unknown_symbols(&names));
    };
    let table = &state.table;
    let (Some(info), Some(read)) = (table.info(locate), table.book(locate, depth)) else {
        return Err(ApiError::unknown_symbols(&names));
    };
    let etag = format!(
        "\"{}:{}:{}:{}\"",
        table.session(),
        read.seq,
        depth,
        read.stamp
    );
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if etag_matches(&headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), cache],
        )
            .into_response());
    }
    let body = BookFrame::snapshot(info.symbol.clone(), &read);
    let enc = door.encoding;
    Ok(door.delivered(
        (
            [
                (header::CONTENT_TYPE, enc.content_type()),
                (header::ETAG, etag_value),
                cache,
            ],
            enc.body(&body),
        )
            .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_one_to_fifty_ten_by_default() {
        assert_eq!(parse_depth(None).unwrap(), 10);
        assert_eq!(parse_depth(Some("1")).unwrap(), 1);
        assert_eq!(parse_depth(Some("50")).unwrap(), 50);
        for bad in ["0", "51", "-1", "ten", "", "1.5", "99999999999999999999999"] {
            let e = parse_depth(Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadDepth, "{bad}");
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
