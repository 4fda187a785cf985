//! The operator's routes, behind `admin_token` (a user's token never opens
//! them): who is connected, by `sub`, transport and symbols; and closing a
//! user's connections (4003 `disconnected`). Without `admin_token` they are
//! not there (404).

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, ErrorCode, bearer, close, refused, same_secret};
use crate::admission::Limit;

/// A request that carried the admin token.
pub struct AdminDoor;

impl FromRequestParts<AppState> for AdminDoor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(admin) = &state.config.access.admin_token else {
            return Err(ApiError::new(ErrorCode::NotFound, "no such endpoint"));
        };
        // The header only: an admin token in a URL would end up in logs.
        match bearer(&parts.headers) {
            Some(given) if same_secret(given, admin) => Ok(AdminDoor),
            _ => {
                refused(state, Limit::Token);
                Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "missing or wrong admin token (Authorization: Bearer)",
                ))
            }
        }
    }
}

/// `GET /v1/admin/connections`: every connection of a per-user token.
pub async fn connections(_: AdminDoor, State(state): State<AppState>) -> Response {
    Json(serde_json::json!({ "connections": state.users.connections() })).into_response()
}

/// Query of `/v1/admin/disconnect`.
#[derive(Debug, Deserialize)]
pub struct DisconnectQuery {
    /// The user whose connections end.
    pub sub: String,
}

/// `POST /v1/admin/disconnect?sub=…`: closes the user's WebSocket and SSE
/// connections with 4003; says how many.
pub async fn disconnect(
    _: AdminDoor,
    State(state): State<AppState>,
    Query(q): Query<DisconnectQuery>,
) -> Response {
    let n = state.users.disconnect(
        &q.sub,
        close::DISCONNECTED,
        "disconnected: closed by an operator",
    );
    tracing::info!(connections = n, "admin disconnect");
    Json(serde_json::json!({ "sub": q.sub, "disconnected": n })).into_response()
}

/// Query of `/v1/admin/usage`.
#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    /// `YYYY-MM`; this month when absent.
    pub month: Option<String>,
}

/// `GET /v1/admin/usage?month=YYYY-MM`: this relay's usage report for the
/// month, as `tickrelay usage --json` prints it (what was flushed: at most
/// `usage_flush_ms` behind).
pub async fn usage(
    _: AdminDoor,
    State(state): State<AppState>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let Some((db, _)) = state.config.usage.clone() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no usage is kept (setting usage_db)",
        ));
    };
    let month = q.month.unwrap_or_else(|| {
        crate::usage::day_text(crate::clock::now_ms() / 86_400_000)[..7].to_owned()
    });
    let report = tokio::task::spawn_blocking(move || crate::usage::report(&[db], &month))
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "the usage report failed"))?;
    match report {
        Ok(r) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r.to_json(),
        )
            .into_response()),
        Err(crate::usage::Error::Month(m)) => Err(ApiError::new(ErrorCode::BadRequest, m)),
        Err(e) => Err(ApiError::new(ErrorCode::Internal, e.to_string())),
    }
}
