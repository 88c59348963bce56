//! Just-in-time approvals end to end: real Envoy + airlock.wasm + the real control
//! service + the demo upstream. The agent is `alice`; `bob` approves.

use std::time::{Duration, Instant};

use airlock_e2e::control::{ControlService, DBA_ALICE, DBA_BOB};
use airlock_e2e::fixtures::{auth_for, builder_for, error_of, test_plugin_config};
use airlock_e2e::{Stack, TestKeys};
use serde_json::{json, Value};

const INSERT: &str = "INSERT INTO customers (name, email) VALUES ('Zed', 'zed@example.com')";

struct Setup {
    stack: Stack,
    control: ControlService,
    auth: String,
}

fn setup(mode: &str, ttl_seconds: u64) -> Setup {
    let keys = TestKeys::shared();
    let dir = std::env::temp_dir().join(format!("airlock-e2e-control-{}-{}", std::process::id(), rand_suffix()));
    let control = ControlService::start(&dir, &[DBA_BOB, DBA_ALICE], "").unwrap();
    let mut config = test_plugin_config();
    for rule in config["rules"].as_array_mut().unwrap() {
        if rule["action"] == "approve" {
            rule["approval"]["mode"] = json!(mode);
            rule["approval"]["ttl_seconds"] = json!(ttl_seconds);
        }
    }
    let stack = builder_for(config, keys).control_port(control.port()).start().unwrap();
    let auth = auth_for(keys, "alice", &["analyst"]);
    Setup { stack, control, auth }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn customers_named(stack: &Stack, name: &str) -> usize {
    let conn_rows = stack
        .post_json(
            "/sql",
            &[("authorization", &auth_for(TestKeys::shared(), "carol", &["analyst"]))],
            &json!({"sql": format!("SELECT name FROM customers WHERE name = '{name}'")}),
        )
        .unwrap();
    assert_eq!(conn_rows.status, 200, "{}", conn_rows.text());
    conn_rows.json().unwrap()["rows"].as_array().map_or(0, Vec::len)
}

/// Posts `sql` as the agent, redeeming `ticket` when given.
fn post_sql(s: &Setup, sql: &str, ticket: Option<&str>) -> airlock_e2e::Reply {
    let mut headers = vec![("authorization", s.auth.as_str())];
    if let Some(t) = ticket {
        headers.push(("x-airlock-approval-id", t));
    }
    s.stack.post_json("/sql", &headers, &json!({"sql": sql})).unwrap()
}

/// Sends the held request on a thread; the answer arrives when someone decides.
fn send_in_background(stack: &Stack, auth: &str, sql: &str) -> std::thread::JoinHandle<(u16, Value, Instant)> {
    let url = stack.url("/sql");
    let auth = auth.to_string();
    let body = json!({"sql": sql}).to_string();
    std::thread::spawn(move || {
        let agent = airlock_e2e::agent_with_timeout(Duration::from_secs(120));
        let reply = airlock_e2e::send(
            &agent,
            "POST",
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("x-airlock-reason", "add the new customer"),
            ],
            Some(body.as_bytes()),
        )
        .unwrap();
        let v = reply.json().unwrap_or(Value::Null);
        (reply.status, v, Instant::now())
    })
}

#[test]
fn held_request_reaches_the_upstream_only_after_approval() {
    let s = setup("hold", 60);
    let pending = send_in_background(&s.stack, &s.auth, INSERT);
    let approval = s.control.wait_for_pending(&DBA_BOB, Duration::from_secs(20)).unwrap();
    // The approver sees exactly what will run, with PII masked, and who asks and why.
    assert_eq!(approval["subject"], "alice");
    assert_eq!(approval["rule"], "sql-writes-need-approval");
    assert_eq!(approval["method"], "POST");
    let body = approval["body"].as_str().unwrap();
    assert!(body.contains("INSERT INTO customers"), "{body}");
    assert!(!body.contains("zed@example.com"), "approvers see masked bodies: {body}");
    assert_eq!(approval["reason"], "add the new customer");
    assert_eq!(customers_named(&s.stack, "Zed"), 0, "nothing ran before the decision");

    let id = approval["id"].as_str().unwrap();
    let decided = Instant::now();
    let (status, _) = s.control.decide(id, &DBA_BOB, "approve", "looks right").unwrap();
    assert_eq!(status, 200);
    let (status, body, answered) = pending.join().unwrap();
    assert_eq!(status, 200, "{body}");
    eprintln!("approval round trip after the decision: {:?}", answered.duration_since(decided));
    assert_eq!(customers_named(&s.stack, "Zed"), 1);
}

