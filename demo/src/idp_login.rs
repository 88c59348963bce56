//! The demo IdP's login page: the OpenID Connect authorization code flow with PKCE, so the
//! Airlock console's sign-in can be tried and tested against a real browser round trip.
//!
//! `GET /login/authorize` shows a form (user name and groups: the demo trusts whoever
//! types them, which is why the IdP only listens on loopback). Submitting it issues an
//! authorization code bound to the client, redirect URI, PKCE challenge and nonce of the
//! request; it is single-use and lives [`CODE_TTL`]. `POST /login/token` exchanges the
//! code and its `code_verifier` for an ID token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::idp::Idp;

/// Where the login page (the discovery document's `authorization_endpoint`) lives.
pub const AUTHORIZE_PATH: &str = "/login/authorize";
/// Where codes are exchanged (the discovery document's `token_endpoint`).
pub const TOKEN_PATH: &str = "/login/token";
/// How long an authorization code can be exchanged.
pub const CODE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Lifetime of the ID tokens this flow issues, in seconds.
const ID_TOKEN_TTL_SECS: u64 = 600;
/// Codes not yet exchanged; past this many the oldest are dropped.
const MAX_PENDING_CODES: usize = 1000;

/// What a code was issued for; all of it is checked at the exchange.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    subject: String,
    groups: Vec<String>,
    issued: Instant,
}

struct Login {
    idp: Arc<Idp>,
    codes: Mutex<HashMap<String, Grant>>,
}

pub(crate) fn router(idp: Arc<Idp>) -> Router {
    let login = Arc::new(Login { idp, codes: Mutex::new(HashMap::new()) });
    Router::new().route(AUTHORIZE_PATH, get(form).post(submit)).route(TOKEN_PATH, post(exchange)).with_state(login)
}

/// The parameters of an authorization request, carried through the form as hidden fields.
#[derive(Debug, Deserialize)]
struct AuthorizeRequest {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    #[serde(default)]
    scope: String,
}

impl AuthorizeRequest {
    /// What is wrong with the request, if anything.
    fn problem(&self) -> Option<&'static str> {
        if self.response_type != "code" {
            return Some("`response_type` must be `code`");
        }
        if self.client_id.is_empty() {
            return Some("`client_id` is missing");
        }
        if !(self.redirect_uri.starts_with("http://") || self.redirect_uri.starts_with("https://")) {
            return Some("`redirect_uri` must be an http(s) URL");
        }
        if self.state.is_empty() || self.nonce.is_empty() {
            return Some("`state` and `nonce` are required");
        }
        if self.code_challenge_method != "S256" {
            return Some("`code_challenge_method` must be `S256` (PKCE)");
        }
        if self.code_challenge.len() != 43 {
            return Some("`code_challenge` must be the 43-character base64url SHA-256 of the verifier");
        }
        None
    }
}

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n"))
        .into_response()
}

/// `GET /login/authorize?response_type=code&client_id=…&redirect_uri=…&state=…&nonce=…&code_challenge=…`
async fn form(Query(req): Query<AuthorizeRequest>) -> Response {
    if let Some(p) = req.problem() {
        return bad(p);
    }
    let hidden: String = [
        ("response_type", &req.response_type),
        ("client_id", &req.client_id),
        ("redirect_uri", &req.redirect_uri),
        ("state", &req.state),
        ("nonce", &req.nonce),
        ("code_challenge", &req.code_challenge),
        ("code_challenge_method", &req.code_challenge_method),
        ("scope", &req.scope),
    ]
    .iter()
    .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">\n", html_escape(v)))
    .collect();
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Demo IdP sign-in</title></head>\n\
         <body style=\"font:14px system-ui,sans-serif;max-width:420px;margin:60px auto\">\n\
         <h1>Demo IdP</h1>\n<p>Sign in to <b>{client}</b>. This demo trusts whatever you type.</p>\n\
         <form method=\"post\" action=\"{AUTHORIZE_PATH}\">\n{hidden}\
         <p><label>User name <input id=\"username\" name=\"username\" required autofocus></label></p>\n\
         <p><label>Groups (comma-separated) <input id=\"groups\" name=\"groups\" value=\"dba\"></label></p>\n\
         <p><button id=\"signin\" type=\"submit\">Sign in</button></p>\n</form></body></html>\n",
        client = html_escape(&req.client_id),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct Submitted {
    #[serde(flatten)]
    req: AuthorizeRequest,
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: String,
}

