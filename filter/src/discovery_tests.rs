//! OpenID Connect discovery as a key source: the document's checks, the config's, and
//! the two-step fetch (document, then the JWKS it names) driven against the mock host.

use jwt_simple::prelude::{Duration, HS256Key, MACLike};
use serde_json::{json, Value};

use super::*;
use crate::host::mock::MockHost;
use crate::jwt::{compile, AuthSpec, Discovery, DiscoveryError, JwksLocation, MAX_DISCOVERY_BYTES};
use crate::stats::DefineCounter;

const ISS: &str = "https://idp.example.com/realms/agents";
const AUD: &str = "airlock";
const SECRET: &[u8] = b"an-hmac-secret-long-enough-for-hs256!";

fn spec(discovery: Value) -> AuthSpec {
    let base = json!({"cluster": "idp", "authority": "idp.internal:8080", "issuer": ISS});
    let mut merged = base;
    for (k, v) in discovery.as_object().unwrap() {
        merged[k] = v.clone();
    }
    let issuers = json!([ISS, "http://localhost:9000"]);
    serde_json::from_value(json!({"issuers": issuers, "audiences": [AUD], "jwks": {"discovery": merged}})).unwrap()
}

fn auth_config(discovery: Value) -> AuthConfig {
    compile(spec(discovery), "auth").unwrap()
}

fn checks(discovery: Value) -> Discovery {
    auth_config(discovery).remote.unwrap().discovery.unwrap()
}

fn document(issuer: &str, jwks_uri: &str) -> Vec<u8> {
    json!({"issuer": issuer, "jwks_uri": jwks_uri, "id_token_signing_alg_values_supported": ["HS256"]})
        .to_string()
        .into_bytes()
}

fn jwks(kid: &str) -> Vec<u8> {
    let k = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, SECRET);
    json!({"keys": [{"kty": "oct", "kid": kid, "alg": "HS256", "k": k}]}).to_string().into_bytes()
}

fn token(kid: &str) -> String {
    let claims = jwt_simple::prelude::Claims::create(Duration::from_mins(10))
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_subject("alice");
    HS256Key::from_bytes(SECRET).with_key_id(kid).authenticate(claims).unwrap()
}

/// The authenticator for `discovery` settings and a host whose clock is a real one
/// (tokens are minted with the real time).
fn authenticator(discovery: Value) -> (Authenticator, MockHost) {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut host = MockHost { now_ms, ..MockHost::default() };
    let counters = FetchCounters {
        ok: host.define_counter("jwks.fetch_ok").unwrap(),
        failed: host.define_counter("jwks.fetch_failed").unwrap(),
    };
    (Authenticator::new(&mut auth_config(discovery), counters), host)
}

fn last_path(host: &MockHost) -> &str {
    &host.callouts.last().unwrap().1
}

// ---- the document ----

#[test]
fn a_document_naming_the_configured_issuer_yields_the_path_and_query_of_its_jwks_uri() {
    let checks = checks(json!({}));
    let doc = document(ISS, "https://idp.example.com/realms/agents/certs?v=2");
    let location = checks.jwks_location(&doc).unwrap();
    assert_eq!(location, JwksLocation { authority: "idp.example.com".into(), path: "/realms/agents/certs?v=2".into() });
}

#[test]
fn the_discovery_document_is_read_from_the_issuer_path_with_the_well_known_suffix() {
    assert_eq!(checks(json!({})).path, "/realms/agents/.well-known/openid-configuration");
    let issuers = json!(["https://idp.example.com/", "https://idp.example.com"]);
    for (issuer, path) in [
        ("https://idp.example.com/", "/.well-known/openid-configuration"),
        ("https://idp.example.com", "/.well-known/openid-configuration"),
    ] {
        let spec: AuthSpec = serde_json::from_value(json!({"issuers": issuers, "audiences": [AUD],
            "jwks": {"discovery": {"cluster": "idp", "authority": "idp", "issuer": issuer}}}))
        .unwrap();
        let fetch = compile(spec, "auth").unwrap().remote.unwrap();
        assert_eq!((fetch.authority.as_str(), fetch.path.as_str()), ("idp", path), "{issuer}");
    }
}

