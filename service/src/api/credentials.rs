//! The filter's upstream credentials: the JWKS upstreams verify `signed_request` tokens
//! against (public, like any JWKS), and the secrets filters fetch (filter key only).

use std::borrow::Cow;

use airlock_wire::SecretValue;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use super::caller::FilterCaller;
use super::state::SharedState;
use crate::credentials::SecretError;
use crate::error::{truncate, ApiError};

/// `GET /.well-known/jwks.json`: the public keys, cacheable for five minutes (a new key
/// is published at least that long before the filter signs with it; see the README).
pub async fn jwks(State(state): State<SharedState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(state.jwks.clone()))
}

/// `GET /v1/secrets/{name}` (filter): the secret's current value, never cached on the way.
pub async fn secret(
    _: FilterCaller,
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match state.secrets.get(&name) {
        Ok(value) => {
            tracing::debug!(secret = %truncate(&name, 128), "secret fetched by a filter");
            let body = SecretValue { value: Cow::Owned(value.expose().to_string()) };
            Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)))
        }
        Err(SecretError::NotFound) => {
            Err(ApiError::NotFound { code: "secret_not_found", what: format!("secret `{}`", truncate(&name, 128)) })
        }
        Err(SecretError::Unavailable(why)) => {
            tracing::error!(problem = %why, "the secrets file cannot be read");
            Err(ApiError::Internal("the secrets file cannot be read; see the service log".into()))
        }
    }
}
