//! Token checks with keys found by OpenID Connect discovery, in a real Envoy, against the
//! demo IdP running as its own process: Envoy's identity-provider cluster points at the
//! IdP's port, the filter reads `/.well-known/openid-configuration` there and then the
//! JWKS its `jwks_uri` names.

use std::time::Duration;

use airlock_e2e::demo_idp;
use airlock_e2e::fixtures::JWKS_CLUSTER;
use airlock_e2e::process::ChildGuard;
use airlock_e2e::*;
use serde_json::{json, Value};

/// The demo IdP, killed when dropped.
struct Idp {
    _child: ChildGuard,
    port: u16,
}

impl Idp {
    /// Starts `airlock-demo idp` on `port` with `issuer`, and waits until it listens.
    fn start(port: u16, issuer: &str) -> Idp {
        let child = demo_idp::spawn(port, &["--issuer", issuer], &[]);
        Idp { _child: child, port }
    }

    /// A token the IdP signs for `sub` (its issuer, the demo audience).
    fn token(&self, sub: &str) -> String {
        let url = format!("http://127.0.0.1:{}/token?sub={sub}&ttl=600", self.port);
        let reply = send(&agent(), "GET", &url, &[], None).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.text().trim().to_string()
    }
}

/// `http://127.0.0.1:PORT`: an http issuer, so the IdP's http `jwks_uri` is followed.
fn issuer_at(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The shipped config with its keys found by discovery of `issuer` through the shipped
/// identity-provider cluster; `issuers` are the accepted `iss` values.
fn discovery_config(issuer: &str, issuers: &[&str]) -> Value {
    let mut config = test_plugin_config();
    config["auth"]["issuers"] = json!(issuers);
    config["auth"]["audiences"] = json!([DEFAULT_AUD]);
    config["auth"]["jwks"] = json!({"discovery": {
        "cluster": JWKS_CLUSTER,
        "authority": "idp.airlock.svc.cluster.local",
        "issuer": issuer,
        "refresh_seconds": 300,
        "timeout_ms": 2000,
        "min_refresh_interval_seconds": 1,
    }});
    config
}

/// A stack whose identity-provider cluster reaches 127.0.0.1:`idp_port`.
fn stack_for(config: Value, idp_port: u16) -> Stack {
    builder_for(config, TestKeys::shared()).set("JWKS_PORT", &idp_port.to_string()).start().unwrap()
}

fn get_tables(stack: &Stack, token: &str) -> Reply {
    stack.get("/tables", &[("authorization", &bearer(token))]).unwrap()
}

fn assert_keys_unavailable(reply: &Reply) {
    assert_eq!(reply.status, 503, "{}", reply.text());
    let error = error_of(reply);
    assert_eq!(error["code"], "dependency_unavailable", "{error}");
    assert_eq!(error["retry"], "later", "{error}");
}

#[test]
fn a_token_signed_by_the_idp_is_accepted_with_keys_found_by_discovery() {
    let port = free_port().unwrap();
    let issuer = issuer_at(port);
    let idp = Idp::start(port, &issuer);
    let stack = stack_for(discovery_config(&issuer, &[&issuer]), port);

    let reply = get_tables(&stack, &idp.token("alice"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json().unwrap()["tables"], json!(["customers"]));
    assert!(stack.stat("wasmcustom.airlock.jwks.fetch_ok").unwrap_or(0) >= 1);

    // The keys are the IdP's and no one else's: a token of the same issuer signed with
    // another key is refused.
    let foreign = TestKeys::shared().mint(Alg::ES256, &TokenClaims::new().iss(&issuer));
    let reply = get_tables(&stack, &foreign);
    assert_eq!(reply.status, 401, "{}", reply.text());
}

#[test]
fn a_discovery_document_naming_another_issuer_is_not_used_and_requests_get_503() {
    let port = free_port().unwrap();
    let configured = issuer_at(port);
    // Differs by the trailing slash alone, which §4.3 of the spec does not forgive. The
    // IdP's tokens carry it and it is an accepted `iss`: only the discovery check stands
    // between them and being accepted.
    let published = format!("{configured}/");
    let idp = Idp::start(port, &published);
    let stack = stack_for(discovery_config(&configured, &[&configured, &published]), port);

    let token = idp.token("alice");
    for _ in 0..2 {
        assert_keys_unavailable(&get_tables(&stack, &token));
    }
    assert!(stack.stat("wasmcustom.airlock.jwks.fetch_failed").unwrap_or(0) >= 1);
    assert_eq!(stack.stat("wasmcustom.airlock.jwks.fetch_ok").unwrap_or(0), 0, "the named JWKS was used");
    let log = stack.envoy_log();
    assert!(log.contains(&format!("names the issuer `{published}`")), "{}", stack.envoy_log_tail());
}

#[test]
fn idp_down_at_start_answers_503_then_its_tokens_are_accepted_once_it_is_up() {
    let port = free_port().unwrap();
    let issuer = issuer_at(port);
    let stack = stack_for(discovery_config(&issuer, &[&issuer]), port);

    // Nothing listens yet; any well-formed token makes the filter look for keys.
    let early = TestKeys::shared().mint(Alg::ES256, &TokenClaims::new().iss(&issuer));
    assert_keys_unavailable(&get_tables(&stack, &early));
    assert!(stack.wait_for_stat("wasmcustom.airlock.jwks.fetch_failed", 1, Duration::from_secs(5)).is_some());

    // The IdP comes up: the same Envoy, no restart, accepts its tokens.
    let idp = Idp::start(port, &issuer);
    let reply = get_tables(&stack, &idp.token("bob"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(stack.stat("wasmcustom.airlock.jwks.fetch_ok").unwrap_or(0) >= 1);
}
