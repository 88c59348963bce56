//! The demo IdP's OAuth 2.0 token endpoint (`POST /oauth/token`, RFC 6749 §3.2), for the
//! filter's `oauth2_client_credentials` and `token_exchange` credentials: the client
//! credentials grant (§4.4) and the token exchange grant (RFC 8693 §2), with
//! `client_secret_basic` (§2.3.1) or `private_key_jwt` (RFC 7523 §2.2) client
//! authentication, answers and errors as §5.1 and §5.2 (and RFC 8693 §2.2) say.
//!
//! A token exchange takes a subject token this IdP signed itself (`/token`, its issuer and
//! audience; type `jwt` or `access_token`) and issues a token for the same subject and
//! groups, for the `audience` or `resource` asked, with `act` naming the client that
//! asked (RFC 8693 §4.1), living at most until the subject token ends. Subjects listed in
//! `AIRLOCK_DEMO_OAUTH_EXCHANGE_DENIED` (`alice,bob`) are refused with `invalid_target`.
//!
//! Clients are given by `AIRLOCK_DEMO_OAUTH_CLIENTS` (`id:secret,id:secret`) and
//! `AIRLOCK_DEMO_OAUTH_JWT_CLIENTS` (`id=public-key.pem,...`, ES256 or Ed25519 PEM; the
//! assertion's `aud` must be `AIRLOCK_DEMO_OAUTH_TOKEN_URL`, by default the issuer plus
//! `/oauth/token`, and a `jti` is accepted once), and the
//! lifetime of the tokens it issues by `AIRLOCK_DEMO_OAUTH_TTL` (seconds, default 300),
//! so tests can make them short. For tests, `GET /oauth/stats` counts the tokens issued
//! (and, under `exchanged`, those issued by exchange, per subject),
//! and `POST /oauth/outage` with `on` or `off` makes the endpoint answer 503 or serve
//! again. Like the rest of the demo IdP it only listens on loopback.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::json;

/// Lifetime of an issued token unless `AIRLOCK_DEMO_OAUTH_TTL` says otherwise.
const DEFAULT_TTL_SECS: u64 = 300;

struct TokenEndpoint {
    key: ES256KeyPair,
    issuer: String,
    clients: HashMap<String, String>,
    /// `private_key_jwt` clients: their public key PEM.
    jwt_clients: HashMap<String, String>,
    token_url: String,
    /// Assertion ids already used (RFC 7523 §3, item 7).
    seen_jti: Mutex<HashSet<String>>,
    ttl_secs: u64,
    issued: AtomicU64,
    /// Tokens issued by exchange, per subject.
    exchanged: Mutex<HashMap<String, u64>>,
    outage: AtomicBool,
    /// Subject tokens are verified as this IdP's own: its public key and audience.
    subject_key: ES256PublicKey,
    subject_audience: String,
    exchange_denied: HashSet<String>,
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The token endpoint's routes, signing with (a copy of) the IdP's `key`, id `kid`, as
/// `issuer`; subject tokens of an exchange must be the IdP's own, for `audience`.
pub fn router(key: &ES256KeyPair, kid: &str, issuer: String, audience: String) -> Result<Router, String> {
    let key =
        ES256KeyPair::from_bytes(&key.to_bytes()).map_err(|e| format!("cannot copy the key: {e}"))?.with_key_id(kid);
    let clients = parse_clients(&std::env::var("AIRLOCK_DEMO_OAUTH_CLIENTS").unwrap_or_default())?;
    let ttl_secs = match std::env::var("AIRLOCK_DEMO_OAUTH_TTL") {
        Ok(t) => {
            t.parse::<u64>().ok().filter(|t| *t > 0).ok_or("AIRLOCK_DEMO_OAUTH_TTL must be a number of seconds")?
        }
        Err(_) => DEFAULT_TTL_SECS,
    };
    let mut jwt_clients = HashMap::new();
    for entry in
        std::env::var("AIRLOCK_DEMO_OAUTH_JWT_CLIENTS").unwrap_or_default().split(',').filter(|e| !e.is_empty())
    {
        let (id, path) = entry.split_once('=').ok_or("AIRLOCK_DEMO_OAUTH_JWT_CLIENTS is `id=key.pem,...`")?;
        let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        jwt_clients.insert(id.to_string(), pem);
    }
    let token_url = std::env::var("AIRLOCK_DEMO_OAUTH_TOKEN_URL")
        .unwrap_or_else(|_| format!("{}/oauth/token", issuer.trim_end_matches('/')));
    let exchange_denied = std::env::var("AIRLOCK_DEMO_OAUTH_EXCHANGE_DENIED")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let state = Arc::new(TokenEndpoint {
        subject_key: key.public_key(),
        subject_audience: audience,
        exchange_denied,
        exchanged: Mutex::new(HashMap::new()),
        key,
        issuer,
        clients,
        jwt_clients,
        token_url,
        seen_jti: Mutex::new(HashSet::new()),
        ttl_secs,
        issued: AtomicU64::new(0),
        outage: AtomicBool::new(false),
    });
    Ok(Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/stats", get(stats))
        .route("/oauth/outage", post(outage))
        .with_state(state))
}

fn parse_clients(list: &str) -> Result<HashMap<String, String>, String> {
    list.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.split_once(':')
                .map(|(id, secret)| (id.to_string(), secret.to_string()))
                .ok_or_else(|| "AIRLOCK_DEMO_OAUTH_CLIENTS is `id:secret,id:secret`".to_string())
        })
        .collect()
}

