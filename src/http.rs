//! The HTTP front: router, errors, content negotiation, health, metrics and
//! the embedded trading page. Each transport lives in `transport/`; this
//! module only wires them up.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::fanout::Hub;
use crate::feed::{FeedState, FeedStatus};
use crate::limits::ConnLimiter;
use crate::metrics::{HttpLabels, Limit, Metrics, RouteLabel};
use crate::table::Table;
use crate::transport;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    pub conns: Arc<ConnLimiter>,
    /// Fires at shutdown: streams send their notice and end.
    pub cancel: CancellationToken,
    /// Upgraded WebSocket tasks, which the HTTP server does not track.
    pub tracker: TaskTracker,
    /// Set on SIGTERM: `/readyz` answers 503 while clients are still served.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

/// The `token` query parameter (for clients that cannot set headers).
#[derive(Debug, Default, serde::Deserialize)]
pub struct AuthQuery {
    /// Bearer token.
    pub token: Option<String>,
}

/// Counts and logs a request or operation refused by `limit` (a setting name).
pub fn refused(state: &AppState, limit: Limit) {
    state.metrics.stream.refused(limit);
    tracing::info!(limit = limit.as_str(), "client refused by a limit");
}

/// Checks the bearer token, when one is configured.
pub fn check_token(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), ApiError> {
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
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong bearer token".into(),
        })
    }
}

