//! The HTTP front: the router, the layers every request passes (metrics,
//! the JSON error shape, the feed header), health, the metrics endpoint and
//! the embedded trading page. Each transport lives in `transport/` and what
//! they share in `api`; this module only routes to them.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::{ApiError, AppState, Door, ErrorCode};
use crate::feed::status::FeedStatus;
use crate::metrics::{HttpLabels, RouteLabel};
use crate::transport;

/// Builds the router with every route.
pub fn router(state: AppState) -> Router {
    let routes = PAGE_MODULES
        .iter()
        .fold(Router::new(), |r, &(path, body)| {
            r.route(path, get(move || page_module(body)))
        })
        .route("/", get(page_index))
        .merge(client_js())
        .route("/app.css", get(page_css))
        .merge(vendor())
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
                .route("/v1/book/{symbol}", get(transport::book::book))
                .route("/v1/poll", get(transport::poll::handler))
                .route("/v1/bars/{symbol}", get(transport::chart::bars))
                .route("/v1/trades/{symbol}", get(transport::chart::trades))
                .route_layer(middleware::map_response_with_state(
                    state.clone(),
                    feed_header,
                )),
        )
        .route("/v1/stream", get(transport::sse::handler))
        .route("/v1/ws", get(transport::ws::handler))
        .route("/v1/admin/connections", get(crate::api::admin::connections))
        .route("/v1/admin/usage", get(crate::api::admin::usage))
        .route(
            "/v1/admin/disconnect",
            axum::routing::post(crate::api::admin::disconnect),
        );
    // Only `tickrelay demo` has users to offer.
    let routes = if state.config.demo_users.is_some() {
        routes.route("/v1/demo/users", get(demo_users))
    } else {
        routes
    };
    routes
        .fallback(not_found)
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// The header that carries the feed's status on snapshot, book and poll answers.
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
        code: ErrorCode::from_status(status),
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
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// `GET /v1/demo/users`, in `tickrelay demo` alone: the demo's users and
/// their tokens, for the page's user menu (docs/PROTOCOL.md, "Users and
/// entitlements"). Through the door, like every client route.
async fn demo_users(_door: Door, State(state): State<AppState>) -> Response {
    match &state.config.demo_users {
        Some(users) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            users.0.to_string(),
        )
            .into_response(),
        None => not_found().await.into_response(),
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
        ApiError::new(ErrorCode::NotReady, reason).into_response()
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
    ("/chart.js", include_str!("../static/chart.js")),
    ("/compare.js", include_str!("../static/compare.js")),
    ("/format.js", include_str!("../static/format.js")),
    ("/ladder.js", include_str!("../static/ladder.js")),
    ("/rows.js", include_str!("../static/rows.js")),
    ("/search.js", include_str!("../static/search.js")),
    ("/settings.js", include_str!("../static/settings.js")),
    ("/stats.js", include_str!("../static/stats.js")),
    ("/status.js", include_str!("../static/status.js")),
    ("/users.js", include_str!("../static/users.js")),
];

async fn page_module(body: &'static str) -> Response {
    static_file("text/javascript; charset=utf-8", body)
}

/// A file of the JavaScript client: its path in clients/js/ and its text.
macro_rules! client_file {
    ($path:literal) => {
        ($path, include_str!(concat!("../clients/js/", $path)))
    };
}

/// The JavaScript client library (clients/js/), which the page imports:
/// tickrelay.js and the modules it imports.
const CLIENT_JS: &[(&str, &str)] = &[
    client_file!("tickrelay.js"),
    client_file!("lib/auth.js"),
    client_file!("lib/book.js"),
    client_file!("lib/chart.js"),
    client_file!("lib/books.js"),
    client_file!("lib/client.js"),
    client_file!("lib/http.js"),
    client_file!("lib/msgpack.js"),
    client_file!("lib/poll.js"),
    client_file!("lib/prices.js"),
    client_file!("lib/resume.js"),
    client_file!("lib/snapshot.js"),
    client_file!("lib/sse.js"),
    client_file!("lib/time.js"),
    client_file!("lib/transport.js"),
    client_file!("lib/transports.js"),
    client_file!("lib/ws.js"),
];

/// [`CLIENT_JS`] under `/` (where the page imports it) and under
/// `/clients/js/`, so the relative imports resolve under both.
fn client_js() -> Router<AppState> {
    CLIENT_JS.iter().fold(Router::new(), |r, &(path, body)| {
        r.route(&format!("/{path}"), get(move || page_module(body)))
            .route(
                &format!("/clients/js/{path}"),
                get(move || page_module(body)),
            )
    })
}

/// Third-party files the page loads, shipped as published with their
/// licence beside them (static/README.md says where each came from).
const VENDOR: &[(&str, &str, &str)] = &[
    (
        "/vendor/lightweight-charts/lightweight-charts.standalone.production.js",
        "text/javascript; charset=utf-8",
        include_str!(
            "../static/vendor/lightweight-charts/lightweight-charts.standalone.production.js"
        ),
    ),
    (
        "/vendor/lightweight-charts/LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../static/vendor/lightweight-charts/LICENSE"),
    ),
    (
        "/vendor/lightweight-charts/NOTICE",
        "text/plain; charset=utf-8",
        include_str!("../static/vendor/lightweight-charts/NOTICE"),
    ),
];

fn vendor() -> Router<AppState> {
    VENDOR.iter().fold(Router::new(), |r, &(path, ty, body)| {
        r.route(path, get(move || async move { static_file(ty, body) }))
    })
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
}
