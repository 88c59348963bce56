//! HTTP API: routes, shared state and JSON views.

pub mod approvals;
pub mod audit;
pub mod console;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::alerts::Alerter;
use crate::auth::{Approvers, FilterKey};
use crate::error::ApiError;
use crate::store::Store;
use crate::waiters::Waiters;

/// Largest request body accepted (audit batches carry masked bodies).
pub const BODY_LIMIT: usize = 16 << 20;

pub struct AppState {
    pub store: Store,
    pub filter_key: FilterKey,
    pub approvers: Approvers,
    pub alerter: Alerter,
    pub waiters: Waiters,
    /// Base URL for links in answers and alerts, without a trailing slash.
    pub public_url: String,
    /// How often a long-poll re-reads the store; `None` relies on in-process wake-ups only
    /// (enough for one SQLite-backed process; replicas on PostgreSQL need the re-read).
    pub poll_interval: Option<Duration>,
}

impl AppState {
    pub fn console_link(&self, approval_id: &str) -> String {
        format!("{}/console#/approvals/{approval_id}", self.public_url)
    }
}

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route(
            "/v1/approvals",
            post(approvals::create).get(approvals::list),
        )
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/wait", get(approvals::wait))
        .route("/v1/approvals/{id}/redeem", post(approvals::redeem))
        .route("/v1/approvals/{id}/decision", post(approvals::decide))
        .route("/v1/audit/batch", post(audit::ingest))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/{id}", get(sessions::show))
        .route("/console", get(console::page))
        .fallback(|| async {
            ApiError::NotFound {
                code: "not_found",
                what: "route".into(),
            }
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Parses an optional integer query parameter, naming it when malformed.
pub(crate) fn int_param(name: &str, value: Option<&String>) -> Result<Option<i64>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::invalid(name, "must be an integer"))
        })
        .transpose()
}
