//! Every error a client can be told, in one table: its stable code, the
//! HTTP status that answers it, the WebSocket close code that carries it
//! when it ends a connection, and the SSE event that carries it on an open
//! stream. docs/PROTOCOL.md ("Errors", "Close codes") and the README list
//! the same; the tests below fail when they drift apart.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// WebSocket close codes (docs/PROTOCOL.md, "Close codes").
pub mod close {
    /// Bad or missing token.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Queue overflow or write timeout.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// A limit was exceeded.
    pub const LIMIT_EXCEEDED: u16 = 4009;
    /// No pong (or anything) heard within the idle timeout.
    pub const NO_PONG: u16 = 4010;
    /// Server shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Client frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// A client frame that breaks the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// A text message or close reason that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Closed by an operator (`/v1/admin/disconnect`).
    pub const DISCONNECTED: u16 = 4003;

    /// Every close code the relay sends (and, in the closing handshake,
    /// the client's own code echoed back).
    pub const ALL: [u16; 9] = [
        UNAUTHORIZED,
        DISCONNECTED,
        SLOW_CONSUMER,
        LIMIT_EXCEEDED,
        NO_PONG,
        GOING_AWAY,
        TOO_BIG,
        PROTOCOL,
        INVALID_DATA,
    ];
}

macro_rules! error_codes {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $code:literal, status $status:expr, close $close:expr, sse $sse:expr;
    )*) => {
        /// A stable, machine-readable error code (docs/PROTOCOL.md, "Errors").
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as clients see it, e.g. `unknown_symbol`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status that answers it; `None` for errors only sent
            /// on an open WebSocket or SSE stream.
            pub fn status(self) -> Option<StatusCode> {
                let status: Option<u16> = match self { $(ErrorCode::$variant => $status,)* };
                status.and_then(|s| StatusCode::from_u16(s).ok())
            }

            /// The WebSocket close code it ends a connection with, if it does
            /// (otherwise a WebSocket gets an `error` frame and stays open).
            pub const fn close_code(self) -> Option<u16> {
                match self { $(ErrorCode::$variant => $close,)* }
            }

            /// The SSE event that carries it on an open stream, if any
            /// (otherwise an SSE request is answered with the HTTP status).
            pub const fn sse_event(self) -> Option<&'static str> {
                match self { $(ErrorCode::$variant => $sse,)* }
            }
        }
    };
}

