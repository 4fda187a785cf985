//! What every transport shares: the state handlers reach ([`AppState`]),
//! errors ([`ApiError`], [`ErrorCode`]), the door every client route passes
//! ([`Door`]: `Origin`, bearer token, content negotiation) and symbol-list
//! parsing.
//!
//! The transports depend on this module and `http` routes to them; nothing
//! here knows a route or a transport (docs/ARCHITECTURE.md, "Modules").

pub mod admin;
mod door;
mod error;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{ConnSlots, Limit};
use crate::config::Config;
use crate::fanout::Hub;
use crate::feed::FeedState;
use crate::metrics::Metrics;
use crate::table::Table;
pub use door::{
    Door, Refused, bearer, class_counters, class_labels, entitled, identify, same_secret, usage_of,
};
pub use error::{ApiError, ErrorCode, close};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

/// The shared parts behind [`AppState`].
pub struct Shared {
    /// The symbol table.
    pub table: Arc<Table>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Validated settings.
    pub config: Config,
    /// Feed status and session.
    pub feed: watch::Receiver<FeedState>,
    /// The fan-out hub.
    pub hub: Arc<Hub>,
    /// Streaming connection counts.
    pub conns: Arc<ConnSlots>,
    /// Fires at shutdown: streams send their notice and end.
    pub cancel: CancellationToken,
    /// Upgraded WebSocket tasks, which the HTTP server does not track.
    pub tracker: TaskTracker,
    /// Set on SIGTERM: `/readyz` answers 503 while clients are still served.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Users' token keys, when configured; replaced on SIGHUP.
    pub verifier: arc_swap::ArcSwapOption<crate::auth::Verifier>,
    /// Usage per user and day, when `usage_db` is set.
    pub usage: Option<crate::usage::Usage>,
    /// Every per-user token's connections, by `sub`.
    pub users: Arc<crate::admission::Users>,
    /// The identity of a client that needs no per-user token.
    pub anonymous: Arc<crate::auth::Identity>,
}

/// The `token` query parameter (for clients that cannot set headers).
#[derive(Debug, Default, serde::Deserialize)]
pub struct AuthQuery {
    /// Bearer token.
    pub token: Option<String>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Counts and logs a request or operation refused by `limit` (a setting name).
pub fn refused(state: &AppState, limit: Limit) {
    state.metrics.stream.refused(limit);
    tracing::info!(limit = limit.as_str(), "client refused by a limit");
}

/// Response encoding the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json` (default).
    Json,
    /// `application/msgpack`.
    Msgpack,
}

impl Encoding {
    /// From the `Accept` header.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let wants = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/msgpack") || v.contains("application/x-msgpack"));
        if wants {
            Encoding::Msgpack
        } else {
            Encoding::Json
        }
    }

    /// Encodes `value` in this encoding (MessagePack as maps, like the JSON).
    pub fn body<T: Serialize>(self, value: &T) -> Vec<u8> {
        match self {
            Encoding::Json => serde_json::to_vec(value).unwrap_or_default(),
            Encoding::Msgpack => rmp_serde::to_vec_named(value).unwrap_or_default(),
        }
    }

    /// The `Content-Type` of this encoding.
    pub fn content_type(self) -> HeaderValue {
        match self {
            Encoding::Json => HeaderValue::from_static("application/json"),
            Encoding::Msgpack => HeaderValue::from_static("application/msgpack"),
        }
    }
}

/// Checks a symbol list from a WebSocket frame like [`parse_symbols`].
pub fn parse_symbol_list(list: &[String], max: usize) -> Result<Vec<String>, ApiError> {
    if list.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooManySymbols,
            format!("at most {max} symbols per request (setting max_symbols)"),
        ));
    }
    Ok(parse_symbols(Some(&list.join(",")), max)?.unwrap_or_default())
}

/// Splits `?symbols=A,B` into distinct tickers (upper-cased), checking the
/// syntax and the per-request limit. `None` when the parameter is absent.
pub fn parse_symbols(raw: Option<&str>, max: usize) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut out: Vec<String> = Vec::new();
    for s in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let valid = s.len() <= 16
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'/' | b'_' | b'^' | b'*')
            });
        if !valid {
            let shown: String = s.chars().take(20).collect();
            return Err(ApiError::new(
                ErrorCode::BadSymbol,
                format!("`{shown}` is not a ticker"),
            ));
        }
        let s = s.to_ascii_uppercase();
        if !out.contains(&s) {
            out.push(s);
        }
        if out.len() > max {
            return Err(ApiError::new(
                ErrorCode::TooManySymbols,
                format!("at most {max} symbols per request (setting max_symbols)"),
            ));
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_split_checked_and_limited() {
        assert_eq!(parse_symbols(None, 5).unwrap(), None);
        assert_eq!(
            parse_symbols(Some("aapl, MSFT,,AAPL"), 5).unwrap(),
            Some(vec!["AAPL".into(), "MSFT".into()])
        );
        assert_eq!(
            parse_symbols(Some("A,B,C"), 2).unwrap_err().code,
            ErrorCode::TooManySymbols
        );
        assert_eq!(
            parse_symbols(Some("<script>"), 2).unwrap_err().code,
            ErrorCode::BadSymbol
        );
        assert_eq!(
            parse_symbols(Some("ABCDEFGHIJKLMNOPQ"), 2)
                .unwrap_err()
                .code,
            ErrorCode::BadSymbol
        );
    }
}
