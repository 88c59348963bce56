//! The approver web console: one static page that talks to the approver API with the
//! token the approver pastes. Served with a strict CSP; the page renders all data as
//! text, never as HTML, so a request body cannot inject script into an approver's view.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("console.html");

/// `GET /console`
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                    frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
