//! A demo identity provider for the README walkthrough: mints ES256 tokens for any
//! subject and groups you ask for, and publishes its key as a JWKS named by an OpenID
//! Connect discovery document.
//!
//! It authenticates nobody, so it refuses to listen anywhere but loopback. The key lives
//! only in memory and changes at every start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

use crate::upstream::{announce, shutdown_signal};

/// Issuer the demo IdP (and the e2e harness) use unless told otherwise.
pub const DEFAULT_ISSUER: &str = "https://idp.airlock.test";
/// Audience the demo IdP (and the e2e harness) use unless told otherwise.
pub const DEFAULT_AUDIENCE: &str = "airlock-demo";
/// Longest token lifetime `/token` grants, in seconds.
pub const MAX_TTL_SECS: u64 = 24 * 3600;

/// Options of `airlock-demo idp`.
#[derive(Clone, Debug)]
pub struct IdpOptions {
    pub listen: SocketAddr,
    pub issuer: String,
    pub audience: String,
}

pub(crate) struct Idp {
    pub(crate) key: ES256KeyPair,
    jwks: String,
    pub(crate) issuer: String,
    audience: String,
}

/// Runs the demo IdP until the process is stopped; prints
/// `airlock-demo idp listening on ADDR` once it accepts connections.
pub fn run(opts: IdpOptions) -> Result<(), String> {
    if !opts.listen.ip().is_loopback() {
        return Err(format!(
            "the demo IdP issues tokens to anyone who asks, so it only listens on loopback; {} is not a loopback \
                address",
            opts.listen.ip()
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let app = router(opts.issuer, opts.audience)?;
        announce("idp", addr)?;
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.map_err(|e| e.to_string())
    })
}

/// The IdP's routes with a fresh key.
pub fn router(issuer: String, audience: String) -> Result<Router, String> {
    let key = ES256KeyPair::generate();
    let kid = format!("demo-es256-{}", key.public_key().jwk_thumbprint().get(..16).unwrap_or("key"));
    let key = key.with_key_id(&kid);
    let jwk: Value = serde_json::from_str(&key.public_key().with_key_id(&kid).to_jwk())
        .map_err(|e| format!("cannot export the demo key: {e}"))?;
    let jwks = json!({ "keys": [jwk] }).to_string();
    let oauth = crate::oauth::router(&key, &kid, issuer.clone(), audience.clone())?;
    let idp = Arc::new(Idp { key, jwks, issuer, audience });
    Ok(Router::new()
        .route("/.well-known/jwks.json", get(jwks_doc))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/token", get(token))
        .with_state(Arc::clone(&idp))
        .merge(crate::idp_login::router(idp))
        .merge(oauth))
}

async fn jwks_doc(State(idp): State<Arc<Idp>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], idp.jwks.clone()).into_response()
}

/// OpenID Connect Discovery 1.0 §3, as far as this IdP goes: the login page of
/// [`crate::idp_login`] (authorization code with PKCE) and the key set. The URLs live
/// under the issuer URL, like a real provider's; the routes are served at the root, so
/// give this IdP an issuer without a path.
async fn discovery(State(idp): State<Arc<Idp>>) -> Response {
    let base = idp.issuer.trim_end_matches('/');
    let doc = json!({
        "issuer": idp.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "authorization_endpoint": format!("{base}{}", crate::idp_login::AUTHORIZE_PATH),
        "token_endpoint": format!("{base}{}", crate::idp_login::TOKEN_PATH),
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "groups"],
    });
    ([(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

/// `GET /token?sub=alice&groups=support,dba&ttl=600` → the compact JWT as text/plain.
async fn token(State(idp): State<Arc<Idp>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response();
    let Some(sub) = q.get("sub").filter(|s| !s.is_empty()) else {
        return bad("missing `sub`: ask for /token?sub=alice&groups=support,dba&ttl=600".into());
    };
    let ttl = match q.get("ttl").map(|t| t.parse::<u64>()) {
        None => 600,
        Some(Ok(t)) if (1..=MAX_TTL_SECS).contains(&t) => t,
        Some(_) => return bad(format!("`ttl` must be a number of seconds from 1 to {MAX_TTL_SECS}")),
    };
    let groups: Vec<&str> =
        q.get("groups").map_or_else(Vec::new, |g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).collect());
    let mut custom = serde_json::Map::new();
    custom.insert("groups".into(), json!(groups));
    let claims = Claims::with_custom_claims(custom, Duration::from_secs(ttl))
        .with_issuer(&idp.issuer)
        .with_audience(&idp.audience)
        .with_subject(sub);
    match idp.key.sign(claims) {
        Ok(t) => ([(header::CONTENT_TYPE, "text/plain")], format!("{t}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot sign: {e}\n")).into_response(),
    }
}
