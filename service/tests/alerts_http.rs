//! Alert delivery to local receivers: Slack-compatible, generic webhook and PagerDuty
//! Events v2 payloads, retry with backoff after a 500, and no secrets in the server log.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::time::Duration;

use airlock_wire::{Code, Decision};
use common::*;
use serde_json::{json, Value};

fn alerts_config(slack: &str, webhook: &str, pagerduty: &str) -> String {
    format!(
        r#"
[alerts]
max_attempts = 4
initial_backoff_ms = 100

[[alerts.sinks]]
type = "slack"
url = "{slack}/services/${{SLACK_SECRET_PATH}}"
events = ["approval_pending"]

[[alerts.sinks]]
type = "webhook"
url = "{webhook}/hook"
events = ["request_denied"]

[[alerts.sinks]]
type = "pagerduty"
url = "{pagerduty}/v2/enqueue"
routing_key = "${{PD_ROUTING_KEY}}"
severity = "error"
events = ["approval_pending", "request_denied"]
"#
    )
}

const SLACK_SECRET: &str = "T000SECRET/B000SECRET/XXXXsecretXXXX";
const PD_KEY: &str = "R0UT1NGK3Y-secret-value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_every_sink_with_retry_and_without_leaking_secrets() {
    // Slack first answers 500 twice: delivery must retry with backoff and then succeed.
    let slack = Receiver::start(|n, _, _| if n < 2 { 500 } else { 200 }).await;
    let webhook = Receiver::start(|_, _, _| 200).await;
    let pagerduty = Receiver::start(|_, _, _| 202).await;
    let s = Server::start_with(ServerOptions {
        extra_config: alerts_config(&slack.url, &webhook.url, &pagerduty.url),
        env: vec![("SLACK_SECRET_PATH".into(), SLACK_SECRET.into()), ("PD_ROUTING_KEY".into(), PD_KEY.into())],
        database: None,
    });

    let id = s.create_approval(&approval_request("agent-9", 1, 300, "hold")).await;
    let seen = slack.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 3, "two failures then one success, nothing more");
    assert_eq!(seen[0].path, format!("/services/{SLACK_SECRET}"));
    let gap1 = seen[1].at - seen[0].at;
    let gap2 = seen[2].at - seen[1].at;
    assert!(gap1 >= Duration::from_millis(90), "first retry after ~100ms, was {gap1:?}");
    assert!(gap2 >= Duration::from_millis(180), "backoff doubles, second gap {gap2:?}");
    let msg = seen[2].json();
    assert!(msg["text"].as_str().unwrap().contains("agent-9"), "{msg}");
    let button = &msg["blocks"][1]["elements"][0];
    assert_eq!(button["type"], "button");
    assert_eq!(button["url"], format!("{}/console#/approvals/{id}", s.url));

    let pd = pagerduty.wait_for(1, Duration::from_secs(5)).await;
    let ev = pd[0].json();
    assert_eq!(ev["routing_key"], PD_KEY);
    assert_eq!(ev["event_action"], "trigger");
    assert_eq!(ev["payload"]["severity"], "error");
    assert_eq!(ev["payload"]["source"], "airlock");
    assert!(ev["payload"]["summary"].as_str().unwrap().contains("POST /v1/sql"));
    assert_eq!(ev["dedup_key"], format!("airlock-approval-{id}"));

    // A denied request in the audit stream raises the "denied" alert (webhook + PagerDuty);
    // an allowed one raises nothing.
    let (status, _) =
        s.ingest(&[record("d1", "sess-x", 1, DENIED_BY_RULE, 403), record("a1", "sess-x", 2, ALLOW, 200)]).await;
    assert_eq!(status, 200);
    let hooks = webhook.wait_for(1, Duration::from_secs(5)).await;
    let h = hooks[0].json();
    assert_eq!(h["event"], "request_denied");
    assert_eq!(h["details"]["record_id"], "d1");
    assert_eq!(h["details"]["rule"], "no-deletes");
    pagerduty.wait_for(2, Duration::from_secs(5)).await;
    // A retried batch does not alert twice.
    s.ingest(&[record("d1", "sess-x", 1, DENIED_BY_RULE, 403)]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(webhook.seen().len(), 1);
    assert_eq!(pagerduty.seen().len(), 2);

    // Nothing secret in the server's log: filter key, approver tokens, webhook path, routing key.
    s.decide(ALICE, &id, "approve", "ok").await;
    let log = s.log();
    assert!(log.contains("alert delivered"), "{log}");
    assert!(log.contains("alert sink refused the alert"), "the 500s are logged: {log}");
    for secret in [FILTER_KEY, ALICE, SLACK_SECRET, PD_KEY, "SECRET"] {
        assert!(!log.contains(secret), "secret {secret:?} leaked into the log:\n{log}");
    }
}

