//! An `approve` rule of the shipped config with no control service listening fails closed
//! with a machine-readable answer that names the rule, and the write never runs.

use airlock_e2e::fixtures::wait_first_fetch;
use airlock_e2e::*;
use serde_json::{json, Value};

fn customer_count(stack: &Stack) -> Value {
    let query = json!({"sql": "SELECT count(*) FROM customers"}).to_string();
    let reply = send(
        stack.agent(),
        "POST",
        &stack.upstream_url("/sql"),
        &[("content-type", "application/json")],
        Some(query.as_bytes()),
    )
    .unwrap();
    reply.json().unwrap()["rows"][0][0].clone()
}

#[test]
fn approve_rule_with_the_approval_service_down_fails_closed_and_nothing_runs() {
    let keys = TestKeys::new();
    // No `.control_port(..)`: the control service's cluster points at a closed port.
    let stack = builder_for(test_plugin_config(), &keys).start().unwrap();
    wait_first_fetch(stack.jwks());
    let before = customer_count(&stack);
    assert_eq!(before, json!(20));
    let auth = auth_for(&keys, "dana", &["dba"]);
    let insert = json!({"sql": "INSERT INTO customers (name) VALUES ('Mallory')"});
    let reply = stack.post_json("/sql", &[("authorization", &auth)], &insert).unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    let error = error_of(&reply);
    assert_eq!(error["code"], "dependency_unavailable", "{error}");
    assert_eq!(error["retry"], "later", "{error}");
    assert_eq!(error["rule"], "sql-writes-need-approval", "{error}");
    assert_eq!(customer_count(&stack), before, "the INSERT ran without approval");
    assert!(stack.stat("wasmcustom.airlock.dependency_unavailable").unwrap_or(0) >= 1);
}
