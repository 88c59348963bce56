//! Token checks of the real filter in a real Envoy: every algorithm family, the ways a
//! token can be wrong, key rotation and an identity provider that is down, identity
//! headers, and header bytes that are not UTF-8.
//!
//! Most tests share one stack (same config, no shared state they could disturb); the
//! rotation and IdP-outage tests change the JWKS server, so they get their own.

use std::time::Duration;

use airlock_e2e::fixtures::{jwks_with_hmac, wait_first_fetch};
use airlock_e2e::raw;
use airlock_e2e::*;
use jwt_simple::prelude::{Claims, ECDSAP256KeyPairLike, ES256KeyPair, HS256Key, MACLike, RS256PublicKey};
use serde_json::{json, Value};

/// The shipped config (issuer/audience of the test keys) plus a rule letting `/echo`
/// through, so tests can see what reaches the upstream.
fn auth_config() -> Value {
    let mut config = test_plugin_config();
    config["rules"].as_array_mut().unwrap().push(json!({
        "name": "echo-for-tests",
        "action": "allow",
        "when": { "path": { "prefix": "/echo" } }
    }));
    config
}

fn stack() -> SharedRef {
    static STACK: SharedStack = SharedStack::new();
    STACK.get(|| {
        let keys = TestKeys::shared();
        let stack = builder_for(auth_config(), keys).jwks(jwks_with_hmac(keys).to_string()).start()?;
        wait_first_fetch(stack.jwks());
        Ok(stack)
    })
}

fn get_tables(stack: &Stack, authorization: &str) -> Reply {
    stack.get("/tables", &[("authorization", authorization)]).unwrap()
}

