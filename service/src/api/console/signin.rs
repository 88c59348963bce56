//! The console's sign-in routes (`/auth/…`): the browser's side of the authorization code
//! flow in [`crate::auth::login`], the signed-in principal with its CSRF token, and logout.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::state::SharedState;
use crate::auth::login::{cookie, Login, SESSION_COOKIE};
use crate::error::ApiError;

fn login(state: &SharedState) -> Result<&Arc<Login>, ApiError> {
    state.login.as_ref().ok_or(ApiError::NotFound {
        code: "sign_in_not_configured",
        what: "console sign-in (configure [oidc.login])".into(),
    })
}

fn redirect(location: &str, cookies: &[&str]) -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::CACHE_CONTROL, "no-store")]).into_response();
    let h = resp.headers_mut();
    for (name, value) in
        std::iter::once((header::LOCATION, location)).chain(cookies.iter().map(|c| (header::SET_COOKIE, *c)))
    {
        if let Ok(v) = value.parse() {
            h.append(name, v);
        }
    }
    resp
}

/// `GET /auth/login`: off to the IdP's login page.
pub async fn start(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let started = login(&state)?.begin().await?;
    Ok(redirect(&started.redirect, &[&started.cookie]))
}

/// `GET /auth/callback?code=…&state=…`: where the IdP sends the browser back.
pub async fn callback(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let login = login(&state)?;
    if let Some(e) = q.get("error") {
        let e: String = e.chars().take(64).collect();
        return Err(ApiError::Forbidden { code: "sign_in_refused", message: format!("the IdP said `{e}`") });
    }
    let field = |name: &str| q.get(name).filter(|v| !v.is_empty()).ok_or_else(|| ApiError::invalid(name, "missing"));
    let opened = login.finish(&headers, field("code")?, field("state")?).await?;
    Ok(redirect("/console", &[&opened.cookie, &opened.clear_login]))
}

/// `GET /auth/me`: who is signed in, and the CSRF token the page sends on changes.
pub async fn me(State(state): State<SharedState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = cookie(&headers, SESSION_COOKIE).ok_or(ApiError::Unauthorized)?;
    let (p, csrf) = login(&state)?.session(id).ok_or(ApiError::Unauthorized)?;
    let roles: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
    let body = json!({"name": p.name, "groups": p.groups, "roles": roles, "csrf": csrf});
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// `POST /auth/logout` (session cookie + CSRF token): ends the session on the server.
pub async fn logout(State(state): State<SharedState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let login = login(&state)?;
    login.principal(&headers, &Method::POST)?.ok_or(ApiError::Unauthorized)?;
    let id = cookie(&headers, SESSION_COOKIE).ok_or(ApiError::Unauthorized)?;
    let clear = login.logout(id);
    Ok(([(header::SET_COOKIE, clear)], Json(json!({"signed_out": true}))).into_response())
}
