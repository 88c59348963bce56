//! MCP tool-definition pins over HTTP: trust on first use, a changed definition recorded
//! once and alerted, accepted only by an approver, and then the pin.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn fingerprint(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn report(tool: &str, fp: &str, pin: &str) -> Value {
    json!({"observations": [{"upstream": "mcp-cluster", "tool": tool, "fingerprint": fp, "pin": pin}]})
}

/// Reports `fp` for `tool` as a filter that trusts `pin` (itself on first sight).
async fn observe_as(s: &Server, tool: &str, fp: &str, pin: &str) -> Value {
    let body = report(tool, fp, pin);
    let (status, v) = call("POST", &s.at("/v1/mcp/tool-definitions"), Some(FILTER_KEY), Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Reports `fp` for `tool` as a filter that trusts what it reports.
async fn observe(s: &Server, tool: &str, fp: &str) -> Value {
    observe_as(s, tool, fp, fp).await
}

fn pin_of<'a>(pins: &'a Value, tool: &str) -> &'a Value {
    pins["pins"].as_array().unwrap().iter().find(|p| p["tool"] == tool).unwrap_or_else(|| panic!("{pins}"))
}

fn hook_config(url: &str) -> String {
    format!(
        "\n[alerts]\ninitial_backoff_ms = 100\n\n[[alerts.sinks]]\ntype = \"webhook\"\nurl = \"{url}/hook\"\nevents = \
         [\"tool_definition_changed\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_definition_is_recorded_once_alerted_and_becomes_the_pin_only_when_an_approver_accepts_it() {
    let hooks = Receiver::start(|_, _, _| 200).await;
    let s = Server::start_with(ServerOptions { extra_config: hook_config(&hooks.url), ..ServerOptions::default() });

    // First sight is trusted; the same definition again changes nothing.
    let pins = observe(&s, "echo", &fingerprint(1)).await;
    assert_eq!(
        pin_of(&pins, "echo"),
        &json!({"upstream": "mcp-cluster", "tool": "echo", "fingerprint": fingerprint(1)})
    );
    observe(&s, "echo", &fingerprint(1)).await;
    let (_, changes) = call("GET", &s.at("/v1/mcp/tool-changes?status=all"), Some(ALICE), None).await;
    assert_eq!(changes["changes"], json!([]), "trust on first use records no change");

    // The rug pull, reported by two filters: one pending change, one alert.
    let pins = observe_as(&s, "echo", &fingerprint(2), &fingerprint(1)).await;
    observe_as(&s, "echo", &fingerprint(2), &fingerprint(1)).await;
    let pending = &pin_of(&pins, "echo")["pending"];
    let id = pending["id"].as_str().unwrap().to_string();
    assert_eq!(pending["fingerprint"], fingerprint(2));
    assert_eq!(pin_of(&pins, "echo")["fingerprint"], fingerprint(1), "the pin holds until accepted");
    let (_, changes) = call("GET", &s.at("/v1/mcp/tool-changes"), Some(ALICE), None).await;
    let list = changes["changes"].as_array().unwrap();
    assert_eq!(list.len(), 1, "recorded once: {changes}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"], "pending");
    assert_eq!(list[0]["old_fingerprint"], fingerprint(1));

    let alerts = hooks.wait_for(1, Duration::from_secs(10)).await;
    let alert = alerts[0].json();
    assert_eq!(alert["event"], "tool_definition_changed");
    assert_eq!(alert["details"]["change_id"], id.as_str());
    assert_eq!(alert["details"]["tool"], "echo");
    assert!(alert["summary"].as_str().unwrap().contains(&format!("airlock tools accept {id}")), "{alert}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hooks.seen().len(), 1, "the second report raised no second alert");

    // Neither the filter nor an auditor may accept it; an approver may, once.
    let accept = s.at(&format!("/v1/mcp/tool-changes/{id}/accept"));
    let (status, v) = call("POST", &accept, Some(AUDRA), Some(&json!({}))).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "missing_role");
    let (status, _) = call("POST", &accept, Some(FILTER_KEY), Some(&json!({}))).await;
    assert_eq!(status, 401);
    let (_, pins) = call("GET", &s.at("/v1/mcp/tool-pins"), Some(FILTER_KEY), None).await;
    assert_eq!(pin_of(&pins, "echo")["fingerprint"], fingerprint(1), "refused acceptances changed nothing");

    let (status, v) = call("POST", &accept, Some(BOB), Some(&json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["accepted_by"], "bob");
    let (status, v) = call("POST", &accept, Some(ALICE), Some(&json!({}))).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "tool_change_not_pending");
    let (_, pins) = call("GET", &s.at("/v1/mcp/tool-pins"), Some(FILTER_KEY), None).await;
    assert_eq!(
        pin_of(&pins, "echo"),
        &json!({"upstream": "mcp-cluster", "tool": "echo", "fingerprint": fingerprint(2)})
    );
    assert_eq!(observe(&s, "echo", &fingerprint(2)).await, pins, "the accepted definition is no change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_definition_supersedes_a_pending_change_and_only_the_newer_one_can_be_accepted() {
    let s = Server::start();
    observe(&s, "add", &fingerprint(1)).await;
    let first = observe_as(&s, "add", &fingerprint(2), &fingerprint(1)).await;
    let first_id = pin_of(&first, "add")["pending"]["id"].as_str().unwrap().to_string();
    let second = observe_as(&s, "add", &fingerprint(3), &fingerprint(1)).await;
    let pending = &pin_of(&second, "add")["pending"];
    assert_ne!(pending["id"], first_id.as_str());
    assert_eq!(pending["fingerprint"], fingerprint(3));
    let (status, v) =
        call("POST", &s.at(&format!("/v1/mcp/tool-changes/{first_id}/accept")), Some(BOB), Some(&json!({}))).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("superseded"), "{v}");
    let (_, superseded) = call("GET", &s.at("/v1/mcp/tool-changes?status=superseded"), Some(BOB), None).await;
    assert_eq!(superseded["changes"][0]["id"], first_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reported_before_the_first_sight_still_pins_what_the_filter_trusted() {
    let s = Server::start();
    // Another worker's report of the first sight is still on its way.
    let pins = observe_as(&s, "echo", &fingerprint(2), &fingerprint(1)).await;
    assert_eq!(pin_of(&pins, "echo")["fingerprint"], fingerprint(1));
    assert_eq!(pin_of(&pins, "echo")["pending"]["fingerprint"], fingerprint(2));
    let late = observe(&s, "echo", &fingerprint(1)).await;
    assert_eq!(late, pins, "the late first sight changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_validated_by_field_and_only_the_filter_may_send_them() {
    let s = Server::start();
    let url = s.at("/v1/mcp/tool-definitions");
    let (status, v) = call("POST", &url, Some(FILTER_KEY), Some(&report("echo", "not-hex", "not-hex"))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "observations[0].fingerprint");
    let (status, v) = call("POST", &url, Some(FILTER_KEY), Some(&report("", &fingerprint(1), &fingerprint(1)))).await;
    assert_eq!((status, v["error"]["field"].clone()), (400, json!("observations[0].tool")));
    let (status, _) = call("POST", &url, Some(ALICE), Some(&report("echo", &fingerprint(1), &fingerprint(1)))).await;
    assert_eq!(status, 401, "an approver is not the filter");
    let (status, _) = call("GET", &s.at("/v1/mcp/tool-changes"), Some(FILTER_KEY), None).await;
    assert_eq!(status, 401, "the filter is not an approver");
}
