//! The door every client route passes: one extractor, [`Door`], that checks
//! the `Origin` against `allowed_origins`, the bearer token (header, or
//! `?token=` for EventSource) — the shared `token`, or a user's JSON Web
//! Token, verified and compiled into the [`Identity`] whose entitlement
//! every handler then asks — and reads the encoding the client accepts.
//!
//! Handlers take a `Door` (WebSocket: `Result<Door, Refused>`, so a bad
//! token is a close frame a browser can read rather than an HTTP error) and
//! never check these themselves: what a client may do is decided here, in
//! one place, for every transport.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, AuthQuery, Encoding, ErrorCode, refused};
use crate::admission::Limit;
use crate::auth::{Channel, Identity, VerifyError};
use crate::metrics::{ClassCounters, ClassLabels, NO_CLASS};

/// A request let in: its origin is allowed and its token (if one is
/// configured) is right.
#[derive(Clone, Debug)]
pub struct Door {
    /// What the client accepts (`Accept`): JSON unless it asks for MessagePack.
    pub encoding: Encoding,
    /// Who it is and what it may see.
    pub identity: Arc<Identity>,
    /// The user's usage counters (per-user tokens, with `usage_db`).
    pub usage: Option<Arc<crate::usage::UserUsage>>,
    /// The metrics of the user's class and delay.
    pub class: ClassCounters,
}

impl Door {
    /// Counts an answer in the metrics by class and in the user's usage:
    /// one message, its body's bytes.
    pub fn delivered(&self, response: Response) -> Response {
        let bytes = axum::body::HttpBody::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        self.class.delivered(1, bytes);
        if let Some(u) = &self.usage {
            u.delivered(1, bytes);
        }
        response
    }

    /// Refuses what the user may not see: the channel, or any of `symbols`
    /// (named, so the client can fix its request).
    pub fn entitled<'a>(
        &self,
        channel: Channel,
        symbols: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        entitled(&self.identity, channel, symbols)
    }
}

/// [`Door::entitled`] for an identity held by an open connection.
pub fn entitled<'a>(
    identity: &Identity,
    channel: Channel,
    symbols: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let rights = &identity.rights;
    // Quotes, trades and bars are served delayed (the delayed view, the
    // chart as of the cutoff); books are not: a delayed user gets no book
    // rather than a real-time one.
    if rights.delay_ms > 0 && channel == Channel::Book {
        return Err(ApiError::new(
            ErrorCode::NotEntitled,
            "the `book` channel is not served delayed: your entitlement is delayed data",
        ));
    }
    if !rights.channel(channel) {
        return Err(ApiError::new(
            ErrorCode::NotEntitled,
            format!(
                "the `{}` channel is not in your entitlements",
                channel.as_str()
            ),
        ));
    }
    let denied: Vec<&str> = symbols.into_iter().filter(|s| !rights.symbol(s)).collect();
    if denied.is_empty() {
        Ok(())
    } else {
        let shown: Vec<&str> = denied.iter().take(20).copied().collect();
        Err(ApiError::new(
            ErrorCode::NotEntitled,
            format!("not in your entitlements: {}", shown.join(",")),
        ))
    }
}

/// Why a request was not let in.
#[derive(Debug)]
pub enum Refused {
    /// `Origin` not in `allowed_origins` (403 `origin_not_allowed`).
    Origin(ApiError),
    /// Missing or wrong bearer token (401 `unauthorized`).
    Token(ApiError),
    /// A query that does not parse (400 `bad_request`), e.g. two `token`s.
    Query(ApiError),
}

