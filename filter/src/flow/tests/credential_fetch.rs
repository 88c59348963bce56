//! Credentials an allowed request waits for. `token_exchange`: with no exchanged token
//! cached for its caller's token, the request pauses on the exchange and resumes with the
//! new token, or is refused; later requests with the same token use the cached one.
//! `oauth2_client_credentials`: a request that finds no token held (the VM's first
//! requests) fetches one and waits for it.

use super::*;
use crate::credentials::exchange::ACCESS_TOKEN_TYPE;
use serde_json::{json, Value};

fn exchange_upstream() -> Value {
    json!({"upstreams": [{"cluster": "db", "credential": {
        "type": "token_exchange",
        "token_endpoint": {"cluster": "idp", "authority": "idp.test", "path": "/oauth/token"},
        "client_id": "airlock", "client_secret": {"value": "client-secret"},
        "audience": "customer-db", "scope": "customers:read"}}]})
}

fn fixture() -> Fixture {
    Fixture::new(config(json!({"inline": jwks()}), standard_rules(), exchange_upstream()))
}

fn issued(token: &str) -> Vec<u8> {
    json!({"access_token": token, "token_type": "Bearer", "expires_in": 300, "issued_token_type": ACCESS_TOKEN_TYPE})
        .to_string()
        .into_bytes()
}

#[test]
fn a_request_waits_for_its_callers_token_to_be_exchanged_then_carries_the_new_token() {
    let f = fixture();
    let agent = token("alice", &["support"]);
    let mut flow = f.flow();
    let mut host = request("GET", "/customers", Some(&agent));
    assert_eq!(flow.on_request_headers(&mut host, true), Next::Pause, "waits for the exchange");
    assert_eq!(host.callouts, [("idp".to_string(), "/oauth/token".to_string())]);
    let form = String::from_utf8(host.callout_bodies[0].clone()).unwrap();
    assert!(form.ends_with(&format!("subject_token={agent}")), "{form}");
    assert_eq!(host.header("authorization"), None, "nothing set before the answer");
    flow.on_callout_response(&mut host, 1, Some(200), Some(issued("for-alice")));
    assert_eq!(host.header("authorization"), Some("Bearer for-alice"));
    assert_eq!(host.resumed, 1);
    assert_eq!(f.counter(&host, "credentials.exchange_ok"), 1);

    // The same token again: the cached exchange, no callout.
    let mut again = request("GET", "/customers", Some(&agent));
    assert_eq!(f.flow().on_request_headers(&mut again, true), Next::Continue);
    assert_eq!(again.header("authorization"), Some("Bearer for-alice"));
    assert!(again.callouts.is_empty());

    // Another caller: its own exchange.
    let mut other = request("GET", "/customers", Some(&token("bob", &["support"])));
    assert_eq!(f.flow().on_request_headers(&mut other, true), Next::Pause);
    assert_eq!(other.callouts.len(), 1);
}

#[test]
fn a_refused_exchange_is_403_credential_refused_and_an_outage_503_with_a_retry_hint() {
    let f = fixture();
    let refused = br#"{"error":"invalid_target"}"#.to_vec();
    let cases = [
        (Some(400), Some(refused), 403, "credential_refused"),
        (Some(503), None, 503, "dependency_unavailable"),
        (None, None, 503, "dependency_unavailable"),
    ];
    for (status, body, expected, code) in cases {
        let mut flow = f.flow();
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        assert_eq!(flow.on_request_headers(&mut host, true), Next::Pause);
        flow.on_callout_response(&mut host, 1, status, body);
        assert_eq!(host.reply_status(), Some(expected));
        assert_eq!(host.reply_json()["error"]["code"], code);
        assert_eq!(host.header("authorization"), None, "never forwarded");
        assert_eq!(host.resumed, 0);
        assert_eq!(f.counter(&host, "credentials.exchange_failed"), 1);
        assert_eq!(f.counter(&host, "credentials.refused"), u64::from(expected == 403));
    }
}

#[test]
fn a_body_arriving_during_the_exchange_is_held_and_the_audit_names_the_kind_not_a_token() {
    let f = fixture();
    let agent = token("alice", &["support"]);
    let mut flow = f.flow();
    let mut host = request("PATCH", "/customers", Some(&agent));
    assert_eq!(flow.on_request_headers(&mut host, false), Next::Pause);
    host.request_body = br#"{"name":"ivy"}"#.to_vec();
    assert_eq!(flow.on_request_body(&mut host, 14, true), Next::Pause, "held while the exchange is out");
    flow.on_callout_response(&mut host, 1, Some(200), Some(issued("for-alice")));
    assert_eq!(host.header("authorization"), Some("Bearer for-alice"));
    flow.on_log(&mut host);
    let (batch, _) = f.vm.audit.borrow_mut().next_batch(0, 10).unwrap();
    let record = &serde_json::from_str::<Value>(&batch).unwrap()["records"][0];
    assert_eq!(record["credential"], json!({"kind": "token_exchange", "key_id": "airlock"}));
    for secret in [agent.as_str(), "for-alice", "client-secret"] {
        assert!(!batch.contains(secret), "{secret} in the record");
        assert!(!host.logs.iter().any(|l| l.contains(secret)), "{secret} logged");
    }
}

