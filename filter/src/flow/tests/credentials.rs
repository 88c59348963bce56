//! Upstream credentials made per request: `signed_request` tokens (bound to the request,
//! minted once its body is complete) and secrets fetched from the control service.

use super::*;
use crate::credentials::signed::test_keys::{ED25519_PEM, ES256_PEM};
use crate::credentials::signed::{request_binding, RequestSigner, SigningAlg};
use crate::credentials::Secret;
use crate::jwt::KeySet;
use serde_json::{json, Value};

fn signed_upstream(pem: &str, alg: &str) -> Value {
    json!({"upstreams": [{"cluster": "db", "credential": {
        "type": "signed_request", "key": {"value": pem}, "key_id": "airlock-1", "alg": alg,
        "issuer": "https://airlock.test", "audience": "customer-db", "lifetime_s": 20}}]})
}

fn signed_fixture(pem: &str, alg: &str) -> Fixture {
    Fixture::new(config(json!({"inline": jwks()}), standard_rules(), signed_upstream(pem, alg)))
}

/// Verifies `header` (`Bearer <jwt>`) with the filter's own verifier against the public
/// key of `pem`, and returns the claims.
fn verified_claims(header: &str, pem: &str, alg: SigningAlg) -> Value {
    let signer = RequestSigner::new(alg, &Secret::new(pem), "airlock-1".into(), "i".into(), "a".into(), 1).unwrap();
    let doc = json!({"keys": [signer.public_jwk()]}).to_string();
    let keys = KeySet::from_jwks_json(doc.as_bytes()).unwrap();
    let token = header.strip_prefix("Bearer ").expect("a bearer token");
    let options = VerificationOptions { accept_future: true, ..Default::default() };
    let alg = crate::jwt::Algorithm::from_name(alg.name()).unwrap();
    keys.named(Some("airlock-1")).next().unwrap().verify(alg, token, options).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn feed_body(flow: &mut RequestFlow, host: &mut MockHost, body: &[u8], end: bool) -> Next {
    host.request_body = body.to_vec();
    flow.on_request_body(host, body.len(), end)
}

#[test]
fn a_get_carries_a_token_naming_the_caller_and_bound_to_its_method_and_path() {
    for (pem, alg) in [(ES256_PEM, SigningAlg::ES256), (ED25519_PEM, SigningAlg::EdDSA)] {
        let f = signed_fixture(pem, alg.name());
        let mut host = request("GET", "/customers?id=7", Some(&token("alice", &["support"])));
        assert_eq!(f.flow().on_request_headers(&mut host, true), Next::Continue);
        let claims = verified_claims(host.header("authorization").unwrap(), pem, alg);
        assert_eq!(claims["iss"], "https://airlock.test");
        assert_eq!(claims["aud"], "customer-db");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["act"], json!({"sub": "https://airlock.test"}));
        assert_eq!(claims["groups"], json!(["support"]));
        assert_eq!(claims["jti"], "req-1");
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 20);
        assert_eq!(claims["iat"].as_u64().unwrap(), host.now_ms / 1000);
        assert_eq!(claims["req_sha256"], request_binding("GET", "/customers?id=7", b""));
        assert_eq!(f.counter(&host, "credentials.signed"), 1);
    }
}