impl Refused {
    /// The error, whichever check refused.
    pub fn error(self) -> ApiError {
        match self {
            Refused::Origin(e) | Refused::Token(e) | Refused::Query(e) => e,
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
        let query = Query::<AuthQuery>::try_from_uri(&parts.uri)
            .map(|Query(q)| q)
            .map_err(|e| Refused::Query(ApiError::new(ErrorCode::BadRequest, e.body_text())))?;
        let identity = identify(state, bearer(&parts.headers).or(query.token.as_deref()))
            .map_err(Refused::Token)?;
        let usage = usage_of(state, &identity);
        if let Some(u) = &usage {
            u.request();
        }
        let class = class_counters(state, &identity);
        Ok(Door {
            encoding: Encoding::from_headers(&parts.headers),
            identity,
            usage,
            class,
        })
    }
}

/// The `Authorization: Bearer` token, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether `given` is `expected`, compared without an early exit so timing
/// does not reveal a prefix.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Who presents `token`: anyone when no token is configured (or, in the
/// demo, when none is presented); the shared `token`'s holder; or the user
/// of a verified JSON Web Token.
pub fn identify(state: &AppState, token: Option<&str>) -> Result<Arc<Identity>, ApiError> {
    let access = &state.config.access;
    if !access.required() {
        return Ok(state.anonymous.clone());
    }
    let refuse = |code, message: String| {
        refused(state, Limit::Token);
        Err(ApiError::new(code, message))
    };
    let Some(token) = token else {
        if access.anonymous {
            return Ok(state.anonymous.clone());
        }
        return refuse(ErrorCode::Unauthorized, "missing bearer token".into());
    };
    if access
        .token
        .as_deref()
        .is_some_and(|t| same_secret(token, t))
    {
        return Ok(state.anonymous.clone());
    }
    let verifier = state.verifier.load();
    let Some(verifier) = verifier.as_deref() else {
        return refuse(ErrorCode::Unauthorized, "wrong bearer token".into());
    };
    match verifier.verify(token) {
        Ok(identity) => {
            served_delay(state, &identity)?;
            Ok(Arc::new(identity))
        }
        Err(VerifyError::Expired) => {
            refuse(ErrorCode::TokenExpired, "the token has expired".into())
        }
        Err(VerifyError::Bad(why)) => refuse(ErrorCode::BadToken, format!("token refused: {why}")),
    }
}

/// A delayed user is served only from the delayed view, and only for a
/// delay it keeps (`max_delay_ms`): anything else would be fresher data
/// than the user may see, so it is refused (403 `not_entitled`).
fn served_delay(state: &AppState, identity: &Identity) -> Result<(), ApiError> {
    let delay = identity.rights.delay_ms;
    if delay == 0 {
        return Ok(());
    }
    match state.hub.delayed() {
        Some(view) if delay <= view.max_delay_ms() => Ok(()),
        Some(view) => Err(ApiError::new(
            ErrorCode::NotEntitled,
            format!(
                "a delay of {delay} ms is longer than this relay keeps ({} ms, setting max_delay_ms)",
                view.max_delay_ms()
            ),
        )),
        None => Err(ApiError::new(
            ErrorCode::NotEntitled,
            "this relay serves no delayed data (setting max_delay_ms is 0)",
        )),
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

/// The usage counters of `identity`'s user, when usage is kept and the
/// client has a per-user token (a lock and a lookup: once per connection
/// or request, never per message).
pub fn usage_of(state: &AppState, identity: &Identity) -> Option<Arc<crate::usage::UserUsage>> {
    let usage = state.usage.as_ref()?;
    let sub = identity.sub.as_deref()?;
    let class = match identity.rights.class {
        crate::auth::Class::Pro => crate::usage::Class::Pro,
        crate::auth::Class::Nonpro => crate::usage::Class::Nonpro,
    };
    Some(usage.user(sub, class, identity.rights.delay_ms > 0))
}

/// The class and delay `identity` is counted under in the metrics: its
/// token's `class` and `delay_ms`, or `none` without a per-user token.
pub fn class_labels(identity: &Identity) -> ClassLabels {
    if identity.sub.is_none() {
        return ClassLabels::new(NO_CLASS, false);
    }
    ClassLabels::new(identity.rights.class.as_str(), identity.rights.delay_ms > 0)
}

/// The metrics of `identity`'s class and delay.
pub fn class_counters(state: &AppState, identity: &Identity) -> ClassCounters {
    state.metrics.users.counters(class_labels(identity))
}