/// The approver works in the console in real headless Chromium (token pasted, the pending
/// list refreshing itself) while Envoy holds the agent's request; approving there lets it
/// through.
#[test]
fn held_request_completes_after_approval_in_the_browser_console() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(driver) = rt.block_on(airlock_e2e::browser::Driver::start()) else {
        return;
    };
    let s = setup("hold", 60);
    rt.block_on(async {
        driver.goto(&s.control.url("/console")).await;
        driver.type_into("#token", DBA_BOB.token).await;
        driver.click("#load").await;
        driver.wait_text("#empty", "Nothing is waiting").await;
    });
    let pending = send_in_background(&s.stack, &s.auth, INSERT);
    rt.block_on(async {
        driver.wait_text("#list", "POST /sql").await;
        driver.click("#list li").await;
        driver.wait_text("#d-subject", "alice").await;
        let shown = driver.text("#d-request").await;
        assert!(shown.contains("INSERT INTO customers") && !shown.contains("zed@example.com"), "{shown}");
        driver.type_into("#reason", "checked in the browser").await;
        driver.click("#approve").await;
        driver.wait_text("#message", "Status is now approved").await;
    });
    let (status, body, _) = pending.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(customers_named(&s.stack, "Zed"), 1, "the held request ran once approved");
    rt.block_on(driver.cmd("DELETE", "", None));
}

#[test]
fn held_request_denied_by_an_approver_gets_403_and_never_runs() {
    let s = setup("hold", 60);
    let pending = send_in_background(&s.stack, &s.auth, INSERT);
    let approval = s.control.wait_for_pending(&DBA_BOB, Duration::from_secs(20)).unwrap();
    s.control.decide(approval["id"].as_str().unwrap(), &DBA_BOB, "deny", "not today").unwrap();
    let (status, body, _) = pending.join().unwrap();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "approval_denied");
    assert_eq!(body["error"]["retry"], "never");
    assert_eq!(customers_named(&s.stack, "Zed"), 0);
}

#[test]
fn requester_cannot_approve_their_own_request() {
    let s = setup("hold", 60);
    let pending = send_in_background(&s.stack, &s.auth, INSERT);
    let approval = s.control.wait_for_pending(&DBA_BOB, Duration::from_secs(20)).unwrap();
    let id = approval["id"].as_str().unwrap();
    let (status, body) = s.control.decide(id, &DBA_ALICE, "approve", "mine").unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "self_approval");
    s.control.decide(id, &DBA_BOB, "deny", "cleanup").unwrap();
    assert_eq!(pending.join().unwrap().0, 403);
}

#[test]
fn hold_expires_at_the_deadline_with_403() {
    let s = setup("hold", 2);
    let started = Instant::now();
    let (status, body, _) = send_in_background(&s.stack, &s.auth, INSERT).join().unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "approval_expired");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(customers_named(&s.stack, "Zed"), 0);
}

#[test]
fn control_service_killed_during_a_hold_fails_closed_within_the_deadline() {
    let mut s = setup("hold", 60);
    let pending = send_in_background(&s.stack, &s.auth, INSERT);
    s.control.wait_for_pending(&DBA_BOB, Duration::from_secs(20)).unwrap();
    let killed = Instant::now();
    s.control.kill();
    let (status, body, answered) = pending.join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "dependency_unavailable");
    assert!(answered.duration_since(killed) < Duration::from_secs(30));
    assert_eq!(customers_named(&s.stack, "Zed"), 0);
}

#[test]
fn ticket_is_single_use_and_bound_to_the_exact_request() {
    let s = setup("ticket", 600);
    let send = |sql: &str, ticket: Option<&str>| post_sql(&s, sql, ticket);
    let first = send(INSERT, None);
    assert_eq!(first.status, 202, "{}", first.text());
    let err = error_of(&first);
    assert_eq!(err["code"], "approval_pending");
    assert_eq!(err["retry"], "after_approval");
    let id = err["approval"]["id"].as_str().unwrap().to_string();
    assert!(!err["approval"]["url"].as_str().unwrap().is_empty());

    // Not approved yet: still pending, nothing ran.
    assert_eq!(send(INSERT, Some(&id)).status, 202);
    s.control.decide(&id, &DBA_BOB, "approve", "ok").unwrap();

    // The ticket does not cover another statement.
    let other = send("INSERT INTO customers (name) VALUES ('Mallory')", Some(&id));
    assert_eq!(other.status, 403, "{}", other.text());
    assert_eq!(error_of(&other)["code"], "approval_rejected");

    let ok = send(INSERT, Some(&id));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(customers_named(&s.stack, "Zed"), 1);

    let again = send(INSERT, Some(&id));
    assert_eq!(again.status, 403, "a ticket works once: {}", again.text());
    assert_eq!(error_of(&again)["code"], "approval_rejected");
    assert_eq!(customers_named(&s.stack, "Zed"), 1);
    assert_eq!(customers_named(&s.stack, "Mallory"), 0);
}

#[test]
fn denied_ticket_is_answered_as_denied_not_pending() {
    let s = setup("ticket", 600);
    let send = |ticket: Option<&str>| post_sql(&s, INSERT, ticket);
    let first = send(None);
    assert_eq!(first.status, 202, "{}", first.text());
    let id = error_of(&first)["approval"]["id"].as_str().unwrap().to_string();
    s.control.decide(&id, &DBA_BOB, "deny", "no new customers today").unwrap();

    let retry = send(Some(&id));
    assert_eq!(retry.status, 403, "{}", retry.text());
    assert_eq!(error_of(&retry)["code"], "approval_denied");
    assert_eq!(customers_named(&s.stack, "Zed"), 0);
}
