//! `oauth2_client_credentials` through a real Envoy, against the demo IdP's token endpoint
//! running as its own process (Envoy's identity-provider cluster points at it): the
//! upstream (the demo `/echo`, which shows what it received) gets the IdP's access token
//! and never the agent's; the token is fetched once for both workers, refreshed ahead of
//! its expiry with no request failing, kept while the endpoint is down until it expires,
//! and with none the request fails closed.

use std::time::{Duration, Instant};

use airlock_e2e::control::DBA_BOB;
use airlock_e2e::demo_idp::DemoIdp as Idp;
use airlock_e2e::fixtures::{JWKS_CLUSTER, UPSTREAM_CLUSTER};
use airlock_e2e::*;
use serde_json::{json, Value};

const CLIENT_ID: &str = "airlock-e2e";
/// Given inline: the template's `host_env_keys` (one line, which `scripts/bench/run.py`
/// edits) has no room for another variable; `env` secrets are covered by the other kinds.
const CLIENT_SECRET: &str = "e2e-oauth-client-secret-0f3a9c";

/// `/echo` allowed to agents; the upstream's credential an OAuth token from the IdP.
fn oauth_config() -> Value {
    let mut config = with_inline_jwks(test_plugin_config(), TestKeys::shared().jwks());
    config["rules"] = json!([{"name": "echo-for-agents", "action": "allow", "when": {"path": {"prefix": "/echo"}}}]);
    config["default_action"] = json!("deny");
    config["audit"]["flush_interval_ms"] = json!(200);
    config["upstreams"] = json!([{"cluster": UPSTREAM_CLUSTER, "credential": {
        "type": "oauth2_client_credentials",
        "token_endpoint": {"cluster": JWKS_CLUSTER, "authority": "idp.airlock.svc.cluster.local",
                           "path": "/oauth/token", "timeout_ms": 1000},
        "client_id": CLIENT_ID, "client_secret": {"value": CLIENT_SECRET},
        "scope": "customers:read", "audience": "customer-db"}}]);
    config
}

fn stack_for(idp: &Idp, control_port: Option<u16>) -> Stack {
    stack_with(oauth_config(), idp, control_port, &[])
}

fn stack_with(config: Value, idp: &Idp, control_port: Option<u16>, env: &[(&str, &str)]) -> Stack {
    let mut builder = builder_for(config, TestKeys::shared()).set("JWKS_PORT", &idp.port.to_string());
    for (name, value) in env {
        builder = builder.envoy_env(name, value);
    }
    if let Some(port) = control_port {
        builder = builder.control_port(port);
    }
    builder.concurrency(2).start().unwrap()
}

fn agent_token(sub: &str) -> String {
    TestKeys::shared().mint(Alg::ES256, &TokenClaims::new().sub(sub).groups(&["support"]))
}

/// What `/echo` saw in `authorization`, or the filter's refusal.
fn upstream_authorization(stack: &Stack, jwt: &str) -> Result<String, Reply> {
    let reply = stack.get("/echo/oauth", &[("authorization", &bearer(jwt))]).unwrap();
    if reply.status != 200 {
        return Err(reply);
    }
    let echo = reply.json().unwrap();
    assert!(!echo.to_string().contains(jwt), "the agent's token reached the upstream: {echo}");
    Ok(echo["headers"]["authorization"].as_str().unwrap_or_default().to_string())
}