#[test]
fn token_exchange_settings_are_checked_at_load_by_field() {
    let with = |field: &str, value: Value| {
        let mut extra = exchange_upstream();
        extra["upstreams"][0]["credential"][field] = value;
        let c = config(json!({"inline": jwks()}), standard_rules(), extra);
        Config::from_json(c.to_string().as_bytes(), &|_| None).err().expect("the config is refused").field
    };
    assert_eq!(with("audience", Value::Null), "upstreams[0].credential.audience");
    assert_eq!(with("scope", json!("")), "upstreams[0].credential.scope");
    assert_eq!(with("requested_token_type", json!("jwt")), "upstreams[0].credential.requested_token_type");
    assert_eq!(with("cache_entries", json!(0)), "upstreams[0].credential.cache_entries");
    assert_eq!(with("client_secret", json!({"control": "x"})), "upstreams[0].credential.client_secret.control");
    let mut extra = exchange_upstream();
    extra["hold"] = json!({"by": "buffer_filter"});
    let c = config(json!({"inline": jwks()}), standard_rules(), extra);
    let err = Config::from_json(c.to_string().as_bytes(), &|_| None).err().unwrap();
    assert_eq!(err.field, "upstreams[0].credential.type");
}

fn oauth_fixture(hold: Value) -> Fixture {
    let mut extra = json!({"upstreams": [{"cluster": "db", "credential": {
        "type": "oauth2_client_credentials",
        "token_endpoint": {"cluster": "idp", "authority": "idp.test", "path": "/oauth/token"},
        "client_id": "airlock", "client_secret": {"value": "client-secret"}}}]});
    extra["hold"] = hold;
    Fixture::new(config(json!({"inline": jwks()}), standard_rules(), extra))
}

#[test]
fn a_first_request_waits_for_the_first_oauth_token_and_the_next_uses_it() {
    let f = oauth_fixture(json!({"by": "envoy"}));
    let mut flow = f.flow();
    let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
    assert_eq!(flow.on_request_headers(&mut host, true), Next::Pause, "waits for the token");
    let form = String::from_utf8(host.callout_bodies[0].clone()).unwrap();
    assert_eq!(form, "grant_type=client_credentials");
    let answer = json!({"access_token": "tok-1", "token_type": "Bearer", "expires_in": 300}).to_string();
    flow.on_callout_response(&mut host, 1, Some(200), Some(answer.into_bytes()));
    assert_eq!(host.header("authorization"), Some("Bearer tok-1"));
    assert_eq!(host.resumed, 1);
    let mut next = request("GET", "/customers", Some(&token("bob", &["support"])));
    assert_eq!(f.flow().on_request_headers(&mut next, true), Next::Continue);
    assert_eq!(next.header("authorization"), Some("Bearer tok-1"));
    assert!(next.callouts.is_empty());
}

#[test]
fn a_failed_first_oauth_fetch_fails_closed_and_the_next_second_is_refused_without_a_fetch() {
    let f = oauth_fixture(json!({"by": "envoy"}));
    let mut flow = f.flow();
    let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
    assert_eq!(flow.on_request_headers(&mut host, true), Next::Pause);
    flow.on_callout_response(&mut host, 1, Some(503), None);
    assert_eq!(host.reply_status(), Some(503));
    assert_eq!(host.reply_json()["error"]["code"], "dependency_unavailable");
    let mut soon = request("GET", "/customers", Some(&token("alice", &["support"])));
    assert_eq!(f.flow().on_request_headers(&mut soon, true), Next::Pause);
    assert_eq!(soon.reply_status(), Some(503), "refused at once while the retry pause runs");
    assert!(soon.callouts.is_empty(), "the endpoint is not hammered");
}

#[test]
fn with_the_buffer_filter_a_body_rule_request_with_no_oauth_token_is_refused_not_sent_without_one() {
    let f = oauth_fixture(json!({"by": "buffer_filter"}));
    // A body rule: the headers move on before the body, so they cannot wait for a fetch.
    let mut host = request("POST", "/sql", Some(&token("alice", &["support"])));
    f.flow().on_request_headers(&mut host, false);
    assert_eq!(host.reply_status(), Some(503), "{}", host.reply_json());
    assert_eq!(host.header("authorization"), None);
    assert!(host.callouts.is_empty());
    // Decided on its headers alone, a request can wait for the token there.
    let mut get = request("GET", "/customers", Some(&token("alice", &["support"])));
    assert_eq!(f.flow().on_request_headers(&mut get, true), Next::Pause);
    assert_eq!(get.callouts.len(), 1);
}
