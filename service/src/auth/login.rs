//! Console sign-in with the organisation's IdP: the OpenID Connect authorization code flow
//! with PKCE (S256), and the server-side sessions it opens.
//!
//! `begin` makes a `state`, a `nonce` and a PKCE verifier, remembers them for
//! [`LOGIN_TTL`] and names the IdP's authorization URL (from its discovery document).
//! `finish` takes the `state` back once (it must also match the browser's login cookie, so
//! a sign-in started in another browser cannot be completed in this one), exchanges the
//! code with the verifier, and verifies the ID token with the same [`OidcVerifier`] as
//! bearer JWTs plus the nonce. The session it opens is a random id in an `HttpOnly`
//! cookie; state-changing calls made with that cookie must also carry the session's CSRF
//! token in [`CSRF_HEADER`]. Sessions live in this process's memory: a restart signs
//! everyone out, and replicas behind a load balancer need sticky sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method};
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::oidc::OidcVerifier;
use super::principal::Principal;
use crate::config_error::ConfigError;
use crate::error::ApiError;

/// Cookie holding the console session id.
pub const SESSION_COOKIE: &str = "airlock_session";
/// Cookie binding a sign-in under way to the browser that started it.
pub const LOGIN_COOKIE: &str = "airlock_login";
/// Header carrying the session's CSRF token on state-changing calls.
pub const CSRF_HEADER: &str = "x-airlock-csrf";
/// How long a sign-in may take at the IdP.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Sign-ins under way, and sessions, past which new ones are refused.
const MAX_ENTRIES: usize = 10_000;

fn default_session_minutes() -> u64 {
    480
}

/// `[oidc.login]`: the console signs in with the authorization code flow. The client id is
/// `oidc.audience` (an ID token's `aud` is the client it was issued to).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// How long a console session lasts, whatever the user does.
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
}

impl LoginConfig {
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if !(1..=7 * 24 * 60).contains(&self.session_minutes) {
            return Err(ConfigError::new(format!("{field}.session_minutes"), "must be from 1 to 10080 (a week)"));
        }
        Ok(())
    }
}