#[test]
fn an_issuer_that_differs_even_by_a_trailing_slash_or_case_is_refused() {
    let checks = checks(json!({}));
    for issuer in [format!("{ISS}/"), ISS.to_uppercase(), "https://evil.example".into()] {
        let err = checks.jwks_location(&document(&issuer, "https://idp.example.com/certs")).unwrap_err();
        assert_eq!(err, DiscoveryError::IssuerMismatch { found: issuer.clone() }, "{issuer}");
    }
    let forged = checks.jwks_location(&document("x\nairlock: all good", "https://idp.example.com/certs"));
    assert_eq!(forged, Err(DiscoveryError::IssuerMismatch { found: "x?airlock: all good".into() }), "one log line");
    let no_issuer = json!({"jwks_uri": "https://idp.example.com/certs"}).to_string();
    assert_eq!(checks.jwks_location(no_issuer.as_bytes()), Err(DiscoveryError::MissingIssuer));
}

#[test]
fn a_document_without_a_jwks_uri_string_is_refused() {
    let checks = checks(json!({}));
    for doc in [json!({"issuer": ISS}), json!({"issuer": ISS, "jwks_uri": 7})] {
        assert_eq!(checks.jwks_location(doc.to_string().as_bytes()), Err(DiscoveryError::MissingJwksUri), "{doc}");
    }
}

#[test]
fn a_document_that_is_not_a_json_object_or_too_large_is_refused() {
    let checks = checks(json!({}));
    for body in [&b"<html>login</html>"[..], b"[]", b"", b"\"https://idp.example.com\""] {
        assert_eq!(checks.jwks_location(body), Err(DiscoveryError::NotJson), "{body:?}");
    }
    let mut huge = document(ISS, "https://idp.example.com/certs");
    huge.truncate(huge.len() - 1);
    huge.extend_from_slice(format!(",\"pad\":\"{}\"}}", "x".repeat(MAX_DISCOVERY_BYTES)).as_bytes());
    assert_eq!(checks.jwks_location(&huge), Err(DiscoveryError::TooLarge));
}

#[test]
fn a_jwks_uri_on_a_host_not_allowed_is_refused_and_one_listed_is_followed() {
    let strict = checks(json!({}));
    let elsewhere = document(ISS, "https://keys.example.net/certs");
    assert_eq!(
        strict.jwks_location(&elsewhere),
        Err(DiscoveryError::AuthorityNotAllowed { authority: "keys.example.net".into() })
    );
    // The discovery authority and the issuer's host are allowed, the default port and
    // letter case do not make another host.
    for uri in ["https://IDP.example.com:443/certs", "https://idp.internal:8080/certs"] {
        assert!(strict.jwks_location(&document(ISS, uri)).is_ok(), "{uri}");
    }
    assert!(strict.jwks_location(&document(ISS, "https://idp.example.com:8443/certs")).is_err());

    let listed = checks(json!({"jwks_authorities": ["keys.example.net"]}));
    let location = listed.jwks_location(&elsewhere).unwrap();
    assert_eq!((location.authority.as_str(), location.path.as_str()), ("keys.example.net", "/certs"));
}

#[test]
fn an_http_jwks_uri_is_refused_for_an_https_issuer_and_followed_for_an_http_one() {
    let https = checks(json!({}));
    let err = https.jwks_location(&document(ISS, "http://idp.example.com/certs")).unwrap_err();
    assert_eq!(err, DiscoveryError::SchemeNotAllowed { scheme: "http".into() });

    let local = checks(json!({"issuer": "http://localhost:9000", "authority": "localhost:9000"}));
    let location = local.jwks_location(&document("http://localhost:9000", "http://localhost:9000/jwks")).unwrap();
    assert_eq!(location.path, "/jwks");
    assert!(local.jwks_location(&document("http://localhost:9000", "ftp://localhost:9000/jwks")).is_err());
}

