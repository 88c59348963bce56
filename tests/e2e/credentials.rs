//! Credential injection by the real filter in a real Envoy: the upstream gets its own
//! credential (from Envoy's environment, as the shipped config says) and never the
//! agent's token, whether the decision is taken on the headers or waits for the body.

use airlock_e2e::fixtures::wait_first_fetch;
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