/// The two endpoints of the IdP's discovery document the flow uses.
#[derive(Debug, Clone, Deserialize)]
struct Endpoints {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

struct Pending {
    verifier: String,
    nonce: String,
    started: Instant,
}

struct WebSession {
    principal: Arc<Principal>,
    csrf: String,
    expires: Instant,
}

/// A sign-in started: send the browser to `redirect` with `cookie` set.
pub struct Started {
    pub redirect: String,
    pub cookie: String,
}

/// A session opened: `cookie` sets it, `clear_login` drops the login cookie.
pub struct Opened {
    pub cookie: String,
    pub clear_login: String,
}

pub struct Login {
    verifier: Arc<OidcVerifier>,
    http: reqwest::Client,
    redirect_uri: String,
    secure: bool,
    session_ttl: Duration,
    endpoints: tokio::sync::OnceCell<Endpoints>,
    pending: Mutex<HashMap<String, Pending>>,
    sessions: Mutex<HashMap<String, WebSession>>,
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::Forbidden { code: "sign_in_refused", message: message.into() }
}

fn random_token() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| ApiError::Internal(format!("no random source: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The value of cookie `name` in the request's `cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Equality whose time does not depend on where the inputs differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn session_key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Login {
    /// `public_url` is where browsers reach this service; the IdP sends them back to
    /// `{public_url}/auth/callback`.
    pub fn new(verifier: Arc<OidcVerifier>, config: &LoginConfig, http: reqwest::Client, public_url: &str) -> Login {
        Login {
            verifier,
            http,
            redirect_uri: format!("{public_url}/auth/callback"),
            secure: public_url.starts_with("https://"),
            session_ttl: Duration::from_secs(config.session_minutes * 60),
            endpoints: tokio::sync::OnceCell::new(),
            pending: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn cookie_attrs(&self, path: &str, max_age: Duration) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}", max_age.as_secs())
    }

    /// The IdP's endpoints, fetched from its discovery document once it has answered well.
    async fn endpoints(&self) -> Result<&Endpoints, ApiError> {
        self.endpoints
            .get_or_try_init(|| async {
                let issuer = &self.verifier.config().issuer;
                let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                let unavailable = |why: String| {
                    tracing::warn!(error = %why, "OIDC discovery failed");
                    ApiError::Internal(format!("the IdP's discovery document is unavailable: {why}"))
                };
                let resp = self.http.get(&url).send().await.map_err(|e| unavailable(e.without_url().to_string()))?;
                if !resp.status().is_success() {
                    return Err(unavailable(format!("HTTP {}", resp.status().as_u16())));
                }
                let doc: Endpoints = resp.json().await.map_err(|e| unavailable(e.without_url().to_string()))?;
                if doc.issuer != *issuer {
                    return Err(unavailable("its `issuer` is not oidc.issuer".into()));
                }
                Ok(doc)
            })
            .await
    }

    /// Starts a sign-in.
    pub async fn begin(&self) -> Result<Started, ApiError> {
        let endpoints = self.endpoints().await?;
        let (state, nonce, verifier) = (random_token()?, random_token()?, random_token()?);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        {
            let mut pending = self.pending.lock().map_err(|_| ApiError::Internal("sign-in table poisoned".into()))?;
            pending.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
            if pending.len() >= MAX_ENTRIES {
                return Err(refused("too many sign-ins under way; retry in a few minutes"));
            }
            pending.insert(state.clone(), Pending { verifier, nonce: nonce.clone(), started: Instant::now() });
        }
        let query = [
            ("response_type", "code"),
            ("client_id", self.verifier.config().audience.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", "openid"),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let mut redirect = reqwest::Url::parse(&endpoints.authorization_endpoint)
            .map_err(|_| ApiError::Internal("the IdP's authorization_endpoint is not a URL".into()))?;
        redirect.query_pairs_mut().extend_pairs(query);
        let cookie = format!("{LOGIN_COOKIE}={state}{}", self.cookie_attrs("/auth", LOGIN_TTL));
        Ok(Started { redirect: redirect.into(), cookie })
    }

    /// Completes a sign-in from the IdP's redirect back.
    pub async fn finish(&self, headers: &HeaderMap, code: &str, state: &str) -> Result<Opened, ApiError> {
        let pending = self.pending.lock().ok().and_then(|mut p| p.remove(state));
        let pending = pending
            .filter(|p| p.started.elapsed() < LOGIN_TTL)
            .ok_or_else(|| refused("unknown, expired or already used sign-in `state`; sign in again"))?;
        if !cookie(headers, LOGIN_COOKIE).is_some_and(|c| same(c, state)) {
            return Err(refused("this sign-in was started in another browser; sign in again"));
        }
        let endpoints = self.endpoints().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("client_id", self.verifier.config().audience.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let resp = self
            .http
            .post(&endpoints.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| ApiError::Internal(format!("the IdP's token endpoint failed: {}", e.without_url())))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let error = body["error"].as_str().unwrap_or("unknown").chars().take(64).collect::<String>();
            tracing::info!(status, error = %error, "IdP refused the code exchange");
            return Err(refused(format!("the IdP refused the code (HTTP {status}, {error}); sign in again")));
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            id_token: String,
        }
        let answer: TokenAnswer = resp.json().await.map_err(|_| refused("the IdP's answer has no `id_token`"))?;
        let principal = self.verifier.verify_id_token(&answer.id_token, &pending.nonce).map_err(|e| {
            tracing::info!(reason = %e, "ID token refused");
            refused(format!("the ID token was refused: {e}"))
        })?;
        let id = random_token()?;
        let session = WebSession {
            principal: Arc::new(principal),
            csrf: random_token()?,
            expires: Instant::now() + self.session_ttl,
        };
        {
            let mut sessions = self.sessions.lock().map_err(|_| ApiError::Internal("session table poisoned".into()))?;
            sessions.retain(|_, s| s.expires > Instant::now());
            if sessions.len() >= MAX_ENTRIES {
                return Err(refused("too many console sessions"));
            }
            sessions.insert(session_key(&id), session);
        }
        Ok(Opened {
            cookie: format!("{SESSION_COOKIE}={id}{}", self.cookie_attrs("/", self.session_ttl)),
            clear_login: format!("{LOGIN_COOKIE}={}", self.cookie_attrs("/auth", Duration::ZERO)),
        })
    }

    /// The signed-in principal of a request made with the session cookie and its CSRF
    /// token, if it has the cookie. Safe methods need no CSRF token; every other does.
    pub fn principal(&self, headers: &HeaderMap, method: &Method) -> Result<Option<Arc<Principal>>, ApiError> {
        let Some(id) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let (principal, csrf) = self.session(id).ok_or(ApiError::Unauthorized)?;
        if !(method == Method::GET || method == Method::HEAD) {
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !sent.is_some_and(|t| same(t, &csrf)) {
                return Err(ApiError::Forbidden {
                    code: "csrf_token_invalid",
                    message: format!("a call made with the console session cookie needs its `{CSRF_HEADER}` header"),
                });
            }
        }
        Ok(Some(principal))
    }

    /// The principal and CSRF token of a live session.
    pub fn session(&self, id: &str) -> Option<(Arc<Principal>, String)> {
        let sessions = self.sessions.lock().ok()?;
        let s = sessions.get(&session_key(id)).filter(|s| s.expires > Instant::now())?;
        Some((Arc::clone(&s.principal), s.csrf.clone()))
    }

    /// Ends the session `id`; the cookie returned clears it in the browser.
    pub fn logout(&self, id: &str) -> String {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(&session_key(id));
        }
        format!("{SESSION_COOKIE}={}", self.cookie_attrs("/", Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_several_headers_and_pairs() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, axum::http::HeaderValue::from_static("a=1; airlock_session=abc"));
        h.append(header::COOKIE, axum::http::HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "airlock"), None);
    }

    fn login(public_url: &str) -> Login {
        let config: super::super::oidc::OidcConfig = toml::from_str(
            "issuer = \"https://idp.example\"\naudience = \"airlock-console\"\njwks_file = \"/dev/null\"\n[login]\n",
        )
        .unwrap();
        config.validate("oidc").unwrap();
        let login_config = config.login.clone().unwrap();
        assert_eq!(login_config.session_minutes, 480, "an empty [oidc.login] takes the defaults");
        let verifier = Arc::new(OidcVerifier::new(config, airlock_filter::jwt::KeySet::empty()).unwrap());
        Login::new(verifier, &login_config, reqwest::Client::new(), public_url)
    }

    #[test]
    fn cookies_are_secure_exactly_when_the_console_is_served_over_https() {
        let attrs = login("https://airlock.example").cookie_attrs("/", Duration::from_secs(60));
        assert_eq!(attrs, "; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure");
        let attrs = login("http://127.0.0.1:8090").cookie_attrs("/", Duration::from_secs(60));
        assert_eq!(attrs, "; Path=/; Max-Age=60; HttpOnly; SameSite=Lax");
    }

    #[test]
    fn session_length_outside_a_minute_to_a_week_is_a_config_error() {
        let err = LoginConfig { session_minutes: 0 }.validate("oidc.login").unwrap_err();
        assert_eq!(err.field, "oidc.login.session_minutes");
        assert!(LoginConfig { session_minutes: 7 * 24 * 60 + 1 }.validate("oidc.login").is_err());
    }

    #[test]
    fn cookie_without_its_session_or_csrf_token_is_refused() {
        let l = login("http://127.0.0.1:8090");
        let mut h = HeaderMap::new();
        assert!(l.principal(&h, &Method::POST).unwrap().is_none(), "no cookie: not cookie-authenticated");
        h.insert(header::COOKIE, axum::http::HeaderValue::from_static("airlock_session=forged"));
        assert!(matches!(l.principal(&h, &Method::GET), Err(ApiError::Unauthorized)));
    }

    #[test]
    fn constant_time_equality_compares_whole_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("ab", "abc"));
    }
}