#[test]
fn a_jwks_uri_with_user_information_a_fragment_or_no_host_is_refused() {
    let checks = checks(json!({}));
    for uri in [
        "https://user:pw@idp.example.com/certs",
        "https://idp.example.com/certs#k",
        "https:///certs",
        "/certs",
        "https://idp.example.com/ce rts",
    ] {
        let err = checks.jwks_location(&document(ISS, uri)).unwrap_err();
        assert!(matches!(err, DiscoveryError::BadJwksUri(_)), "{uri}: {err}");
    }
    // Nothing after the host is a request for `/`.
    assert_eq!(checks.jwks_location(&document(ISS, "https://idp.example.com")).unwrap().path, "/");
}

// ---- the config ----

#[test]
fn wrong_discovery_settings_are_refused_at_load_naming_their_field() {
    let cases = [
        (json!({"issuer": "https://other.example"}), "auth.jwks.discovery.issuer"),
        (json!({"issuer": "idp.example.com"}), "auth.jwks.discovery.issuer"),
        (json!({"issuer": "ftp://idp.example.com"}), "auth.jwks.discovery.issuer"),
        (json!({"issuer": "https://user@idp.example.com"}), "auth.jwks.discovery.issuer"),
        (json!({"cluster": ""}), "auth.jwks.discovery.cluster"),
        (json!({"authority": "idp/x"}), "auth.jwks.discovery.authority"),
        (json!({"jwks_authorities": ["ok.example", "a b"]}), "auth.jwks.discovery.jwks_authorities[1]"),
        (json!({"timeout_ms": 0}), "auth.jwks.discovery.timeout_ms"),
        (json!({"refresh_seconds": 0}), "auth.jwks.discovery.refresh_seconds"),
        (
            json!({"refresh_seconds": 5, "min_refresh_interval_seconds": 6}),
            "auth.jwks.discovery.min_refresh_interval_seconds",
        ),
    ];
    for (changes, field) in cases {
        let err = compile(spec(changes.clone()), "auth").unwrap_err();
        assert_eq!(err.field, field, "{changes}: {}", err.problem);
    }
    // An issuer with a query cannot be in `auth.issuers` unnoticed either.
    let with_query = "https://idp.example.com?tenant=a";
    let spec: AuthSpec = serde_json::from_value(json!({"issuers": [with_query], "audiences": [AUD],
        "jwks": {"discovery": {"cluster": "idp", "authority": "idp", "issuer": with_query}}}))
    .unwrap();
    assert_eq!(compile(spec, "auth").unwrap_err().field, "auth.jwks.discovery.issuer");
}

#[test]
fn the_discovery_issuer_outside_auth_issuers_is_refused_with_a_reason() {
    let err = compile(spec(json!({"issuer": "https://other.example"})), "auth").unwrap_err();
    assert!(err.problem.contains("auth.issuers"), "{}", err.problem);
}

// ---- the two-step fetch ----

#[test]
fn a_first_request_fetches_the_document_then_the_jwks_it_names_and_is_verified() {
    let (auth, mut host) = authenticator(json!({}));
    let jwt = token("k1");
    let now = host.now_ms / 1000;
    let Authentication::Fetching(first) = auth.authenticate(&mut host, &jwt, now) else { panic!("no fetch") };
    assert_eq!(host.callouts, vec![("idp".into(), "/realms/agents/.well-known/openid-configuration".into())]);

    let doc = document(ISS, "https://idp.example.com/realms/agents/certs");
    let Authentication::Fetching(second) = auth.keys_arrived(&mut host, first, Some(200), Some(&doc), &jwt) else {
        panic!("the JWKS was not fetched after the document")
    };
    assert_ne!(first, second);
    assert_eq!(host.callouts[1], ("idp".into(), "/realms/agents/certs".into()), "same cluster, the uri's path");

    let answer = auth.keys_arrived(&mut host, second, Some(200), Some(&jwks("k1")), &jwt);
    assert!(matches!(answer, Authentication::Verified(ref id) if id.subject == "alice"), "{answer:?}");
    assert_eq!((host.counter("jwks.fetch_ok"), host.counter("jwks.fetch_failed")), (1, 0));
    assert!(auth.keys.borrow().pending.is_empty());
}