/// Polls until a request gets through (the first fetch happens on the first tick).
fn wait_for_token(stack: &Stack, jwt: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match upstream_authorization(stack, jwt) {
            Ok(seen) => return seen,
            Err(reply) => assert!(Instant::now() < deadline, "no token reached the upstream: {}", reply.text()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The claims of a compact JWT, unverified (the demo upstream does not check it).
fn claims(authorization: &str) -> Value {
    use base64::Engine as _;
    let jwt = authorization.strip_prefix("Bearer ").unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn assert_refused_for_no_token(reply: &Reply) {
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(error_of(reply)["code"], "dependency_unavailable", "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("1"), "{:?}", reply.headers);
}

#[test]
fn the_upstream_gets_one_token_fetched_once_for_both_workers_and_the_audit_names_the_kind_not_a_value() {
    let dir = std::env::temp_dir().join(format!("airlock-e2e-oauth-{}", std::process::id()));
    let control = airlock_e2e::control::ControlService::start(&dir, &[DBA_BOB], "").unwrap();
    let idp = Idp::start(&format!("{CLIENT_ID}:{CLIENT_SECRET}"), 300, &[]);
    let stack = stack_for(&idp, Some(control.port()));
    let jwt = agent_token("ivy");
    let first = wait_for_token(&stack, &jwt);
    let seen = claims(&first);
    assert_eq!((seen["sub"].as_str(), seen["client_id"].as_str()), (Some(CLIENT_ID), Some(CLIENT_ID)), "{seen}");
    assert_eq!((seen["scope"].as_str(), seen["aud"].as_str()), (Some("customers:read"), Some("customer-db")));
    // Many requests, spread over both workers by Envoy: all carry the same token.
    for _ in 0..40 {
        assert_eq!(upstream_authorization(&stack, &jwt).unwrap(), first);
    }
    assert_eq!(idp.issued(), 1, "one fetch for the whole proxy");
    assert_eq!(stack.stat("wasmcustom.airlock.credentials.oauth_fetch_ok"), Some(1));

    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let sessions = control.get("/v1/sessions?subject=ivy", DBA_BOB.token).unwrap();
        let records: Vec<Value> = sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                let id = s["session_id"].as_str().unwrap();
                control.get(&format!("/v1/sessions/{id}"), DBA_BOB.token).unwrap()["records"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect();
        if records.len() >= 41 || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(records.len() >= 41, "{}", records.len());
    for record in records.iter().filter(|r| r["decision"] == "allow") {
        assert_eq!(record["credential"], json!({"kind": "oauth2_client_credentials", "key_id": CLIENT_ID}));
    }
    let store = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("airlock.db"))
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
        .collect::<String>();
    assert!(store.contains(CLIENT_ID), "the store holds the records");
    let access_token = first.strip_prefix("Bearer ").unwrap();
    let log = stack.envoy_log();
    for secret in [access_token, access_token.rsplit('.').next().unwrap(), CLIENT_SECRET, &jwt] {
        assert!(!store.contains(secret), "a secret is in the audit store");
        assert!(!log.contains(secret), "a secret is in Envoy's log");
    }
}

#[test]
fn a_short_lived_token_is_refreshed_ahead_of_expiry_kept_through_an_outage_until_it_expires_then_recovered() {
    const TTL_S: u64 = 3;
    let idp = Idp::start(&format!("{CLIENT_ID}:{CLIENT_SECRET}"), TTL_S, &[]);
    let stack = stack_for(&idp, None);
    let jwt = agent_token("ivy");
    wait_for_token(&stack, &jwt);

    // Ten seconds of requests, over three lifetimes: not one fails, the token changes.
    let mut tokens = std::collections::BTreeSet::new();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let seen =
            upstream_authorization(&stack, &jwt).unwrap_or_else(|r| panic!("request {sent} failed: {}", r.text()));
        tokens.insert(seen);
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tokens.len() >= 3, "refreshed ahead of expiry: {} tokens in 10 s", tokens.len());
    let issued = idp.issued();
    assert!(issued <= 7, "one fetch per refresh, not per request or worker: {issued} for {sent} requests");

    // The endpoint goes down: the token held still works, until it expires.
    idp.outage(true);
    assert!(upstream_authorization(&stack, &jwt).is_ok(), "a valid cached token keeps working");
    std::thread::sleep(Duration::from_secs(TTL_S + 1));
    assert_refused_for_no_token(&upstream_authorization(&stack, &jwt).unwrap_err());
    assert!(stack.stat("wasmcustom.airlock.credentials.oauth_fetch_failed").unwrap_or(0) >= 1);

    // Back up: the next retry fetches a token and requests go through again.
    idp.outage(false);
    wait_for_token(&stack, &jwt);
    let log = stack.envoy_log();
    assert!(log.contains("OAuth token for upstream") && log.contains("HTTP 503"), "the outage is logged");
    for token in &tokens {
        assert!(!log.contains(token.strip_prefix("Bearer ").unwrap()), "a token is in Envoy's log");
    }
}

#[test]
fn a_wrong_client_secret_fails_closed_with_a_log_line_naming_the_client_and_not_the_secret() {
    let idp = Idp::start(&format!("{CLIENT_ID}:the-secret-the-idp-expects"), 300, &[]);
    let stack = stack_for(&idp, None);
    let jwt = agent_token("ivy");
    assert!(stack
        .wait_for_stat("wasmcustom.airlock.credentials.oauth_fetch_failed", 1, Duration::from_secs(10))
        .is_some());
    let refused = upstream_authorization(&stack, &jwt).unwrap_err();
    assert_refused_for_no_token(&refused);
    assert!(!refused.text().contains(CLIENT_SECRET));
    assert_eq!(idp.issued(), 0);
    let log = stack.envoy_log();
    let line = log.lines().find(|l| l.contains("OAuth token for upstream")).unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(&format!("client `{CLIENT_ID}`")) && line.contains("HTTP 401, error `invalid_client`"),
        "{line}"
    );
    assert!(!log.contains(CLIENT_SECRET), "the client secret is in Envoy's log");
}

/// The filter's client key (`openssl genpkey -algorithm EC -pkeyopt
/// ec_paramgen_curve:P-256`), given to Envoy as `AIRLOCK_SIGNING_KEY`, and its public half
/// (`openssl pkey -pubout`), which the IdP knows the client by.
const CLIENT_KEY: &str = airlock_e2e::fixtures::EC_SIGNING_KEY_PEM;
const CLIENT_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpnMI10C/7mumIpqwmPaBLN3B5HCp
Sl5mpf2XBvV7ty7VdfEfpGrRZ5aPjeE33a+F6c4et5BUq0ODa/84q3Y3IA==
-----END PUBLIC KEY-----
";

#[test]
fn private_key_jwt_authenticates_the_filter_with_a_signed_assertion_and_the_upstream_gets_the_token() {
    let dir = std::env::temp_dir().join(format!("airlock-e2e-oauth-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = dir.join("client.pem");
    std::fs::write(&public, CLIENT_PUBLIC_KEY).unwrap();
    // The filter's default assertion audience: `https://{authority}{path}` of the endpoint.
    let idp = Idp::start(
        "",
        300,
        &[
            ("AIRLOCK_DEMO_OAUTH_JWT_CLIENTS", &format!("airlock-jwt={}", public.display())),
            ("AIRLOCK_DEMO_OAUTH_TOKEN_URL", "https://idp.airlock.svc.cluster.local/oauth/token"),
        ],
    );
    let mut config = oauth_config();
    let credential = &mut config["upstreams"][0]["credential"];
    credential["client_id"] = json!("airlock-jwt");
    credential.as_object_mut().unwrap().remove("client_secret");
    credential["private_key_jwt"] =
        json!({"key": {"env": "AIRLOCK_SIGNING_KEY"}, "key_id": "client-1", "alg": "ES256"});
    let stack = stack_with(config, &idp, None, &[("AIRLOCK_SIGNING_KEY", CLIENT_KEY)]);
    let jwt = agent_token("ivy");
    let seen = wait_for_token(&stack, &jwt);
    assert_eq!(claims(&seen)["client_id"], "airlock-jwt", "{seen}");
    for _ in 0..10 {
        assert_eq!(upstream_authorization(&stack, &jwt).unwrap(), seen);
    }
    assert_eq!(idp.issued(), 1);
    let log = stack.envoy_log();
    assert!(!log.contains(CLIENT_KEY.lines().nth(1).unwrap()), "the client key is in Envoy's log");
    assert!(!log.contains(seen.strip_prefix("Bearer ").unwrap()), "the token is in Envoy's log");
}

/// `POST /oauth/token` straight to the IdP with `headers` and a form body.
fn token_request(idp: &Idp, headers: &[(&str, &str)], form: &str) -> Reply {
    send(&agent(), "POST", &idp.url("/oauth/token"), headers, Some(form.as_bytes())).unwrap()
}

#[test]
fn the_demo_token_endpoint_answers_rfc_6749_errors_and_accepts_an_assertion_only_once() {
    use base64::Engine as _;
    use jwt_simple::prelude::*;
    let dir = std::env::temp_dir().join(format!("airlock-e2e-oauth-rfc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = dir.join("client.pem");
    std::fs::write(&public, CLIENT_PUBLIC_KEY).unwrap();
    let token_url = "https://idp.test/oauth/token";
    let idp = Idp::start(
        &format!("{CLIENT_ID}:{CLIENT_SECRET}"),
        300,
        &[
            ("AIRLOCK_DEMO_OAUTH_JWT_CLIENTS", &format!("airlock-jwt={}", public.display())),
            ("AIRLOCK_DEMO_OAUTH_TOKEN_URL", token_url),
        ],
    );
    let form = ("content-type", "application/x-www-form-urlencoded");
    let basic = |secret: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{secret}")))
    };
    let good = basic(CLIENT_SECRET);
    let error = |reply: &Reply| reply.json().unwrap()["error"].as_str().unwrap().to_string();

    let ok = token_request(&idp, &[form, ("authorization", &good)], "grant_type=client_credentials");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    assert_eq!(ok.json().unwrap()["token_type"], "Bearer");

    let wrong = token_request(&idp, &[form, ("authorization", &basic("nope"))], "grant_type=client_credentials");
    assert_eq!((wrong.status, error(&wrong).as_str()), (401, "invalid_client"));
    assert!(wrong.header("www-authenticate").is_some_and(|v| v.starts_with("Basic")), "{:?}", wrong.headers);
    let grant = token_request(&idp, &[form, ("authorization", &good)], "grant_type=password");
    assert_eq!((grant.status, error(&grant).as_str()), (400, "unsupported_grant_type"));
    let twice = token_request(&idp, &[form, ("authorization", &good)], "grant_type=client_credentials&scope=a&scope=b");
    assert_eq!((twice.status, error(&twice).as_str()), (400, "invalid_request"));
    let not_form = token_request(&idp, &[("authorization", &good)], "grant_type=client_credentials");
    assert_eq!((not_form.status, error(&not_form).as_str()), (400, "invalid_request"));

    let key = ES256KeyPair::from_pem(CLIENT_KEY).unwrap();
    let assertion = |aud: &str, jti: &str| {
        let claims = Claims::create(Duration::from_secs(60))
            .with_issuer("airlock-jwt")
            .with_subject("airlock-jwt")
            .with_audience(aud)
            .with_jwt_id(jti);
        let jwt = key.sign(claims).unwrap();
        format!(
            "grant_type=client_credentials&client_assertion_type=\
             urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={jwt}"
        )
    };
    let first = assertion(token_url, "jti-1");
    assert_eq!(token_request(&idp, &[form], &first).status, 200);
    let replayed = token_request(&idp, &[form], &first);
    assert_eq!((replayed.status, error(&replayed).as_str()), (401, "invalid_client"), "a jti is used once");
    let elsewhere = token_request(&idp, &[form], &assertion("https://other.test/token", "jti-2"));
    assert_eq!((elsewhere.status, error(&elsewhere).as_str()), (401, "invalid_client"), "aud is checked");
    let both = token_request(&idp, &[form, ("authorization", &good)], &assertion(token_url, "jti-3"));
    assert_eq!((both.status, error(&both).as_str()), (400, "invalid_request"), "one method per request");
    assert_eq!(idp.issued(), 2);
}
