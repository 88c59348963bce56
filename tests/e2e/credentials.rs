//! Credential injection by the real filter in a real Envoy: the upstream gets its own
//! credential (from Envoy's environment, as the shipped config says) and never the
//! agent's token, whether the decision is taken on the headers or waits for the body.

use std::time::{Duration, Instant};

use airlock_e2e::control::DBA_BOB;
use airlock_e2e::fixtures::{wait_first_fetch, UPSTREAM_CLUSTER};
use airlock_e2e::*;
use serde_json::{json, Value};

/// The shipped config plus `/echo` rules: one that must read the body, one that allows.
fn credentials_config() -> Value {
    let mut config = test_plugin_config();
    let rules = config["rules"].as_array_mut().unwrap();
    rules.push(json!({
        "name": "echo-body-guard", "action": "deny",
        "when": {"methods": ["POST"], "path": {"prefix": "/echo"},
                 "body": [{"json_pointer": "/cmd", "regex": "rm\\s+-rf"}]}
    }));
    rules.push(json!({
        "name": "echo-for-agents", "action": "allow",
        "when": {"path": {"prefix": "/echo"}}
    }));
    config
}

fn stack() -> SharedRef {
    static STACK: SharedStack = SharedStack::new();
    STACK.get(|| {
        let stack = builder_for(credentials_config(), TestKeys::shared()).start()?;
        wait_first_fetch(stack.jwks());
        Ok(stack)
    })
}

/// Asserts the echo shows the upstream credential, the identity, and no trace of `jwt`.
fn assert_upstream_view(echo: &Value, jwt: &str) {
    let headers = &echo["headers"];
    assert_eq!(headers["authorization"], format!("Bearer {TEST_UPSTREAM_TOKEN}"), "{echo}");
    let signature = jwt.rsplit('.').next().unwrap();
    let text = echo.to_string();
    assert!(!text.contains(jwt), "the agent's token reached the upstream: {echo}");
    assert!(!text.contains(signature), "part of the agent's token reached the upstream: {echo}");
    assert_eq!(headers["x-airlock-subject"], "ivy", "{echo}");
    assert_eq!(headers["x-airlock-groups"], "support", "{echo}");
}

fn token() -> String {
    TestKeys::shared().mint(Alg::ES256, &TokenClaims::new().sub("ivy").groups(&["support"]))
}

#[test]
fn upstream_sees_its_own_credential_and_never_the_agents_token() {
    let stack = stack();
    let jwt = token();
    let reply = stack.get("/echo/credentials", &[("authorization", &bearer(&jwt))]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json().unwrap();
    assert_eq!(echo["method"], "GET");
    assert_upstream_view(&echo, &jwt);
}

#[test]
fn credential_is_injected_when_the_decision_waits_for_the_body() {
    let stack = stack();
    let jwt = token();
    let body = json!({"cmd": "ls -la /srv", "note": "inspected before forwarding"});
    let reply = stack.post_json("/echo/run", &[("authorization", &bearer(&jwt))], &body).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json().unwrap();
    assert_eq!(echo["method"], "POST");
    assert_upstream_view(&echo, &jwt);
    // The inspected body goes on unchanged.
    let seen: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen, body);
}

#[test]
fn body_rule_on_an_echo_route_is_consulted_and_the_token_still_never_reaches_the_upstream() {
    let stack = stack();
    let jwt = token();
    let body = json!({"cmd": "ls -la /srv"});
    let reply = stack.post_json("/echo/run", &[("authorization", &bearer(&jwt))], &body).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json().unwrap();
    assert!(!echo.to_string().contains(&jwt), "the agent's token reached the upstream: {echo}");
    assert_eq!(echo["headers"]["x-airlock-subject"], "ivy", "{echo}");
    assert_eq!(serde_json::from_str::<Value>(echo["body"].as_str().unwrap()).unwrap(), body);

    // Same route, a body the rule refuses.
    let refused =
        stack.post_json("/echo/run", &[("authorization", &bearer(&jwt))], &json!({"cmd": "rm -rf /"})).unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(error_of(&refused)["rule"], "echo-body-guard");
}