#[test]
fn a_document_naming_another_issuer_leaves_no_keys_so_the_request_is_refused_503() {
    let (auth, mut host) = authenticator(json!({}));
    let jwt = token("k1");
    let now = host.now_ms / 1000;
    let Authentication::Fetching(call) = auth.authenticate(&mut host, &jwt, now) else { panic!() };
    let doc = document("https://evil.example", "https://idp.example.com/realms/agents/certs");
    let answer = auth.keys_arrived(&mut host, call, Some(200), Some(&doc), &jwt);
    let Authentication::Refused(reply) = answer else { panic!("{answer:?}") };
    assert_eq!(reply.status(), 503);
    assert_eq!(host.callouts.len(), 1, "the named JWKS is never fetched");
    assert_eq!(host.counter("jwks.fetch_failed"), 1);
    assert!(host.logs.iter().any(|l| l.contains("https://evil.example")), "{:?}", host.logs);
}

#[test]
fn a_failed_document_or_jwks_step_keeps_the_keys_already_cached() {
    let (auth, mut host) = authenticator(json!({"refresh_seconds": 60, "min_refresh_interval_seconds": 1}));
    auth.refresh(&mut host);
    auth.finish_fetch(&mut host, 1, Some(200), Some(&document(ISS, "https://idp.example.com/certs")));
    auth.finish_fetch(&mut host, 2, Some(200), Some(&jwks("k1")));
    let jwt = token("k1");
    let now = host.now_ms / 1000;
    assert!(matches!(auth.authenticate(&mut host, &jwt, now), Authentication::Verified(_)));

    for (status, body) in [(Some(503), None), (Some(200), Some(b"not json".to_vec())), (None, None)] {
        host.now_ms += 61_000;
        let before = host.callouts.len();
        auth.refresh(&mut host);
        assert_eq!(host.callouts.len(), before + 1, "a refresh is due");
        let call = host.callouts.len() as u32;
        assert_eq!(auth.finish_fetch(&mut host, call, status, body.as_deref()), FetchProgress::Finished);
        auth.verifier.borrow_mut().clear_cache();
        let now = host.now_ms / 1000;
        assert!(matches!(auth.authenticate(&mut host, &jwt, now), Authentication::Verified(_)), "{status:?}");
    }
    // The JWKS step failing after a good document keeps them too.
    host.now_ms += 61_000;
    auth.refresh(&mut host);
    let call = host.callouts.len() as u32;
    let next = auth.finish_fetch(&mut host, call, Some(200), Some(&document(ISS, "https://idp.example.com/certs")));
    let FetchProgress::Continues(keys_call) = next else { panic!("{next:?}") };
    auth.finish_fetch(&mut host, keys_call, Some(500), None);
    assert!(auth.has_keys());
    assert_eq!(host.counter("jwks.fetch_failed"), 4);
}