async fn stats(State(ep): State<Arc<TokenEndpoint>>) -> Response {
    let exchanged = ep.exchanged.lock().map(|m| json!(*m)).unwrap_or_default();
    let doc = json!({"issued": ep.issued.load(Ordering::SeqCst), "exchanged": exchanged});
    ([(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

async fn outage(State(ep): State<Arc<TokenEndpoint>>, body: String) -> Response {
    ep.outage.store(body.trim() == "on", Ordering::SeqCst);
    StatusCode::NO_CONTENT.into_response()
}

/// A §5.2 error answer; `invalid_client` from Basic auth carries the challenge (401).
fn error(code: &str, description: &str) -> Response {
    let body = json!({"error": code, "error_description": description}).to_string();
    let mut headers =
        vec![(header::CONTENT_TYPE, "application/json".to_string()), (header::CACHE_CONTROL, "no-store".to_string())];
    let status = if code == "invalid_client" {
        headers.push((header::WWW_AUTHENTICATE, "Basic realm=\"airlock-demo\"".to_string()));
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut response = (status, body).into_response();
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Decodes `application/x-www-form-urlencoded`; a parameter given twice is refused
/// (RFC 6749 §3.2: parameters MUST NOT be included more than once).
pub fn parse_form(body: &str) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name)?;
        if params.insert(name.clone(), form_decode(value)?).is_some() {
            return Err(format!("`{name}` is given more than once"));
        }
    }
    Ok(params)
}

fn form_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("a bad percent-escape")?;
                out.push(byte);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_string())
}

/// A §5.2 error code and its description, answered by [`error`].
struct Refusal(&'static str, &'static str);

/// The client a request authenticates as: by its assertion when it has one, else by
/// Basic auth. Using both is refused (RFC 6749 §2.3: one method per request).
fn authenticate(ep: &TokenEndpoint, headers: &HeaderMap, params: &HashMap<String, String>) -> Result<String, Refusal> {
    let Some(assertion_type) = params.get("client_assertion_type") else { return authenticate_basic(ep, headers) };
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(Refusal("invalid_request", "more than one client authentication method"));
    }
    if assertion_type != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return Err(Refusal("invalid_request", "unsupported client_assertion_type"));
    }
    let refused = || Refusal("invalid_client", "client authentication failed");
    let assertion = params.get("client_assertion").ok_or(Refusal("invalid_request", "no client_assertion"))?;
    let metadata = Token::decode_metadata(assertion).map_err(|_| refused())?;
    // The client is who the assertion says it is (`sub`), checked against its key.
    let claimed: JWTClaims<NoCustomClaims> = {
        let payload = assertion.split('.').nth(1).ok_or_else(refused)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| refused())?;
        serde_json::from_slice(&bytes).map_err(|_| refused())?
    };
    let id = claimed.subject.ok_or_else(refused)?;
    if params.get("client_id").is_some_and(|given| *given != id) {
        return Err(refused());
    }
    let pem = ep.jwt_clients.get(&id).ok_or_else(refused)?;
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([id.clone()])),
        allowed_audiences: Some(HashSet::from([ep.token_url.clone()])),
        time_tolerance: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let claims = match metadata.algorithm() {
        "ES256" => {
            ES256PublicKey::from_pem(pem).and_then(|k| k.verify_token::<NoCustomClaims>(assertion, Some(options)))
        }
        "EdDSA" => {
            Ed25519PublicKey::from_pem(pem).and_then(|k| k.verify_token::<NoCustomClaims>(assertion, Some(options)))
        }
        _ => return Err(refused()),
    }
    .map_err(|_| refused())?;
    let jti = claims.jwt_id.ok_or_else(refused)?;
    if claims.expires_at.is_none() || !ep.seen_jti.lock().map_err(|_| refused())?.insert(jti) {
        return Err(refused());
    }
    Ok(id)
}