#[test]
fn a_body_is_held_until_complete_and_the_token_binds_it() {
    let f = signed_fixture(ES256_PEM, "ES256");
    let mut flow = f.flow();
    // PATCH: no rule reads its body, so only the credential waits for it.
    let mut host = request("PATCH", "/customers", Some(&token("alice", &["support"])));
    // Allowed on the headers, but the token is bound to a body not seen yet.
    assert_eq!(flow.on_request_headers(&mut host, false), Next::Pause);
    assert_eq!(host.header("authorization"), None, "no credential before the body is complete");
    assert_eq!(feed_body(&mut flow, &mut host, br#"{"name": "#, false), Next::Pause);
    let body = br#"{"name": "ivy"}"#;
    assert_eq!(feed_body(&mut flow, &mut host, body, true), Next::Continue);
    let claims = verified_claims(host.header("authorization").unwrap(), ES256_PEM, SigningAlg::ES256);
    assert_eq!(claims["req_sha256"], request_binding("PATCH", "/customers", body));
    assert_ne!(claims["req_sha256"], request_binding("PATCH", "/customers", br#"{"name": "eve"}"#));
}

#[test]
fn a_body_over_the_hold_limit_is_refused_and_never_sent_unsigned() {
    let f = signed_fixture(ED25519_PEM, "EdDSA");
    let mut flow = f.flow();
    let mut host = request("PATCH", "/customers", Some(&token("alice", &["support"])));
    assert_eq!(flow.on_request_headers(&mut host, false), Next::Pause);
    assert_eq!(feed_body(&mut flow, &mut host, &[b'x'; 65], false), Next::Pause);
    assert_eq!(host.reply_status(), Some(413));
    let error = &host.reply_json()["error"];
    assert_eq!(error["code"], "request_body_too_large");
    assert!(error["message"].as_str().unwrap().contains("signed_request"), "{error}");
    assert_eq!(host.header("authorization"), None);
}

#[test]
fn the_audit_record_names_the_kind_and_key_id_and_holds_neither_token() {
    let f = signed_fixture(ES256_PEM, "ES256");
    let mut flow = f.flow();
    let agent = token("alice", &["support"]);
    let mut host = request("GET", "/customers", Some(&agent));
    flow.on_request_headers(&mut host, true);
    let minted = host.header("authorization").unwrap().trim_start_matches("Bearer ").to_string();
    flow.on_log(&mut host);
    let (batch, _) = f.vm.audit.borrow_mut().next_batch(0, 10).unwrap();
    let record = &serde_json::from_str::<Value>(&batch).unwrap()["records"][0];
    assert_eq!(record["credential"], json!({"kind": "signed_request", "key_id": "airlock-1"}));
    for secret in [agent.as_str(), minted.as_str(), minted.rsplit('.').next().unwrap()] {
        assert!(!batch.contains(secret));
        assert!(!host.logs.iter().any(|l| l.contains(secret)));
    }
}

#[test]
fn a_refused_request_mints_no_token() {
    let f = signed_fixture(ES256_PEM, "ES256");
    let mut host = request("GET", "/customers", Some(&token("mallory", &["guests"])));
    assert_eq!(f.flow().on_request_headers(&mut host, true), Next::Pause);
    assert_eq!(host.reply_status(), Some(403));
    assert_eq!(f.counter(&host, "credentials.signed"), 0);
}

fn config_error(extra: Value) -> crate::config_error::ConfigError {
    let c = config(json!({"inline": jwks()}), standard_rules(), extra);
    Config::from_json(c.to_string().as_bytes(), &|_| None).err().expect("the config is refused")
}

#[test]
fn signed_request_settings_are_checked_at_load_by_field() {
    let with = |field: &str, value: Value| {
        let mut extra = signed_upstream(ES256_PEM, "ES256");
        extra["upstreams"][0]["credential"][field] = value;
        config_error(extra)
    };
    assert_eq!(with("lifetime_s", json!(61)).field, "upstreams[0].credential.lifetime_s");
    assert_eq!(with("alg", json!("EdDSA")).field, "upstreams[0].credential.key");
    assert_eq!(with("key", json!({"value": "not a key"})).field, "upstreams[0].credential.key");
    assert_eq!(with("key", json!({"control": "signing"})).field, "upstreams[0].credential.key.control");
    assert_eq!(with("key_id", json!("")).field, "upstreams[0].credential.key_id");
    assert_eq!(with("audience", json!("")).field, "upstreams[0].credential.audience");
    assert_eq!(with("alg", json!("RS256")).field, "upstreams[0].credential.alg");
    let mut extra = signed_upstream(ES256_PEM, "ES256");
    extra["hold"] = json!({"by": "buffer_filter"});
    let err = config_error(extra);
    assert_eq!(err.field, "upstreams[0].credential.type");
    assert!(err.problem.contains("hold.by"), "{err}");
    assert!(!with("key", json!({"value": "not a key"})).to_string().contains("not a key"));
}

// ---- secrets held by the control service ---------------------------------------------

fn control_upstreams() -> Value {
    json!({"upstreams": [
        {"cluster": "db", "credential": {"type": "bearer", "token": {"control": "db-token", "ttl_seconds": 60}}},
        {"cluster": "crm", "credential": {"type": "basic", "username": "svc", "password": {"control": "crm-pw"}}}
    ]})
}

fn control_fixture() -> Fixture {
    Fixture::new(config(json!({"inline": jwks()}), standard_rules(), control_upstreams()))
}

/// The root context's tick on `host`: the secret fetches it made.
fn tick(f: &Fixture, host: &mut MockHost) -> Vec<(u32, usize)> {
    f.vm.refresh_secrets(host)
}

fn answer(f: &Fixture, host: &mut MockHost, secret: usize, status: Option<u32>, value: &str) {
    let body = json!({"value": value}).to_string();
    f.vm.finish_secret_fetch(host, secret, status, Some(body.as_bytes()));
}

fn send(f: &Fixture, now_ms: u64, shared: &crate::host::mock::SharedData) -> MockHost {
    let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
    host.now_ms = now_ms;
    host.shared = Rc::clone(shared);
    f.flow().on_request_headers(&mut host, true);
    host
}

#[test]
fn a_secret_never_fetched_fails_the_request_closed_with_a_retry_hint() {
    let f = control_fixture();
    let host = send(&f, now() * 1000, &Default::default());
    assert_eq!(host.reply_status(), Some(503));
    let error = &host.reply_json()["error"];
    assert_eq!((error["code"].as_str(), error["retry"].as_str()), (Some("dependency_unavailable"), Some("later")));
    let headers = &host.reply.as_ref().unwrap().1;
    assert!(headers.iter().any(|(n, v)| n == "retry-after" && v == "1"), "{headers:?}");
    assert_eq!(host.header("authorization"), None);
}

#[test]
fn a_fetched_secret_is_formatted_per_kind_and_shared_with_the_other_workers() {
    let (a, b) = (control_fixture(), control_fixture());
    let shared: crate::host::mock::SharedData = Default::default();
    let start = now() * 1000;
    let mut root_a = MockHost { now_ms: start, shared: Rc::clone(&shared), ..MockHost::default() };
    let calls = tick(&a, &mut root_a);
    assert_eq!(calls.len(), 2);
    assert_eq!(root_a.callouts[0], ("control".to_string(), "/v1/secrets/db-token".to_string()));
    assert_eq!(root_a.callouts[1].1, "/v1/secrets/crm-pw");
    answer(&a, &mut root_a, 0, Some(200), "token-v1");
    answer(&a, &mut root_a, 1, Some(200), "pw");
    assert_eq!(send(&a, start, &shared).header("authorization"), Some("Bearer token-v1"));
    let mut crm = request("GET", "/customers", Some(&token("alice", &["support"])));
    crm.cluster = Some("crm".into());
    crm.shared = Rc::clone(&shared);
    a.flow().on_request_headers(&mut crm, true);
    assert_eq!(crm.header("authorization"), Some("Basic c3ZjOnB3"));

    // The other worker fetches nothing: it takes the value from shared data.
    let mut root_b = MockHost { now_ms: start + 500, shared: Rc::clone(&shared), ..MockHost::default() };
    assert!(tick(&b, &mut root_b).is_empty());
    assert_eq!(send(&b, start + 500, &shared).header("authorization"), Some("Bearer token-v1"));
    assert_eq!(a.counter(&root_a, "credentials.secret_fetch_ok"), 2);
}

#[test]
fn a_secret_is_refreshed_ahead_of_its_ttl_and_kept_while_the_service_is_down() {
    let f = control_fixture();
    let shared: crate::host::mock::SharedData = Default::default();
    let start = now() * 1000;
    let mut root = MockHost { now_ms: start, shared: Rc::clone(&shared), ..MockHost::default() };
    tick(&f, &mut root);
    answer(&f, &mut root, 0, Some(200), "token-v1");
    answer(&f, &mut root, 1, Some(200), "pw");
    root.callouts.clear();
    root.now_ms = start + 44_000;
    assert!(tick(&f, &mut root).is_empty(), "not due before three quarters of the 60 s TTL");
    root.now_ms = start + 45_000;
    let calls = tick(&f, &mut root);
    assert_eq!(calls, vec![(1, 0)], "only db-token is due; crm-pw has the default 300 s TTL");
    root.now_ms += 10;
    assert!(tick(&f, &mut root).is_empty(), "one fetch in flight at a time");

    // The service is down: the value fetched before stays in use.
    f.vm.finish_secret_fetch(&mut root, 0, None, None);
    assert_eq!(f.counter(&root, "credentials.secret_fetch_failed"), 1);
    assert!(root.logs.iter().any(|l| l.contains("`db-token`") && l.contains("stays in use")), "{:?}", root.logs);
    assert_eq!(send(&f, start + 90_000, &shared).header("authorization"), Some("Bearer token-v1"));

    // Retried after a second; the rotated value is used from then on.
    root.now_ms += 500;
    assert!(tick(&f, &mut root).is_empty(), "a failed fetch waits a second");
    root.now_ms += 600;
    assert_eq!(tick(&f, &mut root).len(), 1);
    answer(&f, &mut root, 0, Some(200), "token-v2");
    assert_eq!(send(&f, root.now_ms, &shared).header("authorization"), Some("Bearer token-v2"));
    assert!(!root.logs.iter().any(|l| l.contains("token-v")), "values are never logged: {:?}", root.logs);
}

#[test]
fn a_value_that_cannot_go_in_a_header_or_an_unknown_name_is_a_failed_fetch() {
    let f = control_fixture();
    let mut root = MockHost { now_ms: now() * 1000, ..MockHost::default() };
    tick(&f, &mut root);
    answer(&f, &mut root, 0, Some(200), "line\r\nx-injected: 1");
    f.vm.finish_secret_fetch(&mut root, 1, Some(404), Some(br#"{"error":{}}"#));
    assert!(f.vm.secrets.current(0).is_none() && f.vm.secrets.current(1).is_none());
    assert_eq!(f.counter(&root, "credentials.secret_fetch_failed"), 2);
    assert!(root.logs.iter().any(|l| l.contains("`crm-pw`") && l.contains("404")), "{:?}", root.logs);
    assert!(!root.logs.iter().any(|l| l.contains("x-injected")), "{:?}", root.logs);
}

#[test]
fn control_secrets_are_checked_at_load_by_field() {
    let mut no_control = config(json!({"inline": jwks()}), json!([]), control_upstreams());
    no_control.as_object_mut().unwrap().remove("control");
    let err = Config::from_json(no_control.to_string().as_bytes(), &|_| None).err().unwrap();
    assert_eq!(err.field, "upstreams");
    assert!(err.problem.contains("db-token"), "{err}");
    let mut extra = control_upstreams();
    extra["upstreams"][0]["credential"]["token"]["ttl_seconds"] = json!(1);
    assert_eq!(config_error(extra).field, "upstreams[0].credential.token.ttl_seconds");
    let mut extra = control_upstreams();
    extra["upstreams"][0]["credential"]["token"] = json!({"value": "x", "ttl_seconds": 60});
    assert_eq!(config_error(extra).field, "upstreams[0].credential.token.ttl_seconds");
    let mut extra = control_upstreams();
    extra["upstreams"][0]["credential"]["token"] = json!({"control": "../admin"});
    assert_eq!(config_error(extra).field, "upstreams[0].credential.token.control");
}

#[test]
fn while_one_worker_fetches_a_secret_the_others_wait_for_its_answer() {
    let (a, b) = (control_fixture(), control_fixture());
    let shared: crate::host::mock::SharedData = Default::default();
    let start = now() * 1000;
    let mut root_a = MockHost { now_ms: start, shared: Rc::clone(&shared), ..MockHost::default() };
    let mut root_b = MockHost { now_ms: start, shared: Rc::clone(&shared), ..MockHost::default() };
    assert_eq!(tick(&a, &mut root_a).len(), 2);
    assert!(tick(&b, &mut root_b).is_empty(), "the lease is held by the first worker");
    // The first worker's fetch failed: after the retry pause, any worker may try.
    a.vm.finish_secret_fetch(&mut root_a, 0, None, None);
    root_b.now_ms = start + 1000;
    assert_eq!(tick(&b, &mut root_b), vec![(1, 0)]);
}