/// Checks the WebSocket `Origin` against the allow-list, when one is set.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let allowed = &state.config.access.allowed_origins;
    if allowed.is_empty() {
        return Ok(());
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // Non-browser clients send no Origin; cross-site hijacking needs a browser.
        None => Ok(()),
        Some(o) if allowed.iter().any(|a| a == o) => Ok(()),
        Some(o) => {
            refused(state, Limit::AllowedOrigins);
            Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "origin_not_allowed",
                message: format!("origin {o} is not in allowed_origins"),
            })
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A client error in the shape of docs/PROTOCOL.md ("Errors"): `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// 503 `not_ready`: no symbol directory yet.
    pub fn not_ready() -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: "the symbol directory is not loaded yet; retry shortly".into(),
        }
    }

    /// 404 `unknown_symbol`.
    pub fn unknown_symbols(symbols: &[String]) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_symbol",
            message: format!("unknown symbol(s): {}", symbols.join(",")),
        }
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
                code: self.code,
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
        return Err(ApiError::bad_request(
            "too_many_symbols",
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
            return Err(ApiError::bad_request(
                "bad_symbol",
                format!("`{shown}` is not a ticker"),
            ));
        }
        let s = s.to_ascii_uppercase();
        if !out.contains(&s) {
            out.push(s);
        }
        if out.len() > max {
            return Err(ApiError::bad_request(
                "too_many_symbols",
                format!("at most {max} symbols per request (setting max_symbols)"),
            ));
        }
    }
    Ok(Some(out))
}

/// Builds the router with every route.
pub fn router(state: AppState) -> Router {
    PAGE_MODULES
        .iter()
        .fold(Router::new(), |r, &(path, body)| {
            r.route(path, get(move || page_module(body)))
        })
        .route("/", get(page_index))
        .route("/tickrelay.js", get(client_js))
        .route("/clients/js/tickrelay.js", get(client_js))
        .route("/app.css", get(page_css))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/symbols", get(transport::snapshot::symbols))
        .merge(
            // Request/response transports carry no events: the feed's status
            // rides on every answer instead (docs/PROTOCOL.md).
            Router::new()
                .route("/v1/snapshot", get(transport::snapshot::snapshot))
                .route(
                    "/v1/snapshot/{symbol}",
                    get(transport::snapshot::snapshot_one),
                )
                .route("/v1/poll", get(transport::poll::handler))
                .route_layer(middleware::map_response_with_state(
                    state.clone(),
                    feed_header,
                )),
        )
        .route("/v1/stream", get(transport::sse::handler))
        .route("/v1/ws", get(transport::ws::handler))
        .fallback(not_found)
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// The header that carries the feed's status on snapshot and poll answers.
pub const FEED_HEADER: &str = "tickrelay-feed";

/// `tickrelay-feed: status=live; session=S…; complete=true; lost=0; incomplete=0`
/// on every snapshot and poll answer: the `feed` event of the request/response
/// transports.
async fn feed_header(State(state): State<AppState>, mut res: Response) -> Response {
    let feed = *state.feed.borrow();
    let value = format!(
        "status={}; session={}; complete={}; lost={}; incomplete={}",
        feed.status.as_str(),
        feed.session.as_str(),
        feed.complete,
        feed.lost,
        feed.incomplete
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
        res.headers_mut().insert(FEED_HEADER, v);
    }
    res
}

/// Counts every request by route pattern and status, and times it.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let start = Instant::now();
    let res = next.run(req).await;
    let http = &state.metrics.http;
    http.requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            status: res.status().as_u16(),
        })
        .inc();
    http.duration
        .get_or_create(&RouteLabel { route })
        .observe(start.elapsed().as_secs_f64());
    res
}

/// Largest body of a framework error (an extractor rejection, the router's
/// 405) read to become the JSON error's message.
const MAX_REJECTION_BODY: usize = 4096;

/// The stable code of an error status whose response did not come from an
/// [`ApiError`]: what the router and the extractors answer.
pub fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Makes every error response the JSON error shape of docs/PROTOCOL.md. Handlers
/// answer with [`ApiError`] already; what else fails — the router's 405 for
/// a wrong method, a path, query or JSON extractor's rejection (plain text
/// from the framework) — is rewritten here: same status and headers (a 405
/// keeps its `Allow`), the framework's text as the message.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REJECTION_BODY).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    let mut out = ApiError {
        status,
        code: status_code_name(status),
        message,
    }
    .into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such endpoint".into(),
    }
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

async fn readyz(State(state): State<AppState>) -> Response {
    let feed = *state.feed.borrow();
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        // Shutting down: a load balancer should send new clients elsewhere.
        let body = serde_json::json!({"status": "draining", "session": feed.session.as_str()});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let symbols = state.table.symbol_count();
    let body = serde_json::json!({
        "status": feed.status.as_str(),
        "session": feed.session.as_str(),
        "symbols": symbols,
        "seq": state.table.last_seq(),
        "incomplete_symbols": feed.incomplete,
        "lost_messages": feed.lost,
    });
    if feed.status != FeedStatus::Stale && symbols > 0 && !feed.complete {
        // The table lacks state it is rebuilding: not ready, and says how much.
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if feed.status != FeedStatus::Stale && symbols > 0 {
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let reason = if feed.status == FeedStatus::Stale {
            "feed is stale"
        } else {
            "symbol directory not loaded"
        };
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: reason.into(),
        }
        .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn page_index() -> impl IntoResponse {
    static_file(
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    )
}

/// The page's ES modules (static/*.js, one concern each), embedded as they
/// are: no build step.
const PAGE_MODULES: &[(&str, &str)] = &[
    ("/app.js", include_str!("../static/app.js")),
    ("/compare.js", include_str!("../static/compare.js")),
    ("/format.js", include_str!("../static/format.js")),
    ("/rows.js", include_str!("../static/rows.js")),
    ("/search.js", include_str!("../static/search.js")),
    ("/settings.js", include_str!("../static/settings.js")),
    ("/stats.js", include_str!("../static/stats.js")),
    ("/status.js", include_str!("../static/status.js")),
];

async fn page_module(body: &'static str) -> Response {
    static_file("text/javascript; charset=utf-8", body)
}

/// The JavaScript client library (clients/js/), which the page imports.
async fn client_js() -> impl IntoResponse {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../clients/js/tickrelay.js"),
    )
}

async fn page_css() -> impl IntoResponse {
    static_file("text/css; charset=utf-8", include_str!("../static/app.css"))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::{Path, Query};
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Q {
        #[allow(dead_code)]
        n: u32,
    }

    /// Status, Allow header and JSON body of `method uri` through a router
    /// with the error layer.
    async fn ask(method: &str, uri: &str) -> (StatusCode, Option<String>, serde_json::Value) {
        let app = Router::new()
            .route("/one/{sym}", get(|Path(s): Path<String>| async move { s }))
            .route("/q", get(|Query(_q): Query<Q>| async { "ok" }))
            .fallback(not_found)
            .layer(middleware::from_fn(json_errors));
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let allow = res
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, allow, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn framework_errors_become_the_json_error_shape() {
        let (s, allow, b) = ask("POST", "/q?n=1").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(b["error"]["code"], "method_not_allowed");
        assert!(allow.is_some_and(|a| a.contains("GET")), "Allow kept");
        let (s, _, b) = ask("GET", "/one/%FF%FE").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b["error"]["code"], "bad_request");
        assert!(b["error"]["message"].as_str().unwrap().len() > 5, "{b}");
        let (s, _, b) = ask("GET", "/q?n=minus").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b["error"]["code"], "bad_request");
        let (s, _, b) = ask("GET", "/nothing").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(b["error"]["code"], "not_found");
    }

    #[test]
    fn symbols_are_split_checked_and_limited() {
        assert_eq!(parse_symbols(None, 5).unwrap(), None);
        assert_eq!(
            parse_symbols(Some("aapl, MSFT,,AAPL"), 5).unwrap(),
            Some(vec!["AAPL".into(), "MSFT".into()])
        );
        assert_eq!(
            parse_symbols(Some("A,B,C"), 2).unwrap_err().code,
            "too_many_symbols"
        );
        assert_eq!(
            parse_symbols(Some("<script>"), 2).unwrap_err().code,
            "bad_symbol"
        );
        assert_eq!(
            parse_symbols(Some("ABCDEFGHIJKLMNOPQ"), 2)
                .unwrap_err()
                .code,
            "bad_symbol"
        );
    }
}