/// The client `client_secret_basic` names, if its secret is right.
fn authenticate_basic(ep: &TokenEndpoint, headers: &HeaderMap) -> Result<String, Refusal> {
    let refused = || Refusal("invalid_client", "client authentication failed");
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(refused)?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(refused)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| refused())?;
    let decoded = String::from_utf8(decoded).map_err(|_| refused())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(refused)?;
    let (id, secret) = (form_decode(id).map_err(|_| refused())?, form_decode(secret).map_err(|_| refused())?);
    match ep.clients.get(&id) {
        Some(known) if *known == secret => Ok(id),
        _ => Err(refused()),
    }
}

async fn token(State(ep): State<Arc<TokenEndpoint>>, headers: HeaderMap, body: String) -> Response {
    if ep.outage.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "the token endpoint is down (outage on)\n").into_response();
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().is_some_and(|t| t.trim() == "application/x-www-form-urlencoded"));
    if !form_type {
        return error("invalid_request", "the body must be application/x-www-form-urlencoded");
    }
    let params = match parse_form(&body) {
        Ok(params) => params,
        Err(problem) => return error("invalid_request", &problem),
    };
    let client_id = match authenticate(&ep, &headers, &params) {
        Ok(id) => id,
        Err(Refusal(code, description)) => return error(code, description),
    };
    let issued = match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => client_credentials(&ep, &client_id, &params),
        Some(TOKEN_EXCHANGE) => token_exchange(&ep, &client_id, &params),
        Some(_) => Err(Refusal("unsupported_grant_type", "only client_credentials and token-exchange are supported")),
        None => Err(Refusal("invalid_request", "`grant_type` is missing")),
    };
    let issued = match issued {
        Ok(issued) => issued,
        Err(Refusal(code, description)) => return error(code, description),
    };
    let access_token = match ep.key.sign(issued.claims) {
        Ok(t) => t,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot sign: {e}\n")).into_response(),
    };
    ep.issued.fetch_add(1, Ordering::SeqCst);
    let mut answer = serde_json::Map::new();
    answer.insert("access_token".into(), json!(access_token));
    answer.insert("token_type".into(), json!("Bearer"));
    answer.insert("expires_in".into(), json!(issued.expires_in));
    if let Some(issued_type) = issued.issued_token_type {
        answer.insert("issued_token_type".into(), json!(issued_type));
    }
    if let Some(scope) = params.get("scope") {
        answer.insert("scope".into(), json!(scope));
    }
    (
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        serde_json::Value::Object(answer).to_string(),
    )
        .into_response()
}

/// What a grant issues: the claims to sign, for how long, and of what type (RFC 8693).
struct Issue {
    claims: JWTClaims<serde_json::Map<String, serde_json::Value>>,
    expires_in: u64,
    issued_token_type: Option<&'static str>,
}

