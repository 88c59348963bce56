//! Records still queued in a VM when Envoy lets it go are shipped first: under load, a
//! plugin-config reload over LDS, a hot restart and a graceful shutdown lose none.
//!
//! Only the reload depends on the root context's `on_done` flush: there Envoy keeps the VM
//! and waits for `proxy_done`. When Envoy stops, it calls `on_done` after the worker's
//! event loop has ended and does not wait, so the hot restart and shutdown tests guard
//! the shipping during the drain before the stop instead.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_e2e::control::{ControlService, DBA_BOB};
use airlock_e2e::fixtures::{auth_for, builder_for, test_plugin_config};
use airlock_e2e::{Stack, StackBuilder, TestKeys};
use serde_json::{json, Value};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("airlock-e2e-{name}-{}-{nanos}", std::process::id()))
}

/// A plugin config whose records would wait a minute if the flush interval held them
/// (the timer ships every second at most, whatever the interval).
fn slow_flush_config() -> Value {
    let mut config = test_plugin_config();
    config["audit"]["flush_interval_ms"] = json!(60000);
    config
}

/// `drain_s`: how long Envoy drains what it replaces or stops (`--drain-time-s`).
fn builder(control: &ControlService, drain_s: u32) -> StackBuilder {
    builder_for(slow_flush_config(), TestKeys::shared())
        .control_port(control.port())
        .envoy_arg("--drain-time-s")
        .envoy_arg(&drain_s.to_string())
}

/// Requests sent one after another until stopped; counts those that got an answer, and
/// those cut off (which may or may not have reached the filter).
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    cut_off: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Load {
    fn start(stack: &Stack) -> Load {
        let (stop, answered, cut_off): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) = Default::default();
        let (url, token) = (stack.url("/tables"), auth_for(TestKeys::shared(), "alice", &["analyst"]));
        let (s, a, c) = (Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&cut_off));
        let thread = std::thread::spawn(move || {
            let agent = airlock_e2e::agent_with_timeout(Duration::from_secs(5));
            while !s.load(Ordering::SeqCst) {
                match airlock_e2e::send(&agent, "GET", &url, &[("authorization", token.as_str())], None) {
                    Ok(reply) if reply.status == 200 => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(reply) => panic!("unexpected answer {}: {}", reply.status, reply.text()),
                    // Refused or reset while listeners change hands: no answer, no record owed.
                    Err(_) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        });
        Load { stop, answered, cut_off, thread }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.answered() < n {
            assert!(Instant::now() < deadline, "the load got only {} answers", self.answered());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops; the requests answered and those cut off.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        (self.answered.load(Ordering::SeqCst), self.cut_off.load(Ordering::SeqCst))
    }
}

fn stored_records(control: &ControlService) -> u64 {
    control.get("/v1/audit/verify", DBA_BOB.token).ok().and_then(|v| v["records"].as_u64()).unwrap_or(0)
}

/// Waits (a little) for a record of every answered request, then checks the count and
/// the chain. A request cut off may have been recorded too (as the filter saw it end).
fn assert_every_answer_recorded(control: &ControlService, (answered, cut_off): (u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_records(control) < answered && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let verify = control.get("/v1/audit/verify", DBA_BOB.token).unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    let stored = verify["records"].as_u64().unwrap();
    assert!(
        (answered..=answered + cut_off).contains(&stored),
        "{answered} requests answered ({cut_off} cut off), {stored} records stored: {verify}"
    );
}

fn wait_for_gauge_zero(stack: &Stack, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while stack.stat(name) != Some(0) {
        assert!(Instant::now() < deadline, "{name} stayed above 0:\n{}", stack.envoy_log_tail());
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn edit_plugin_config(listener: &mut Value, edit: impl FnOnce(&mut Value)) {
    let wasm = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "airlock")
        .unwrap();
    let value = &mut wasm["typed_config"]["config"]["configuration"]["value"];
    let mut config: Value = serde_json::from_str(value.as_str().unwrap()).unwrap();
    edit(&mut config);
    *value = Value::from(config.to_string());
}

#[test]
fn ships_queued_records_when_a_plugin_config_reload_lets_the_old_root_context_go() {
    let control = ControlService::start(&temp_dir("reload"), &[DBA_BOB], "").unwrap();
    // No drain: the old filter chain goes at once, with what its root context queued
    // since its last tick (the timer ships every second at most).
    let stack = builder(&control, 0).listeners_over_lds().start().unwrap();
    let load = Load::start(&stack);
    load.wait_for(200);
    stack
        .update_listeners(|listeners| {
            edit_plugin_config(&mut listeners[0], |c| c["audit"]["batch_size"] = json!(150));
        })
        .unwrap();
    assert!(stack.wait_for_stat("listener_manager.lds.update_success", 2, Duration::from_secs(20)) >= Some(2));
    wait_for_gauge_zero(&stack, "listener_manager.total_filter_chains_draining");
    let before = load.answered();
    load.wait_for(before + 200);
    let counts = load.stop();
    // The new root context ships on its timer.
    assert_every_answer_recorded(&control, counts);
    assert_eq!(stack.stat("wasmcustom.airlock.audit.dropped"), Some(0));
    let log = stack.envoy_log();
    assert!(log.contains("audit queue flushed; the VM may go"), "the old root context was let go by proxy_done");
}

#[test]
fn a_hot_restart_under_load_loses_no_record() {
    let control = ControlService::start(&temp_dir("hot-restart"), &[DBA_BOB], "").unwrap();
    // Unique per test process: the shared memory of hot restart is named by it.
    let base_id = 1000 + std::process::id() % 50_000;
    let mut stack =
        builder(&control, 1).hot_restart(base_id).envoy_arg("--parent-shutdown-time-s").envoy_arg("4").start().unwrap();
    let load = Load::start(&stack);
    load.wait_for(50);
    stack
        .hot_restart(|bootstrap| {
            let listener = &mut bootstrap["static_resources"]["listeners"][0];
            edit_plugin_config(listener, |c| c["audit"]["batch_size"] = json!(150));
        })
        .unwrap();
    let parent = stack.wait_for_parent_exit(Duration::from_secs(30));
    assert!(parent.is_some_and(|s| s.success()), "the old epoch did not exit cleanly: {parent:?}");
    let before = load.answered();
    load.wait_for(before + 50);
    let counts = load.stop();
    assert_every_answer_recorded(&control, counts);
    assert_eq!(stack.stat("wasmcustom.airlock.audit.dropped"), Some(0));
}

#[test]
fn a_graceful_shutdown_under_load_loses_no_record() {
    let control = ControlService::start(&temp_dir("graceful"), &[DBA_BOB], "").unwrap();
    let mut stack = builder(&control, 1).start().unwrap();
    let load = Load::start(&stack);
    load.wait_for(50);
    // As Istio's agent or an operator stops Envoy: drain, give it a moment, then quit.
    let drain = airlock_e2e::send(stack.agent(), "POST", &stack.admin_url("/drain_listeners?graceful"), &[], None);
    assert_eq!(drain.map(|r| r.status), Ok(200));
    // The drain (1 s), after which the listeners stop, and a grace period.
    std::thread::sleep(Duration::from_secs(3));
    let quit = airlock_e2e::send(stack.agent(), "POST", &stack.admin_url("/quitquitquit"), &[], None);
    assert_eq!(quit.map(|r| r.status), Ok(200));
    assert!(stack.wait_for_envoy_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let counts = load.stop();
    assert!(counts.0 >= 50);
    assert_every_answer_recorded(&control, counts);
}
