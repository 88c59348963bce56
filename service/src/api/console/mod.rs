//! The approver and auditor web console: static HTML, CSS and scripts served by the
//! service (no build step), talking to the JSON API with the console session cookie (after
//! signing in with the IdP, see [`signin`]) or a pasted bearer token. Served with a strict
//! CSP (`script-src 'self'`, nothing inline); the scripts render all data as text, never
//! as HTML, so a request body cannot inject script into an approver's view.

pub mod signin;

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const PAGE: &str = include_str!("index.html");

/// The console's static files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("console.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("app.js")),
    ("approvals.js", "text/javascript; charset=utf-8", include_str!("approvals.js")),
    ("sessions.js", "text/javascript; charset=utf-8", include_str!("sessions.js")),
    ("integrity.js", "text/javascript; charset=utf-8", include_str!("integrity.js")),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn served(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /console`
pub async fn page() -> Response {
    served("text/html; charset=utf-8", PAGE)
}

/// `GET /console/{file}`: a script or the style sheet.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or(ApiError::NotFound { code: "not_found", what: "console file".into() })?;
    Ok(served(content_type, body))
}