error_codes! {
    /// A malformed request or client frame, an unknown `mode`, a bad `max_hz`.
    BadRequest = "bad_request", status Some(400), close None, sse None;
    /// A symbol that cannot be one (empty, too long, bad characters).
    BadSymbol = "bad_symbol", status Some(400), close None, sse None;
    /// More than `max_symbols`.
    TooManySymbols = "too_many_symbols", status Some(400), close None, sse None;
    /// No `symbols` while `allow_wildcard` is off.
    MissingSymbols = "missing_symbols", status Some(400), close None, sse None;
    /// `since` / `Last-Event-ID` is not `SESSION:SEQ`.
    BadSince = "bad_since", status Some(400), close None, sse None;
    /// `timeout_ms` is not a whole number of milliseconds.
    BadTimeout = "bad_timeout", status Some(400), close None, sse None;
    /// `batch_ms` is not between 0 and 1000.
    BadBatchMs = "bad_batch_ms", status Some(400), close None, sse None;
    /// An unknown bar `interval`.
    BadInterval = "bad_interval", status Some(400), close None, sse None;
    /// A `limit` (or `history`) outside 1 and the kept length.
    BadHistory = "bad_history", status Some(400), close None, sse None;
    /// `depth` is not a whole number from 1 to 50.
    BadDepth = "bad_depth", status Some(400), close None, sse None;
    /// A WebSocket upgrade without a version-13 key.
    BadUpgrade = "bad_upgrade", status Some(400), close None, sse None;
    /// A WebSocket upgrade on a connection that cannot be taken over.
    NotUpgradable = "not_upgradable", status Some(400), close None, sse None;
    /// WebSocket: a `*` subscription while `allow_wildcard` is off.
    WildcardNotAllowed = "wildcard_not_allowed", status None, close None, sse None;
    /// WebSocket: more than `ops_per_second` subscribe/unsubscribe ops.
    RateLimited = "rate_limited", status None, close None, sse None;
    /// Missing or wrong bearer token.
    Unauthorized = "unauthorized", status Some(401), close Some(close::UNAUTHORIZED), sse None;
    /// A user's token that fails verification: signature, `alg`, missing
    /// `exp`, `iss`, `aud`, `nbf`, malformed claims.
    BadToken = "bad_token", status Some(401), close Some(close::UNAUTHORIZED), sse None;
    /// A user's token whose `exp` has passed (on an open stream: at `exp`).
    TokenExpired = "token_expired", status Some(401), close Some(close::UNAUTHORIZED), sse Some("error");
    /// Refused by the framework for lack of rights.
    Forbidden = "forbidden", status Some(403), close None, sse None;
    /// A request from an Origin not on `allowed_origins`.
    OriginNotAllowed = "origin_not_allowed", status Some(403), close None, sse None;
    /// A symbol or channel outside the user's claims (WebSocket: named in
    /// `subscribed.denied`).
    NotEntitled = "not_entitled", status Some(403), close None, sse None;
    /// A symbol not in the directory.
    UnknownSymbol = "unknown_symbol", status Some(404), close None, sse None;
    /// No such endpoint.
    NotFound = "not_found", status Some(404), close None, sse None;
    /// A method the endpoint does not take (`Allow` lists those it does).
    MethodNotAllowed = "method_not_allowed", status Some(405), close None, sse None;
    /// The framework could not answer in an acceptable type.
    NotAcceptable = "not_acceptable", status Some(406), close None, sse None;
    /// The request took too long to arrive.
    Timeout = "timeout", status Some(408), close None, sse None;
    /// A request body over the framework's limit.
    PayloadTooLarge = "payload_too_large", status Some(413), close None, sse None;
    /// A request target over the framework's limit.
    UriTooLong = "uri_too_long", status Some(414), close None, sse None;
    /// A request body of a type the endpoint does not read.
    UnsupportedMediaType = "unsupported_media_type", status Some(415), close None, sse None;
    /// A well-formed body the endpoint cannot use.
    Unprocessable = "unprocessable", status Some(422), close None, sse None;
    /// `/v1/ws` without a WebSocket upgrade.
    UpgradeRequired = "upgrade_required", status Some(426), close None, sse None;
    /// Too many connections, in total or from one address.
    LimitExceeded = "limit_exceeded", status Some(429), close Some(close::LIMIT_EXCEEDED), sse None;
    /// Refused by the framework for too many requests.
    TooManyRequests = "too_many_requests", status Some(429), close None, sse None;
    /// Closed by an operator (`/v1/admin/disconnect`).
    Disconnected = "disconnected", status None, close Some(close::DISCONNECTED), sse Some("error");
    /// A client that cannot keep up: `every` queue overflow or write timeout.
    SlowConsumer = "slow_consumer", status None, close Some(close::SLOW_CONSUMER), sse Some("error");
    /// A fault of the relay.
    Internal = "internal", status Some(500), close None, sse None;
    /// No feed yet, or the symbol directory is not loaded.
    NotReady = "not_ready", status Some(503), close None, sse None;
    /// The framework could not serve the request now.
    Unavailable = "unavailable", status Some(503), close None, sse None;
}