/// A server whose only sink is a generic webhook for `request_denied`, and that receiver.
async fn denied_alerts_to_a_webhook() -> (Server, Receiver) {
    let webhook = Receiver::start(|_, _, _| 200).await;
    let s = Server::start_with(ServerOptions {
        extra_config: format!(
            "[alerts]\ninitial_backoff_ms = 100\n\n[[alerts.sinks]]\ntype = \"webhook\"\nurl = \"{}/hook\"\nevents = \
                [\"request_denied\"]\n",
            webhook.url
        ),
        ..ServerOptions::default()
    });
    (s, webhook)
}

/// The decisions the filter really writes for policy blocks each raise the alert, naming
/// the rule (or the default), the subject and the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_denied_by_a_rule_or_by_default_raise_the_denied_alert() {
    let (s, webhook) = denied_alerts_to_a_webhook().await;
    let cases = [
        ("by-rule", DENIED_BY_RULE, json!("no-deletes"), "no-deletes"),
        ("by-default", DENIED_BY_DEFAULT, Value::Null, "default"),
    ];
    for (n, (id, decision, rule, named)) in cases.into_iter().enumerate() {
        let (status, v) = s.ingest(&[record(id, "sess-d", n as i64, decision, 403)]).await;
        assert_eq!(status, 200, "{v}");
        let alert = webhook.wait_for(n + 1, Duration::from_secs(5)).await[n].json();
        assert_eq!(alert["event"], "request_denied", "{alert}");
        assert_eq!(alert["details"]["record_id"], id);
        assert_eq!(alert["details"]["rule"], rule);
        assert_eq!(alert["details"]["subject"], "agent-1");
        assert_eq!(alert["details"]["path"], format!("/v1/items/{id}"));
        assert_eq!(alert["summary"], format!("blocked POST /v1/items/{id} by agent-1 (rule {named})"));
    }
}

/// Other refusals are not policy denials: outages, approvals and bad tokens raise no
/// "request denied" alert, and neither do allowed requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_decisions_raise_no_denied_alert() {
    let (s, webhook) = denied_alerts_to_a_webhook().await;
    let others = [
        ALLOW,
        Decision::Approved,
        Decision::DryRunAllow,
        Decision::Incomplete,
        Decision::Refused(Code::Unauthenticated),
        Decision::Refused(Code::ApprovalDenied),
        Decision::Refused(Code::DependencyUnavailable),
    ];
    let batch: Vec<_> =
        others.iter().enumerate().map(|(i, d)| record(&format!("o{i}"), "sess-o", i as i64, *d, 200)).collect();
    let (status, v) = s.ingest(&batch).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(7)), "{v}");
    // One denial after them: the first alert to arrive is that one.
    s.ingest(&[record("last", "sess-o", 9, DENIED_BY_DEFAULT, 403)]).await;
    let seen = webhook.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen_all = webhook.seen();
    assert_eq!(seen_all.len(), 1, "{seen_all:?}");
    assert_eq!(seen[0].json()["details"]["record_id"], "last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sink_never_blocks_requests() {
    // Port 9 on loopback: nothing listens, every delivery fails and is retried.
    let s = Server::start_with(ServerOptions {
        extra_config: "[alerts]\nmax_attempts = 3\ninitial_backoff_ms = 2000\n[[alerts.sinks]]\ntype \
            = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n"
            .into(),
        ..ServerOptions::default()
    });
    let started = std::time::Instant::now();
    for _ in 0..5 {
        s.create_approval(&approval_request("agent-9", 1, 300, "hold")).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "creating approvals waited on alert delivery: {:?}",
        started.elapsed()
    );
    let (status, v) = call("GET", &s.at("/v1/approvals?status=pending"), Some(ALICE), None).await;
    assert_eq!(status, 200);
    assert_eq!(v["approvals"].as_array().unwrap().len(), 5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.log().contains("alert delivery failed"));
    assert!(!s.log().contains("127.0.0.1:9"), "sink URLs must not be logged");
}

#[test]
fn server_refuses_to_start_with_a_missing_secret_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[[alerts.sinks]]\ntype = \"slack\"\nurl = \"${AIRLOCK_TEST_UNSET_HOOK}\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite://{}", dir.path().join("db").display()))
        .arg("--config")
        .arg(&cfg)
        .env("AIRLOCK_FILTER_KEY", FILTER_KEY)
        .env_remove("AIRLOCK_TEST_UNSET_HOOK")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alerts.sinks[0].url") && err.contains("AIRLOCK_TEST_UNSET_HOOK"), "{err}");
}

#[test]
fn server_refuses_a_short_filter_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite://{}", dir.path().join("db").display()))
        .env("AIRLOCK_FILTER_KEY", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too short"), "{err}");
}