#[test]
fn a_refused_request_never_carries_the_upstream_credential_back_to_the_client() {
    let stack = stack();
    let no_token = stack.get("/echo/credentials", &[]).unwrap();
    let denied =
        stack.post_json("/echo/run", &[("authorization", &bearer(&token()))], &json!({"cmd": "rm -rf /"})).unwrap();
    for reply in [no_token, denied] {
        assert!(reply.status == 401 || reply.status == 403, "{}", reply.text());
        let everything = format!("{:?}{}", reply.headers, reply.text());
        assert!(!everything.contains(TEST_UPSTREAM_TOKEN), "{everything}");
    }
}

// ---- signed_request: a token per request, verified by an independent library ----------

/// The filter's signing key (`openssl genpkey -algorithm EC -pkeyopt
/// ec_paramgen_curve:P-256`), given to Envoy as `AIRLOCK_SIGNING_KEY`.
const SIGNING_KEY: &str = fixtures::EC_SIGNING_KEY_PEM;
/// The key it replaced, still published during the rotation: its public half only.
const RETIRING_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEADqYNakSl8Qa56NAhZufqI2Cob8J6r42Wi+ulp5Rkvl8=
-----END PUBLIC KEY-----";
const SIGNED_ISSUER: &str = "https://airlock.e2e";
const SIGNED_AUDIENCE: &str = "customer-db";
const SIGNED_LIFETIME_S: u64 = 4;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("airlock-e2e-{name}-{}-{nanos}", std::process::id()))
}

fn python() -> std::path::PathBuf {
    airlock_e2e::paths::workspace_root().join(".venv").join("bin").join("python")
}

