//! What the filter writes and what the control service acts on, end to end: real Envoy +
//! airlock.wasm + the real service + a local alert receiver. The filter and the service
//! share one wire crate; these tests pin that the service reacts to what the filter
//! really sends, not to what a test helper imagines it sends.

use std::time::Duration;

use airlock_e2e::control::{ControlService, DBA_BOB};
use airlock_e2e::fixtures::{auth_for, builder_for, test_plugin_config};
use airlock_e2e::recorder::Recorder;
use airlock_e2e::TestKeys;
use serde_json::{json, Value};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("airlock-e2e-{name}-{}-{nanos}", std::process::id()))
}

/// The service's alert sinks: a generic webhook and a Slack-format one, both on `hooks`.
fn sinks(hooks: &Recorder) -> String {
    format!(
        "\n[alerts]\ninitial_backoff_ms = 100\n\n[[alerts.sinks]]\ntype = \"webhook\"\nurl = \"{}\"\nevents = \
            [\"request_denied\"]\n\n[[alerts.sinks]]\ntype = \"slack\"\nurl = \"{}\"\nevents = [\"request_denied\"]\n",
        hooks.url("/webhook"),
        hooks.url("/slack")
    )
}

fn by_rule<'a>(alerts: &'a [Value], rule: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["details"]["rule"] == rule || (rule == "default" && a["details"]["rule"].is_null()))
}

#[test]
fn requests_denied_by_a_rule_and_by_default_each_raise_the_denied_alert() {
    let hooks = Recorder::start().unwrap();
    let control = ControlService::start(&temp_dir("alerts"), &[DBA_BOB], &sinks(&hooks)).unwrap();
    let mut config = test_plugin_config();
    config["audit"]["flush_interval_ms"] = json!(200);
    let stack = builder_for(config, TestKeys::shared()).control_port(control.port()).start().unwrap();
    let alice = auth_for(TestKeys::shared(), "alice", &["analyst"]);
    let headers = [("authorization", alice.as_str())];

    let blocked = stack.post_json("/sql", &headers, &json!({"sql": "DROP TABLE customers"})).unwrap();
    assert_eq!(blocked.status, 403, "{}", blocked.text());
    assert_eq!(stack.get("/nowhere/at-all", &headers).unwrap().status, 403);
    assert_eq!(stack.get("/tables", &headers).unwrap().status, 200, "an allowed request raises no alert");

    let webhook = hooks.wait_for("/webhook", 2, Duration::from_secs(20));
    assert_eq!(webhook.len(), 2, "one alert per denial: {webhook:?}\n{}", control.log());
    let by_rule_alert = by_rule(&webhook, "block-destructive-sql").expect("the rule's denial raised an alert");
    assert_eq!(by_rule_alert["event"], "request_denied");
    assert_eq!(by_rule_alert["details"]["subject"], "alice");
    assert_eq!(by_rule_alert["details"]["path"], "/sql");
    let by_default = by_rule(&webhook, "default").expect("the default denial raised an alert");
    assert_eq!(by_default["details"]["path"], "/nowhere/at-all");
    assert!(by_default["summary"].as_str().unwrap().contains("alice"));

    let slack = hooks.wait_for("/slack", 2, Duration::from_secs(10));
    assert_eq!(slack.len(), 2, "{slack:?}");
    let texts: Vec<&str> = slack.iter().map(|m| m["text"].as_str().unwrap_or("")).collect();
    assert!(
        texts.iter().any(|t| t.contains("block-destructive-sql") && t.contains("alice") && t.contains("/sql")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("/nowhere/at-all") && t.contains("default")), "{texts:?}");
    assert!(slack.iter().all(|m| m["blocks"].is_array()), "Slack messages carry Block Kit blocks");

    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hooks.wait_for("/webhook", 3, Duration::from_millis(1)).len(), 2, "the allowed request raised none");
}

#[test]
fn an_approve_rule_that_does_not_read_the_body_counts_its_match_once_per_request() {
    let control = ControlService::start(&temp_dir("approve-once"), &[DBA_BOB], "").unwrap();
    let mut config = test_plugin_config();
    let rule = json!({
        "name": "customer-writes-need-a-ticket",
        "action": "approve",
        "when": {"methods": ["PUT"], "path": {"prefix": "/customers"}},
        "approval": {"mode": "ticket", "approvers": {"groups": ["dba"]}, "ttl_seconds": 600}
    });
    config["rules"].as_array_mut().unwrap().insert(0, rule);
    let stack = builder_for(config, TestKeys::shared()).control_port(control.port()).start().unwrap();
    let alice = auth_for(TestKeys::shared(), "alice", &["support"]);
    let headers = [("authorization", alice.as_str()), ("content-type", "application/json")];
    for i in 0..3 {
        let body = json!({"email": format!("new-{i}@example.com")}).to_string();
        let reply = stack.request("PUT", "/customers/1", &headers, Some(body.as_bytes())).unwrap();
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
    assert_eq!(stack.stat("wasmcustom.airlock.rule.customer-writes-need-a-ticket.matched"), Some(3));
    assert_eq!(stack.stat("wasmcustom.airlock.approvals.requested"), Some(3));
    let pending = control.get("/v1/approvals?status=pending", DBA_BOB.token).unwrap();
    let list = pending["approvals"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 3, "{pending}");
    assert!(
        list.iter().all(|a| !a["body"].as_str().unwrap_or("").contains("@example.com")),
        "approvers see masked bodies: {pending}"
    );
}