/// `POST /login/authorize`: the form; redirects to `redirect_uri?code=…&state=…`.
async fn submit(State(login): State<Arc<Login>>, Form(f): Form<Submitted>) -> Response {
    if let Some(p) = f.req.problem() {
        return bad(p);
    }
    let subject = f.username.trim().to_string();
    if subject.is_empty() {
        return bad("give a user name");
    }
    let Some(code) = random_hex() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no random source\n").into_response();
    };
    let grant = Grant {
        client_id: f.req.client_id,
        redirect_uri: f.req.redirect_uri.clone(),
        challenge: f.req.code_challenge,
        nonce: f.req.nonce,
        subject,
        groups: f.groups.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect(),
        issued: Instant::now(),
    };
    if let Ok(mut codes) = login.codes.lock() {
        codes.retain(|_, g| g.issued.elapsed() < CODE_TTL);
        if codes.len() >= MAX_PENDING_CODES {
            return (StatusCode::SERVICE_UNAVAILABLE, "too many sign-ins under way\n").into_response();
        }
        codes.insert(code.clone(), grant);
    }
    let sep = if f.req.redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{}{sep}code={code}&state={}", f.req.redirect_uri, percent_encode(&f.req.state));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location), (header::CACHE_CONTROL, "no-store".into())]).into_response()
}

#[derive(Debug, Deserialize)]
struct Exchange {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    code_verifier: String,
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
fn oauth_error(error: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

/// `POST /login/token` (form): `grant_type=authorization_code&code=…&redirect_uri=…&client_id=…`
/// `&code_verifier=…`.
async fn exchange(State(login): State<Arc<Login>>, Form(x): Form<Exchange>) -> Response {
    if x.grant_type != "authorization_code" {
        return oauth_error("unsupported_grant_type", "only authorization_code is supported here");
    }
    // Removed before any check: a code is spent by its first exchange, good or bad.
    let grant = login.codes.lock().ok().and_then(|mut codes| codes.remove(&x.code));
    let Some(g) = grant.filter(|g| g.issued.elapsed() < CODE_TTL) else {
        return oauth_error("invalid_grant", "unknown, expired or already used code");
    };
    if g.client_id != x.client_id || g.redirect_uri != x.redirect_uri {
        return oauth_error("invalid_grant", "the code was issued to another client or redirect_uri");
    }
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(x.code_verifier.as_bytes()));
    if x.code_verifier.len() < 43 || computed != g.challenge {
        return oauth_error("invalid_grant", "code_verifier does not match the code_challenge");
    }
    let claims = Claims::with_custom_claims(json!({"groups": g.groups}), Duration::from_secs(ID_TOKEN_TTL_SECS))
        .with_issuer(&login.idp.issuer)
        .with_audience(&g.client_id)
        .with_subject(&g.subject)
        .with_nonce(&g.nonce);
    match login.idp.key.sign(claims) {
        Ok(t) => {
            axum::Json(json!({"id_token": t, "token_type": "Bearer", "expires_in": ID_TOKEN_TTL_SECS})).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot sign: {e}\n")).into_response(),
    }
}

/// 192 random bits as hex, or `None` when the OS random source fails.
fn random_hex() -> Option<String> {
    let mut b = [0u8; 24];
    getrandom::getrandom(&mut b).ok()?;
    Some(hex::encode(b))
}

fn html_escape(s: &str) -> String {
    s.chars().fold(String::with_capacity(s.len()), |mut out, c| {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
        out
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes().fold(String::with_capacity(s.len()), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        out
    })
}