/// `signed_upstream.py`: accepts a request only with a token PyJWT verifies against
/// `jwks_url` and whose binding matches what it received.
fn signed_upstream(jwks_url: &str) -> (airlock_e2e::process::ChildGuard, u16) {
    let port = airlock_e2e::free_port().unwrap();
    let script = airlock_e2e::paths::workspace_root().join("tests/e2e/clients/signed_upstream.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script)
        .args([&port.to_string(), jwks_url, SIGNED_ISSUER, SIGNED_AUDIENCE])
        .stdout(std::process::Stdio::null());
    let child = airlock_e2e::process::ChildGuard::spawn(cmd, "signed upstream").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the signed upstream did not start on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

fn signed_config() -> Value {
    let rules = json!([{"name": "agents-call-the-signed-upstream", "action": "allow",
                        "when": {"path": {"prefix": "/signed"}}}]);
    let mut config = config_with_rules(rules, "deny");
    config["audit"]["flush_interval_ms"] = json!(200);
    config["upstreams"] = json!([{"cluster": UPSTREAM_CLUSTER, "credential": {
        "type": "signed_request", "key": {"env": "AIRLOCK_SIGNING_KEY"}, "key_id": "airlock-e2e-2", "alg": "ES256",
        "issuer": SIGNED_ISSUER, "audience": SIGNED_AUDIENCE, "lifetime_s": SIGNED_LIFETIME_S}}]);
    config
}

/// Both keys of a rotation, as the service config publishes them.
fn signing_keys_toml() -> String {
    format!(
        "[[signing_keys]]\nkey_id = \"airlock-e2e-1\"\nalg = \"EdDSA\"\nkey = \"\"\"{RETIRING_PUBLIC_KEY}\"\"\"\n\n\
         [[signing_keys]]\nkey_id = \"airlock-e2e-2\"\nalg = \"ES256\"\nkey = \"${{AIRLOCK_SIGNING_KEY}}\"\n"
    )
}

/// Sends straight to the upstream, bypassing Envoy: what someone holding a copy of the
/// token could do.
fn replay(port: u16, method: &str, path: &str, token: &str, body: &[u8]) -> airlock_e2e::Reply {
    let url = format!("http://127.0.0.1:{port}{path}");
    let auth = bearer(token);
    airlock_e2e::send(&airlock_e2e::agent(), method, &url, &[("authorization", &auth)], Some(body)).unwrap()
}

#[test]
fn an_upstream_verifies_the_signed_token_with_pyjwt_and_a_replay_elsewhere_or_later_is_refused() {
    let dir = temp_dir("signed");
    let control = airlock_e2e::control::ControlService::start_with_env(
        &dir,
        &[DBA_BOB],
        &signing_keys_toml(),
        &[("AIRLOCK_SIGNING_KEY", SIGNING_KEY)],
    )
    .unwrap();
    let jwks: Value =
        airlock_e2e::send(&airlock_e2e::agent(), "GET", &control.url("/.well-known/jwks.json"), &[], None)
            .unwrap()
            .json()
            .unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, ["airlock-e2e-1", "airlock-e2e-2"], "both keys of the rotation are published: {jwks}");
    assert!(!jwks.to_string().contains("\"d\""), "no private part is published: {jwks}");

    let (_upstream, port) = signed_upstream(&control.url("/.well-known/jwks.json"));
    let stack = builder_for(signed_config(), TestKeys::shared())
        .envoy_env("AIRLOCK_SIGNING_KEY", SIGNING_KEY)
        .control_port(control.port())
        .set("UPSTREAM_PORT", &port.to_string())
        .start()
        .unwrap();
    let agent_token = token();
    let auth = bearer(&agent_token);

    // A GET: no body, signed on its headers.
    let got = stack.get("/signed/items?id=7", &[("authorization", &auth)]).unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    let got = got.json().unwrap();
    let claims = &got["claims"];
    assert_eq!((claims["sub"].as_str(), got["kid"].as_str()), (Some("ivy"), Some("airlock-e2e-2")), "{got}");
    assert_eq!(claims["groups"], json!(["support"]));
    assert_eq!(claims["act"], json!({"sub": SIGNED_ISSUER}));
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), SIGNED_LIFETIME_S);
    assert!(!claims["jti"].as_str().unwrap().is_empty(), "{claims}");

    // A body no rule reads: held until complete, then signed with it.
    let body = json!({"name": "ivy", "note": "a body bound to its token"});
    let put = stack
        .request("PUT", "/signed/profile", &[("authorization", &auth)], Some(body.to_string().as_bytes()))
        .unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    let put = put.json().unwrap();
    let minted = put["token"].as_str().unwrap().to_string();
    assert_ne!(put["claims"]["jti"], claims["jti"], "one token per request");

    // The same token elsewhere: another body, another path, another method.
    let original = body.to_string();
    let other_body = json!({"name": "mallory", "note": "a body bound to its token"}).to_string();
    for (method, path, sent) in [
        ("PUT", "/signed/profile", other_body.as_str()),
        ("PUT", "/signed/admin", &original),
        ("DELETE", "/signed/profile", &original),
    ] {
        let reply = replay(port, method, path, &minted, sent.as_bytes());
        assert_eq!(reply.status, 401, "{method} {path}: {}", reply.text());
        assert_eq!(reply.json().unwrap()["error"], "request binding mismatch");
    }
    // And after its lifetime, even for the very request it was minted for.
    assert_eq!(replay(port, "PUT", "/signed/profile", &minted, original.as_bytes()).status, 200);
    std::thread::sleep(Duration::from_secs(SIGNED_LIFETIME_S + 2));
    let late = replay(port, "PUT", "/signed/profile", &minted, original.as_bytes());
    assert_eq!(late.status, 401, "{}", late.text());
    assert!(late.json().unwrap()["error"].as_str().unwrap().contains("Expired"), "{}", late.text());

    // A body over the hold limit is refused, never sent unsigned.
    let big = vec![b'x'; 1024 * 1024 + 1];
    let refused = stack.request("PUT", "/signed/blob", &[("authorization", &auth)], Some(&big)).unwrap();
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert!(error_of(&refused)["message"].as_str().unwrap().contains("signed_request"));

    // The audit trail names the key, and neither token is in the store or Envoy's log.
    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let sessions = control.get("/v1/sessions?subject=ivy", DBA_BOB.token).unwrap();
        let ids: Vec<String> = sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_string())
            .collect();
        let records: Vec<Value> = ids
            .iter()
            .flat_map(|id| {
                control.get(&format!("/v1/sessions/{id}"), DBA_BOB.token).unwrap()["records"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect();
        if records.len() >= 3 || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(records.len(), 3, "{records:?}");
    for record in records.iter().filter(|r| r["decision"] == "allow") {
        assert_eq!(record["credential"], json!({"kind": "signed_request", "key_id": "airlock-e2e-2"}), "{record}");
    }
    let store = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("airlock.db"))
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
        .collect::<String>();
    assert!(store.contains("airlock-e2e-2"), "the store holds the records");
    let log = stack.envoy_log();
    let key_line = SIGNING_KEY.lines().nth(1).unwrap();
    for secret in [
        agent_token.as_str(),
        agent_token.rsplit('.').next().unwrap(),
        &minted,
        minted.rsplit('.').next().unwrap(),
        key_line,
    ] {
        assert!(!store.contains(secret), "a secret is in the audit store");
        assert!(!log.contains(secret), "a secret is in Envoy's log");
        assert!(!control.log().contains(secret), "a secret is in the service's log");
    }
}

// ---- rotation without reload: secrets the control service holds ------------------------

const SECRET_TTL_S: u64 = 5;

/// What the demo upstream's `/echo` saw in `authorization`.
fn upstream_authorization(stack: &Stack) -> Result<String, String> {
    let reply = stack.get("/echo/rotation", &[("authorization", &bearer(&token()))])?;
    if reply.status != 200 {
        return Err(format!("{} {}", reply.status, reply.text()));
    }
    Ok(reply.json()?["headers"]["authorization"].as_str().unwrap_or_default().to_string())
}

/// Polls until the upstream sees `want` (or `timeout` passes); how long it took.
fn wait_for_upstream_credential(stack: &Stack, want: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let seen = upstream_authorization(stack);
        if seen.as_deref() == Ok(want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "the upstream never saw `{want}`; last: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_secret_changed_in_the_control_service_reaches_the_upstream_within_its_ttl_with_no_restart() {
    let dir = temp_dir("rotation");
    std::fs::create_dir_all(&dir).unwrap();
    let secrets = dir.join("secrets.json");
    std::fs::write(&secrets, r#"{"customer-db-token": "rotated-secret-v1"}"#).unwrap();
    let extra = format!("[secrets]\nfile = \"{}\"\n", secrets.display());
    let mut control = airlock_e2e::control::ControlService::start(&dir, &[DBA_BOB], &extra).unwrap();
    // Down before the proxy ever reached it: the secret is never fetched.
    control.kill();

    let mut config = credentials_config();
    config["upstreams"] = json!([{"cluster": UPSTREAM_CLUSTER, "credential": {
        "type": "bearer", "token": {"control": "customer-db-token", "ttl_seconds": SECRET_TTL_S}}}]);
    let stack = builder_for(config, TestKeys::shared()).control_port(control.port()).concurrency(2).start().unwrap();
    wait_first_fetch(stack.jwks());
    let never = stack.get("/echo/rotation", &[("authorization", &bearer(&token()))]).unwrap();
    assert_eq!(never.status, 503, "{}", never.text());
    assert_eq!(error_of(&never)["code"], "dependency_unavailable");
    assert_eq!(error_of(&never)["retry"], "later");
    assert_eq!(never.header("retry-after"), Some("1"), "{:?}", never.headers);

    // The service comes up: the next tick fetches it.
    control.restart().unwrap();
    wait_for_upstream_credential(&stack, "Bearer rotated-secret-v1", Duration::from_secs(10));

    // Rotated in the file: every request after the TTL carries the new value, no restart.
    std::fs::write(&secrets, r#"{"customer-db-token": "rotated-secret-v2"}"#).unwrap();
    let took = wait_for_upstream_credential(&stack, "Bearer rotated-secret-v2", Duration::from_secs(SECRET_TTL_S + 3));
    assert!(took <= Duration::from_secs(SECRET_TTL_S + 2), "took {took:?}");

    // The service goes down: the cached value keeps working past its TTL.
    control.kill();
    std::thread::sleep(Duration::from_secs(SECRET_TTL_S + 1));
    for _ in 0..4 {
        assert_eq!(upstream_authorization(&stack).unwrap(), "Bearer rotated-secret-v2");
    }
    assert!(stack.stat("wasmcustom.airlock.credentials.secret_fetch_failed").unwrap_or(0) >= 1);
    let log = stack.envoy_log();
    assert!(log.contains("control secret `customer-db-token` not fetched"), "the outage is logged by name");
    assert!(!log.contains("rotated-secret-v"), "a secret value is in Envoy's log");
}