#[test]
fn each_refresh_rereads_the_document_and_follows_a_changed_jwks_uri() {
    let (auth, mut host) = authenticator(json!({"refresh_seconds": 60, "min_refresh_interval_seconds": 1}));
    let well_known = "/realms/agents/.well-known/openid-configuration";
    auth.refresh(&mut host);
    assert_eq!(last_path(&host), well_known);
    auth.finish_fetch(&mut host, 1, Some(200), Some(&document(ISS, "https://idp.example.com/keys/v1")));
    assert_eq!(last_path(&host), "/keys/v1");
    auth.finish_fetch(&mut host, 2, Some(200), Some(&jwks("old")));

    host.now_ms += 30_000;
    auth.refresh(&mut host);
    assert_eq!(host.callouts.len(), 2, "not due yet");

    host.now_ms += 31_000;
    auth.refresh(&mut host);
    assert_eq!(last_path(&host), well_known, "the document first, every time");
    auth.finish_fetch(&mut host, 3, Some(200), Some(&document(ISS, "https://idp.example.com/keys/v2")));
    assert_eq!(last_path(&host), "/keys/v2");
    auth.finish_fetch(&mut host, 4, Some(200), Some(&jwks("new")));

    let now = host.now_ms / 1000;
    assert!(matches!(auth.authenticate(&mut host, &token("new"), now), Authentication::Verified(_)));
    assert_eq!(host.counter("jwks.fetch_ok"), 2);
}

#[test]
fn unknown_kids_refetch_through_the_document_at_most_once_per_interval() {
    let (auth, mut host) = authenticator(json!({"refresh_seconds": 300, "min_refresh_interval_seconds": 10}));
    auth.refresh(&mut host);
    auth.finish_fetch(&mut host, 1, Some(200), Some(&document(ISS, "https://idp.example.com/certs")));
    auth.finish_fetch(&mut host, 2, Some(200), Some(&jwks("k1")));

    host.now_ms += 10_000;
    let rotated = token("k2");
    let now = host.now_ms / 1000;
    let Authentication::Fetching(call) = auth.authenticate(&mut host, &rotated, now) else { panic!("no refetch") };
    assert!(last_path(&host).ends_with("/openid-configuration"));
    // Forged kids right after: no further fetch, whatever their number.
    for i in 0..20 {
        let answer = auth.authenticate(&mut host, &token(&format!("forged-{i}")), now);
        assert!(matches!(answer, Authentication::Refused(_)), "{answer:?}");
    }
    assert_eq!(host.callouts.len(), 3);
    let doc = document(ISS, "https://idp.example.com/certs");
    let Authentication::Fetching(next) = auth.keys_arrived(&mut host, call, Some(200), Some(&doc), &rotated) else {
        panic!()
    };
    let answer = auth.keys_arrived(&mut host, next, Some(200), Some(&jwks("k2")), &rotated);
    assert!(matches!(answer, Authentication::Verified(_)), "{answer:?}");
}

#[test]
fn callouts_lost_with_their_request_are_forgotten_so_fetching_goes_on() {
    let (auth, mut host) = authenticator(json!({"timeout_ms": 2000}));
    let jwt = token("k1");
    // Four requests whose contexts go away before their fetch is answered.
    for _ in 0..MAX_FETCHES_IN_FLIGHT {
        let now = host.now_ms / 1000;
        assert!(matches!(auth.authenticate(&mut host, &jwt, now), Authentication::Fetching(_)));
    }
    let now = host.now_ms / 1000;
    assert!(matches!(auth.authenticate(&mut host, &jwt, now), Authentication::Refused(_)), "slots are full");

    host.now_ms += 2000 + FORGET_AFTER_TIMEOUT_MS + 1;
    let now = host.now_ms / 1000;
    assert!(matches!(auth.authenticate(&mut host, &jwt, now), Authentication::Fetching(_)));
    assert_eq!(auth.keys.borrow().pending.len(), 1);
}

#[test]
fn an_answer_to_a_callout_that_is_not_a_key_fetch_changes_nothing() {
    let (auth, mut host) = authenticator(json!({}));
    auth.refresh(&mut host);
    assert_eq!(auth.finish_fetch(&mut host, 99, Some(200), Some(&jwks("k1"))), FetchProgress::Finished);
    assert!(!auth.has_keys());
    assert_eq!(auth.keys.borrow().pending.len(), 1, "the real fetch is still awaited");
    assert_eq!(host.counter("jwks.fetch_failed"), 0);
}