/// Asserts a 401 from the filter with `reason`, and returns the error object.
fn assert_unauthenticated(reply: &Reply, reason: &str) -> Value {
    assert_eq!(reply.status, 401, "{}", reply.text());
    let error = error_of(reply);
    assert_eq!(error["code"], "unauthenticated", "{error}");
    assert_eq!(error["retry"], "reauthenticate", "{error}");
    assert_eq!(error["reason"], reason, "{error}");
    assert!(reply.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", reply.headers);
    error
}

#[test]
fn valid_token_of_every_algorithm_family_is_accepted() {
    let stack = stack();
    let keys = TestKeys::shared();
    for alg in Alg::ALL {
        let token = keys.mint(alg, &TokenClaims::new().sub(&format!("agent-{}", alg.name())));
        let reply = get_tables(&stack, &bearer(&token));
        assert_eq!(reply.status, 200, "{alg:?}: {}", reply.text());
        assert_eq!(reply.json().unwrap()["tables"], json!(["customers"]), "{alg:?}");
    }
}

#[test]
fn expired_token_is_refused_with_reason_token_expired() {
    let stack = stack();
    // Beyond the shipped 30 s clock skew.
    let token = TestKeys::shared().mint(Alg::ES256, &TokenClaims::new().exp_in(-120).iat_in(-720).nbf_in(-720));
    let error = assert_unauthenticated(&get_tables(&stack, &bearer(&token)), "token_expired");
    // The answer never echoes the token.
    assert!(!error.to_string().contains(&token));
}

#[test]
fn forged_signature_under_a_known_kid_is_refused() {
    let stack = stack();
    let keys = TestKeys::shared();
    let claims = || {
        Claims::create(jwt_simple::prelude::Duration::from_mins(10))
            .with_issuer(DEFAULT_ISS)
            .with_audience(DEFAULT_AUD)
            .with_subject("mallory")
    };
    // Another EC key that claims to be the IdP's ES256 key.
    let impostor = ES256KeyPair::generate().with_key_id(&keys.kid(Alg::ES256));
    let forged = impostor.sign(claims()).unwrap();
    assert_unauthenticated(&get_tables(&stack, &bearer(&forged)), "token_bad_signature");

    // A genuine token with one signature character changed.
    let genuine = keys.mint(Alg::EdDSA, &TokenClaims::new());
    let (head, sig) = genuine.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{head}.{flipped}{}", &sig[1..]);
    assert_unauthenticated(&get_tables(&stack, &bearer(&tampered)), "token_bad_signature");

    // Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret,
    // naming the RSA key's kid.
    let rsa_public = RS256PublicKey::from_jwk(&keys.jwk(Alg::RS256).to_string()).unwrap();
    let confused = HS256Key::from_bytes(rsa_public.to_pem().unwrap().as_bytes())
        .with_key_id(&keys.kid(Alg::RS256))
        .authenticate(claims())
        .unwrap();
    let reply = get_tables(&stack, &bearer(&confused));
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(error_of(&reply)["code"], "unauthenticated");
}

#[test]
fn alg_none_token_is_refused() {
    let stack = stack();
    let token = alg_none_token(&TokenClaims::new().sub("nobody"));
    let reply = get_tables(&stack, &bearer(&token));
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(error_of(&reply)["code"], "unauthenticated");
    assert_ne!(error_of(&reply)["reason"], Value::Null);
}

#[test]
fn token_for_another_audience_is_refused() {
    let stack = stack();
    let token = TestKeys::shared().mint(Alg::RS256, &TokenClaims::new().aud("some-other-service"));
    assert_unauthenticated(&get_tables(&stack, &bearer(&token)), "token_wrong_audience");
}

#[test]
fn token_from_an_untrusted_issuer_is_refused() {
    let stack = stack();
    // Signed by a trusted key, but claiming another issuer.
    let token = TestKeys::shared().mint(Alg::ES384, &TokenClaims::new().iss("https://evil.example"));
    assert_unauthenticated(&get_tables(&stack, &bearer(&token)), "token_wrong_issuer");
}

#[test]
fn request_without_token_gets_401_with_www_authenticate() {
    let stack = stack();
    let reply = stack.get("/tables", &[]).unwrap();
    let error = assert_unauthenticated(&reply, "token_missing");
    assert_eq!(error["status"], 401);
    assert_eq!(reply.header("x-airlock-code"), Some("unauthenticated"));
    assert!(reply.header("content-type").unwrap().starts_with("application/json"));
    // Answered by the filter: the upstream was never asked.
    assert!(reply.header("x-envoy-upstream-service-time").is_none());
}

#[test]
fn malformed_authorization_headers_are_refused_and_the_vm_survives() {
    let stack = stack();
    for (value, reason) in [
        ("Basic dXNlcjpwYXNzd29yZA==", "token_missing"),
        ("Bearer", "token_missing"),
        ("Bearer not-a-jwt", "token_malformed"),
        ("Bearer a.b.c", "token_malformed"),
        ("Bearer eyJhbGciOiJFUzI1NiJ9.e30", "token_malformed"),
        ("Bearer x y", "token_malformed"),
        ("Bearer !!!.@@@.###", "token_malformed"),
    ] {
        let reply = get_tables(&stack, value);
        assert_eq!(reply.status, 401, "{value:?}: {}", reply.text());
        assert_eq!(error_of(&reply)["reason"], reason, "{value:?}");
    }
    let huge = format!("Bearer {}.{}.{}", "A".repeat(20_000), "B".repeat(20_000), "C");
    assert_eq!(get_tables(&stack, &huge).status, 401);
    let ok = get_tables(&stack, &auth_for(TestKeys::shared(), "alice", &[]));
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn unknown_kid_after_key_rotation_refetches_the_jwks_and_accepts_the_new_key() {
    let old_keys = TestKeys::new();
    let new_keys = TestKeys::new();
    let stack = builder_for(test_plugin_config(), &old_keys).start().unwrap();
    assert!(wait_first_fetch(stack.jwks()));
    let old_token = old_keys.mint(Alg::ES256, &TokenClaims::new());
    assert_eq!(get_tables(&stack, &bearer(&old_token)).status, 200);

    // The IdP rotates: only the new keys are published from now on.
    stack.jwks().set_jwks(&new_keys.jwks_json());
    let fetches_before = stack.jwks().fetch_count();
    // Re-fetches for unknown kids are rate-limited (1 s in the test config).
    std::thread::sleep(Duration::from_millis(2100));
    let new_token = new_keys.mint(Alg::EdDSA, &TokenClaims::new().sub("bob"));
    let reply = get_tables(&stack, &bearer(&new_token));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        stack.jwks().fetch_count() > fetches_before,
        "no JWKS fetch for the unknown kid ({} before, {} after)",
        fetches_before,
        stack.jwks().fetch_count()
    );
    // The retired key stops working at once (its cached tokens included).
    assert_unauthenticated(&get_tables(&stack, &bearer(&old_token)), "token_key_unknown");
    assert!(stack.stat("wasmcustom.airlock.jwks.fetch_ok").unwrap_or(0) >= 2);
}

#[test]
fn jwks_server_down_at_start_answers_503_retry_later_then_recovers() {
    let keys = TestKeys::new();
    let stack = builder_for(test_plugin_config(), &keys).jwks_mode(JwksMode::Refuse).start().unwrap();
    let auth = auth_for(&keys, "alice", &[]);
    let reply = get_tables(&stack, &auth);
    assert_eq!(reply.status, 503, "{}", reply.text());
    let error = error_of(&reply);
    assert_eq!(error["code"], "dependency_unavailable", "{error}");
    assert_eq!(error["retry"], "later", "{error}");
    assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
    assert!(stack.stat("wasmcustom.airlock.jwks.fetch_failed").unwrap_or(0) >= 1);
    assert!(stack.jwks().fetch_count() >= 1, "the filter never tried to fetch");

    // The IdP comes back: the next request (or the refresh timer) fetches the keys.
    stack.jwks().serve();
    let reply = get_tables(&stack, &auth);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(stack.stat("wasmcustom.airlock.jwks.fetch_ok").unwrap_or(0) >= 1);
}

#[test]
fn spoofed_identity_headers_from_the_client_are_replaced_by_the_filters() {
    let stack = stack();
    let keys = TestKeys::shared();
    let spoof = [("x-airlock-subject", "root"), ("X-Airlock-Groups", "admin,dba")];
    let mut headers = vec![("authorization", auth_for(keys, "alice", &["support", "analyst"]))];
    headers.extend(spoof.iter().map(|(n, v)| (*n, v.to_string())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let reply = stack.get("/echo/whoami", &headers).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json().unwrap();
    assert_eq!(echo["headers"]["x-airlock-subject"], "alice", "{echo}");
    assert_eq!(echo["headers"]["x-airlock-groups"], "support,analyst", "{echo}");

    // A caller without groups: the spoofed groups header is gone, not passed on.
    let token = keys.mint(Alg::PS256, &TokenClaims::new().sub("carol"));
    let auth = bearer(&token);
    let reply = stack
        .get(
            "/echo/whoami",
            &[
                ("authorization", &auth),
                ("x-airlock-groups", "admin"),
                ("x-airlock-subject", "root"),
                ("x-airlock-subject", "admin"),
            ],
        )
        .unwrap();
    let echo = reply.json().unwrap();
    assert_eq!(echo["headers"]["x-airlock-subject"], "carol", "{echo}");
    assert!(echo["headers"].get("x-airlock-groups").is_none(), "{echo}");
}

#[test]
fn header_values_with_non_utf8_bytes_do_not_crash_the_vm() {
    let stack = stack();
    let keys = TestKeys::shared();
    let token = keys.mint(Alg::ES256, &TokenClaims::new());
    let port = stack.listen_port();
    let timeout = Duration::from_secs(10);

    // Invalid UTF-8 in an ordinary header of an authenticated request.
    let mut request = b"GET /echo/bytes HTTP/1.1\r\nhost: airlock\r\nconnection: close\r\n".to_vec();
    request.extend_from_slice(format!("authorization: Bearer {token}\r\n").as_bytes());
    request.extend_from_slice(b"x-agent-note: caf\xe9 \xff\xfe \xc3\x28\r\n");
    request.extend_from_slice(b"x-airlock-subject: \xff\xferoot\r\n\r\n");
    let reply = raw::exchange(port, &[&request], Duration::ZERO, timeout).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(echo["headers"]["x-airlock-subject"], "alice", "{echo}");

    // Invalid UTF-8 inside the token itself.
    let mut request = b"GET /tables HTTP/1.1\r\nhost: airlock\r\nconnection: close\r\n".to_vec();
    request.extend_from_slice(b"authorization: Bearer eyJ\xff\xfe.\x80\x81.\xc0\r\n\r\n");
    let reply = raw::exchange(port, &[&request], Duration::ZERO, timeout).unwrap();
    assert_eq!(reply.status, 401, "{}", reply.text());

    // The VM is alive: a normal request still works.
    let ok = get_tables(&stack, &bearer(&token));
    assert_eq!(ok.status, 200, "{}", ok.text());
}
