//! The audit trail end to end: every request through Envoy becomes one masked record in
//! the control service's hash chain; an outage of the service loses nothing.

use std::time::{Duration, Instant};

use airlock_e2e::control::{ControlService, DBA_BOB};
use airlock_e2e::fixtures::{auth_for, builder_for, test_plugin_config};
use airlock_e2e::{Stack, TestKeys};
use serde_json::{json, Value};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("airlock-e2e-{name}-{}-{nanos}", std::process::id()))
}

fn sessions(control: &ControlService) -> Vec<Value> {
    control
        .get("/v1/sessions?subject=alice", DBA_BOB.token)
        .map(|v| v["sessions"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn records_for_alice(control: &ControlService) -> u64 {
    sessions(control).iter().map(|s| s["count"].as_u64().or_else(|| s["records"].as_u64()).unwrap_or(0)).sum()
}

fn wait_for_records(control: &ControlService, n: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let got = records_for_alice(control);
        if got >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stack_with(control: &ControlService, strict: bool) -> Stack {
    let mut config = test_plugin_config();
    config["audit"]["strict"] = json!(strict);
    config["audit"]["flush_interval_ms"] = json!(200);
    builder_for(config, TestKeys::shared()).control_port(control.port()).start().unwrap()
}

#[test]
fn every_request_is_recorded_masked_and_the_chain_verifies() {
    let control = ControlService::start(&temp_dir("audit"), &[DBA_BOB], "").unwrap();
    let stack = stack_with(&control, false);
    let alice = auth_for(TestKeys::shared(), "alice", &["analyst"]);
    let headers = [("authorization", alice.as_str()), ("x-airlock-session", "incident-42")];
    assert_eq!(stack.get("/customers", &headers).unwrap().status, 200);
    assert_eq!(stack.post_json("/sql", &headers, &json!({"sql": "DROP TABLE customers"})).unwrap().status, 403);
    assert_eq!(stack.get("/nowhere", &headers).unwrap().status, 403);

    assert_eq!(wait_for_records(&control, 3, Duration::from_secs(15)), 3);
    let session = control.get("/v1/sessions/incident-42", DBA_BOB.token).unwrap();
    let text = session.to_string();
    let records = session["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 3, "{text}");
    let decisions: Vec<&str> = records.iter().map(|r| r["decision"].as_str().unwrap_or("")).collect();
    assert_eq!(decisions, ["allow", "denied_by_rule", "denied_by_default"]);
    assert_eq!(records[1]["rule"], "block-destructive-sql");
    assert!(records[1]["request_body"].as_str().unwrap().contains("DROP TABLE"));
    assert!(!text.contains("alice.martin@example.com"), "response bodies are stored masked");
    assert!(!text.contains(&alice["Bearer ".len()..]), "the agent's token is never stored");

    let verify = control.get("/v1/audit/verify", DBA_BOB.token).unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(stack.stat("wasmcustom.airlock.audit.dropped"), Some(0));
}

#[test]
fn service_outage_loses_no_record_and_the_chain_still_verifies() {
    let mut control = ControlService::start(&temp_dir("outage"), &[DBA_BOB], "").unwrap();
    let stack = stack_with(&control, false);
    let alice = auth_for(TestKeys::shared(), "alice", &["analyst"]);
    let headers = [("authorization", alice.as_str())];
    for _ in 0..3 {
        assert_eq!(stack.get("/customers", &headers).unwrap().status, 200);
    }
    assert_eq!(wait_for_records(&control, 3, Duration::from_secs(15)), 3);

    control.kill();
    for _ in 0..5 {
        assert_eq!(stack.get("/customers", &headers).unwrap().status, 200, "non-strict audit keeps serving");
    }
    assert!(stack.wait_for_stat("wasmcustom.airlock.audit.ship_failed", 1, Duration::from_secs(10)).is_some());

    control.restart().unwrap();
    assert_eq!(
        wait_for_records(&control, 8, Duration::from_secs(60)),
        8,
        "records kept during the outage arrive after it"
    );
    let verify = control.get("/v1/audit/verify", DBA_BOB.token).unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["records"], 8);
    assert_eq!(stack.stat("wasmcustom.airlock.audit.dropped"), Some(0));
}

#[test]
fn strict_audit_refuses_traffic_while_records_cannot_be_delivered() {
    let mut control = ControlService::start(&temp_dir("strict"), &[DBA_BOB], "").unwrap();
    let stack = stack_with(&control, true);
    let alice = auth_for(TestKeys::shared(), "alice", &["analyst"]);
    let headers = [("authorization", alice.as_str())];
    assert_eq!(stack.get("/customers", &headers).unwrap().status, 200);
    control.kill();
    assert_eq!(stack.get("/customers", &headers).unwrap().status, 200, "the first failure is not known yet");
    assert!(stack.wait_for_stat("wasmcustom.airlock.audit.ship_failed", 1, Duration::from_secs(10)).is_some());
    let refused = stack.get("/customers", &headers).unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json().unwrap()["error"]["code"], "audit_unavailable");
}

#[test]
fn shipping_keeps_up_with_more_records_than_one_batch_per_tick() {
    let control = ControlService::start(&temp_dir("burst"), &[DBA_BOB], "").unwrap();
    let mut config = test_plugin_config();
    // 10 records per batch and one tick a second: at one batch per tick, 150 records
    // would need 15 s. Batches follow each other as soon as one is acknowledged.
    config["audit"]["batch_size"] = json!(10);
    config["audit"]["flush_interval_ms"] = json!(1000);
    let stack = builder_for(config, TestKeys::shared()).control_port(control.port()).concurrency(1).start().unwrap();
    let alice = auth_for(TestKeys::shared(), "alice", &["analyst"]);
    for _ in 0..150 {
        assert_eq!(stack.get("/tables", &[("authorization", alice.as_str())]).unwrap().status, 200);
    }
    let started = Instant::now();
    assert_eq!(wait_for_records(&control, 150, Duration::from_secs(8)), 150);
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(stack.stat("wasmcustom.airlock.audit.dropped"), Some(0));
}