impl ErrorCode {
    /// The code of an error status whose response did not come from an
    /// [`ApiError`]: what the router and the extractors answer.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::NOT_ACCEPTABLE => ErrorCode::NotAcceptable,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::Unprocessable,
            StatusCode::UPGRADE_REQUIRED => ErrorCode::UpgradeRequired,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyRequests,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
            s if s.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client error in the shape of docs/PROTOCOL.md ("Errors"): `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// `code` with its own HTTP status (400 for codes only sent on open
    /// streams, which never reach an HTTP answer).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status().unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
        }
    }

    /// 503 `not_ready`: no symbol directory yet.
    pub fn not_ready() -> Self {
        ApiError::new(
            ErrorCode::NotReady,
            "the symbol directory is not loaded yet; retry shortly",
        )
    }

    /// 404 `unknown_symbol`.
    pub fn unknown_symbols(symbols: &[String]) -> Self {
        ApiError::new(
            ErrorCode::UnknownSymbol,
            format!("unknown symbol(s): {}", symbols.join(",")),
        )
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: &self.message,
            },
        })
        .unwrap_or_default();
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_and_consistent() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            if let Some(close) = c.close_code() {
                assert!(close::ALL.contains(&close), "{s}: {close}");
            }
        }
    }

    #[test]
    fn framework_statuses_map_to_codes_with_that_status() {
        for &c in ErrorCode::ALL {
            if let Some(status) = c.status() {
                let back = ErrorCode::from_status(status);
                assert_eq!(back.status(), Some(status), "{c}");
            }
        }
        assert_eq!(
            ErrorCode::from_status(StatusCode::BAD_GATEWAY),
            ErrorCode::Internal
        );
    }

    /// The rows of the first table after the line `heading`, split into
    /// trimmed cells (header and separator rows left out).
    fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
        let mut lines = doc.lines().skip_while(|l| l.trim() != heading).skip(1);
        let rows: Vec<Vec<String>> = lines
            .by_ref()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_owned())
                    .collect()
            })
            .collect();
        assert!(!rows.is_empty(), "no table after {heading}");
        rows
    }

    /// `—` is none; otherwise the cell without backticks.
    fn cell(c: &str) -> Option<&str> {
        (c != "—").then(|| c.trim_matches('`'))
    }

    /// The README's and docs/PROTOCOL.md's error tables list exactly the
    /// codes of [`ErrorCode`], each with its status, close code and event.
    #[test]
    fn the_docs_list_every_code_as_the_table_does() {
        let docs = [
            ("README.md", include_str!("../../README.md")),
            ("docs/PROTOCOL.md", include_str!("../../docs/PROTOCOL.md")),
        ];
        for (name, doc) in docs {
            let rows = table(doc, "## Errors");
            let mut listed = Vec::new();
            for row in &rows {
                let code = cell(&row[0]).unwrap_or_default();
                let Some(&c) = ErrorCode::ALL.iter().find(|c| c.as_str() == code) else {
                    panic!("{name}: `{code}` is not an ErrorCode");
                };
                let status = cell(&row[1]).map(|s| s.parse::<u16>().unwrap());
                assert_eq!(
                    status,
                    c.status().map(|s| s.as_u16()),
                    "{name}: {code}: HTTP"
                );
                let close = cell(&row[2]).map(|s| s.parse::<u16>().unwrap());
                assert_eq!(close, c.close_code(), "{name}: {code}: close code");
                assert_eq!(cell(&row[3]), c.sse_event(), "{name}: {code}: SSE event");
                listed.push(c);
            }
            assert_eq!(
                listed,
                ErrorCode::ALL,
                "{name}: the codes, in the table's order"
            );

            let rows = table(doc, "## Close codes");
            let mut numbers: Vec<u16> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
            numbers.sort_unstable();
            let mut all = close::ALL;
            all.sort_unstable();
            assert_eq!(numbers, all, "{name}: close codes");
            for &c in ErrorCode::ALL {
                let Some(code) = c.close_code() else { continue };
                let twin = &rows.iter().find(|r| r[0] == code.to_string()).unwrap()[1];
                if let Some(s) = c.status() {
                    assert!(
                        twin.contains(&format!("HTTP {}", s.as_u16())),
                        "{name}: {code}"
                    );
                }
                if let Some(e) = c.sse_event() {
                    assert!(twin.contains(&format!("event: {e}")), "{name}: {code}");
                }
            }
        }
    }
}