fn client_credentials(ep: &TokenEndpoint, client_id: &str, params: &HashMap<String, String>) -> Result<Issue, Refusal> {
    let mut custom = serde_json::Map::new();
    custom.insert("client_id".into(), json!(client_id));
    if let Some(scope) = params.get("scope") {
        custom.insert("scope".into(), json!(scope));
    }
    let n = ep.issued.load(Ordering::SeqCst) + 1;
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(ep.ttl_secs))
        .with_issuer(&ep.issuer)
        .with_subject(client_id)
        .with_jwt_id(format!("{client_id}-{n}"));
    if let Some(audience) = params.get("audience") {
        claims = claims.with_audience(audience);
    }
    Ok(Issue { claims, expires_in: ep.ttl_secs, issued_token_type: None })
}

/// RFC 8693 §2.1: the subject token (this IdP's own) exchanged for one for the audience
/// or resource asked, for the same subject, acted on by the client.
fn token_exchange(ep: &TokenEndpoint, client_id: &str, params: &HashMap<String, String>) -> Result<Issue, Refusal> {
    if params.contains_key("actor_token") {
        return Err(Refusal("invalid_request", "actor tokens are not supported"));
    }
    let subject_token = params.get("subject_token").ok_or(Refusal("invalid_request", "no subject_token"))?;
    match params.get("subject_token_type").map(String::as_str) {
        Some(JWT_TYPE | ACCESS_TOKEN_TYPE) => {}
        Some(_) => return Err(Refusal("invalid_request", "unsupported subject_token_type")),
        None => return Err(Refusal("invalid_request", "no subject_token_type")),
    }
    let issued_token_type = match params.get("requested_token_type").map(String::as_str) {
        None | Some(ACCESS_TOKEN_TYPE) => ACCESS_TOKEN_TYPE,
        Some(JWT_TYPE) => JWT_TYPE,
        Some(_) => return Err(Refusal("invalid_request", "unsupported requested_token_type")),
    };
    let target = params.get("audience").or_else(|| params.get("resource"));
    let Some(target) = target else { return Err(Refusal("invalid_target", "name an audience or resource")) };
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([ep.issuer.clone()])),
        allowed_audiences: Some(HashSet::from([ep.subject_audience.clone()])),
        ..Default::default()
    };
    let subject = ep
        .subject_key
        .verify_token::<serde_json::Map<String, serde_json::Value>>(subject_token, Some(options))
        .map_err(|_| Refusal("invalid_request", "the subject_token is not valid"))?;
    let sub = subject.subject.clone().ok_or(Refusal("invalid_request", "the subject_token names no subject"))?;
    if ep.exchange_denied.contains(&sub) {
        return Err(Refusal("invalid_target", "this subject may not have a token for that audience"));
    }
    let now = Clock::now_since_epoch().as_secs();
    let subject_left = subject.expires_at.map_or(0, |e| e.as_secs().saturating_sub(now));
    let expires_in = ep.ttl_secs.min(subject_left).max(1);
    let mut custom = serde_json::Map::new();
    custom.insert("client_id".into(), json!(client_id));
    custom.insert("act".into(), json!({"sub": client_id}));
    if let Some(groups) = subject.custom.get("groups") {
        custom.insert("groups".into(), groups.clone());
    }
    if let Some(scope) = params.get("scope") {
        custom.insert("scope".into(), json!(scope));
    }
    let n = {
        let mut exchanged = ep.exchanged.lock().map_err(|_| Refusal("server_error", "poisoned"))?;
        let count = exchanged.entry(sub.clone()).or_insert(0);
        *count += 1;
        *count
    };
    let claims = Claims::with_custom_claims(custom, Duration::from_secs(expires_in))
        .with_issuer(&ep.issuer)
        .with_subject(&sub)
        .with_audience(target)
        .with_jwt_id(format!("exchange-{sub}-{n}"));
    Ok(Issue { claims, expires_in, issued_token_type: Some(issued_token_type) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_decoded_and_a_repeated_parameter_refused() {
        let form = parse_form("grant_type=client_credentials&scope=read+write%21").unwrap();
        assert_eq!(form["scope"], "read write!");
        assert!(parse_form("scope=a&scope=b").unwrap_err().contains("more than once"));
        assert!(parse_form("scope=%zz").is_err());
    }
}
