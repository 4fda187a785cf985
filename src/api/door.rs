//! The door every client route passes: one extractor, [`Door`], that checks
//! the `Origin` against `allowed_origins`, the bearer token (header, or
//! `?token=` for EventSource), and reads the encoding the client accepts.
//!
//! Handlers take a `Door` (WebSocket: `Result<Door, Refused>`, so a bad
//! token is a close frame a browser can read rather than an HTTP error) and
//! never check these themselves: what a client may do is decided here, in
//! one place, for every transport.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, AuthQuery, Encoding, ErrorCode, refused};
use crate::admission::Limit;

/// A request let in: its origin is allowed and its token (if one is
/// configured) is right.
#[derive(Clone, Copy, Debug)]
pub struct Door {
    /// What the client accepts (`Accept`): JSON unless it asks for MessagePack.
    pub encoding: Encoding,
}

/// Why a request was not let in.
#[derive(Debug)]
pub enum Refused {
    /// `Origin` not in `allowed_origins` (403 `origin_not_allowed`).
    Origin(ApiError),
    /// Missing or wrong bearer token (401 `unauthorized`).
    Token(ApiError),
}

impl Refused {
    /// The error, whichever check refused.
    pub fn error(self) -> ApiError {
        match self {
            Refused::Origin(e) | Refused::Token(e) => e,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        self.error().into_response()
    }
}

impl FromRequestParts<AppState> for Door {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refused> {
        check_origin(state, &parts.headers).map_err(Refused::Origin)?;
        // A query that does not parse has no token; the handler's own query
        // extractor reports what is wrong with it after the door.
        let query = Query::<AuthQuery>::try_from_uri(&parts.uri)
            .map(|Query(q)| q)
            .unwrap_or_default();
        check_token(state, &parts.headers, query.token.as_deref()).map_err(Refused::Token)?;
        Ok(Door {
            encoding: Encoding::from_headers(&parts.headers),
        })
    }
}

/// Checks the bearer token, when one is configured.
fn check_token(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = &state.config.access.token else {
        return Ok(());
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = header.or(query);
    // Compare without an early exit, so timing does not reveal a prefix.
    let ok = given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        refused(state, Limit::Token);
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing or wrong bearer token",
        ))
    }
}

/// Checks the `Origin` against the allow-list, when one is set.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let allowed = &state.config.access.allowed_origins;
    if allowed.is_empty() {
        return Ok(());
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // Non-browser clients send no Origin, and browsers send none on a
        // same-origin GET; cross-site use needs a browser, which sends it.
        None => Ok(()),
        Some(o) if allowed.iter().any(|a| a == o) => Ok(()),
        Some(o) => {
            refused(state, Limit::AllowedOrigins);
            Err(ApiError::new(
                ErrorCode::OriginNotAllowed,
                format!("origin {o} is not in allowed_origins"),
            ))
        }
    }
}
