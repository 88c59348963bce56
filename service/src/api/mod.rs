//! HTTP API: the routes. Handlers, shared state and the caller extractors live in the
//! submodules; none of them imports this file.

pub mod approvals;
pub mod audit;
mod caller;
pub mod console;
pub mod credentials;
mod params;
pub mod replay;
pub mod sessions;
pub mod slack;
mod state;
pub mod tools;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::ApiError;

pub use caller::{Approver, Auditor, FilterCaller};
pub use state::{AppState, SharedState};

/// Largest request body accepted (audit batches carry masked bodies).
pub const BODY_LIMIT: usize = 16 << 20;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/.well-known/jwks.json", get(credentials::jwks))
        .route("/v1/secrets/{name}", get(credentials::secret))
        .route("/v1/approvals", post(approvals::create).get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/wait", get(approvals::wait))
        .route("/v1/approvals/{id}/redeem", post(approvals::redeem))
        .route("/v1/approvals/{id}/decision", post(approvals::decide))
        .route("/v1/slack/interactions", post(slack::interactions))
        .route("/v1/audit/batch", post(audit::ingest))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/{id}", get(sessions::show))
        .route("/v1/sessions/{id}/replay", post(replay::replay))
        .route("/v1/mcp/tool-definitions", post(tools::observe))
        .route("/v1/mcp/tool-pins", get(tools::pins))
        .route("/v1/mcp/tool-changes", get(tools::changes))
        .route("/v1/mcp/tool-changes/{id}/accept", post(tools::accept))
        .route("/console", get(console::page))
        .route("/console/{file}", get(console::asset))
        .route("/auth/login", get(console::signin::start))
        .route("/auth/callback", get(console::signin::callback))
        .route("/auth/me", get(console::signin::me))
        .route("/auth/logout", post(console::signin::logout))
        .fallback(|| async { ApiError::NotFound { code: "not_found", what: "route".into() } })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
