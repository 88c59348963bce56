//! Deciding held requests from Slack, end to end: real Envoy + airlock.wasm + the real
//! control service + the demo upstream. A signed `block_actions` payload in Slack's format
//! (what Slack posts when an approver clicks Approve or Deny in the alert) releases or
//! refuses the agent's held request.

use std::time::{Duration, Instant};

use airlock_e2e::control::{ControlService, DBA_BOB};
use airlock_e2e::fixtures::{auth_for, builder_for, test_plugin_config};
use airlock_e2e::{Stack, TestKeys};
use serde_json::{json, Value};

const SIGNING_SECRET: &str = "e2e-slack-signing-secret-0123456789";
const SLACK_SAM: &str = "U0SAM";
const INSERT: &str = "INSERT INTO customers (name, email) VALUES ('Zed', 'zed@example.com')";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes a form value (RFC 3986 unreserved characters kept).
fn form_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn setup() -> (Stack, ControlService, String) {
    let dir = std::env::temp_dir().join(format!("airlock-e2e-slack-{}-{}", std::process::id(), now_nanos()));
    // `sam` decides only from Slack: an approver entry with a Slack member ID.
    let extra = format!(
        "\n[[approvers]]\nname = \"sam\"\ntoken_sha256 = \"{}\"\ngroups = [\"dba\"]\nslack_user_id = \"{SLACK_SAM}\"\n\
         \n[slack]\nsigning_secret = \"${{SLACK_SIGNING_SECRET}}\"\n",
        hex(&hmac_sha256::Hash::hash(b"sam-token-unused-0123456789"))
    );
    let control =
        ControlService::start_with_env(&dir, &[DBA_BOB], &extra, &[("SLACK_SIGNING_SECRET", SIGNING_SECRET)]).unwrap();
    let mut config = test_plugin_config();
    for rule in config["rules"].as_array_mut().unwrap() {
        if rule["action"] == "approve" {
            rule["approval"]["mode"] = json!("hold");
            rule["approval"]["ttl_seconds"] = json!(60);
        }
    }
    let stack = builder_for(config, TestKeys::shared()).control_port(control.port()).start().unwrap();
    let auth = auth_for(TestKeys::shared(), "alice", &["analyst"]);
    (stack, control, auth)
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Posts what Slack posts when `user` clicks `action_id` on the alert for `approval_id`.
fn slack_click(control: &ControlService, user: &str, action_id: &str, approval_id: &str) -> (u16, Value) {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": "sam", "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM", "domain": "acme"},
        "api_app_id": "A0AIRLOCK",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0AIRLOCK"},
        "channel": {"id": "C0AIRLOCK", "name": "approvals"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": "Airlock approval"},
        "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b1", "value": approval_id,
            "action_ts": "1700000001.000200"}]
    });
    let body = format!("payload={}", form_value(&payload.to_string()));
    let ts = (now_nanos() / 1_000_000_000).to_string();
    let mut mac = hmac_sha256::HMAC::new(SIGNING_SECRET.as_bytes());
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let sig = format!("v0={}", hex(&mac.finalize()));
    let reply = airlock_e2e::send(
        &airlock_e2e::agent_with_timeout(Duration::from_secs(30)),
        "POST",
        &control.url("/v1/slack/interactions"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &sig),
        ],
        Some(body.as_bytes()),
    )
    .unwrap();
    (reply.status, reply.json().unwrap_or(Value::Null))
}

/// Sends the held request on a thread; the answer arrives when someone decides.
fn send_in_background(stack: &Stack, auth: &str) -> std::thread::JoinHandle<(u16, Value)> {
    let (url, auth) = (stack.url("/sql"), auth.to_string());
    let body = json!({"sql": INSERT}).to_string();
    std::thread::spawn(move || {
        let agent = airlock_e2e::agent_with_timeout(Duration::from_secs(120));
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let reply = airlock_e2e::send(&agent, "POST", &url, &headers, Some(body.as_bytes())).unwrap();
        (reply.status, reply.json().unwrap_or(Value::Null))
    })
}

fn customers_named_zed(stack: &Stack) -> usize {
    let reply = stack
        .post_json(
            "/sql",
            &[("authorization", &auth_for(TestKeys::shared(), "carol", &["analyst"]))],
            &json!({"sql": "SELECT name FROM customers WHERE name = 'Zed'"}),
        )
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().unwrap()["rows"].as_array().map_or(0, Vec::len)
}

#[test]
fn held_request_approved_by_a_signed_slack_click_completes_with_200() {
    let (stack, control, auth) = setup();
    let pending = send_in_background(&stack, &auth);
    let approval = control.wait_for_pending(&DBA_BOB, Duration::from_secs(20)).unwrap();
    let id = approval["id"].as_str().unwrap();
    assert_eq!(customers_named_zed(&stack), 0, "nothing ran before the decision");

    // A click by someone Slack knows but Airlock does not decides nothing.
    let (status, reply) = slack_click(&control, "U0STRANGER", "airlock_approve", id);
    assert_eq!((status, &reply["response_type"]), (200, &json!("ephemeral")), "{reply}");
    let clicked = Instant::now();
    let (status, reply) = slack_click(&control, SLACK_SAM, "airlock_approve", id);
    assert_eq!((status, &reply["status"]), (200, &json!("approved")), "{reply}");
    let (status, body) = pending.join().unwrap();
    assert_eq!(status, 200, "{body}");
    eprintln!("Slack click to upstream answer: {:?}", clicked.elapsed());
    assert_eq!(customers_named_zed(&stack), 1);
    let decided = control.get(&format!("/v1/approvals/{id}"), DBA_BOB.token).unwrap();
    assert_eq!(decided["decisions"][0]["approver"], "sam");
    assert_eq!(decided["decisions"][0]["reason"], "approved in Slack by sam");
    assert!(!control.log().contains(SIGNING_SECRET));
}

#[test]
fn held_request_denied_from_slack_gets_the_deny_reply_and_never_runs() {
    let (stack, control, auth) = setup();
    let pending = send_in_background(&stack, &auth);
    let approval = control.wait_for_pending(&DBA_BOB, Duration::from_secs(20)).unwrap();
    let (status, reply) = slack_click(&control, SLACK_SAM, "airlock_deny", approval["id"].as_str().unwrap());
    assert_eq!((status, &reply["status"]), (200, &json!("denied")), "{reply}");
    let (status, body) = pending.join().unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "approval_denied");
    assert_eq!(body["error"]["retry"], "never");
    assert_eq!(customers_named_zed(&stack), 0);
}
