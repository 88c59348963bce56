//! Errors the HTTP API answers with. Every error is JSON of the shape
//! `{"error":{"code":"...","message":"...","field":"..."}}` so that the filter and agent
//! loops can branch on `code`; messages say what to fix and never echo secrets.

use airlock_wire::ApprovalErrorCode;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed or unknown bearer credential.
    #[error("missing or invalid bearer token in the authorization header")]
    Unauthorized,
    /// Authenticated, but this caller may not do this.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{what} not found")]
    NotFound { code: &'static str, what: String },
    /// A request field is missing or invalid; `field` is its JSON path.
    #[error("invalid `{field}`: {problem}")]
    InvalidField { field: String, problem: String },
    /// The request is valid but conflicts with the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The database failed; details go to the server log only.
    #[error("the audit/approval store is unavailable; retry later")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ApiError::InvalidField { field: field.into(), problem: problem.into() }
    }

    pub fn approval_not_found(id: &str) -> Self {
        ApiError::NotFound {
            code: ApprovalErrorCode::ApprovalNotFound.as_str(),
            what: format!("approval `{}`", truncate(id, 64)),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::InvalidField { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Shortens user-supplied text quoted back in messages so a huge id cannot bloat replies.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Store(e) = &self {
            tracing::error!(error = %e, "store error");
        }
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "internal error");
        }
        let mut body = json!({ "code": code, "message": self.to_string() });
        if let ApiError::InvalidField { field, .. } = &self {
            body["field"] = json!(field);
        }
        (status, Json(json!({ "error": body }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn invalid_field_names_the_field_in_its_message() {
        let e = ApiError::invalid("approvers.required", "must be at least 1");
        assert_eq!(e.to_string(), "invalid `approvers.required`: must be at least 1");
        assert_eq!(e.status_and_code(), (StatusCode::BAD_REQUEST, "invalid_field"));
    }
}
