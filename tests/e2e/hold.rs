//! A request is held while Airlock decides on its body: with the shipped bootstrap and
//! with the filter the Istio manifest inserts, the upstream receives nothing — no
//! connection, no header, no credential — before the decision, and nothing at all for a
//! refused body. The upstream here is a recorder that counts every TCP connection.

use std::time::{Duration, Instant};

use airlock_e2e::fixtures::{
    auth_for, builder_for, istio_plugin_config, istio_template, test_plugin_config, TEST_UPSTREAM_TOKEN,
};
use airlock_e2e::raw::{exchange, RawReply};
use airlock_e2e::recorder::Recorder;
use airlock_e2e::{Stack, StackBuilder, TestKeys};
use serde_json::{json, Value};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("airlock-e2e-{name}-{}-{nanos}", std::process::id()))
}

/// A stack whose protected upstream is `recorder`.
fn stack(builder: StackBuilder, recorder: &Recorder) -> Stack {
    builder.set("UPSTREAM_PORT", &recorder.port().to_string()).start().unwrap()
}

/// Sends a `POST /sql` whose body follows its headers only after `pause`, on a thread.
fn slow_post(stack: &Stack, auth: &str, sql: &str, pause: Duration) -> std::thread::JoinHandle<RawReply> {
    let body = json!({"sql": sql}).to_string();
    let head = format!(
        "POST /sql HTTP/1.1\r\nhost: airlock.test\r\nauthorization: {auth}\r\ncontent-type: \
            application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let port = stack.listen_port();
    std::thread::spawn(move || {
        exchange(port, &[head.as_bytes(), body.as_bytes()], pause, Duration::from_secs(20)).unwrap()
    })
}

/// The body decision with the upstream watched: nothing before it, one request after an
/// allow, nothing ever after a refusal.
fn assert_nothing_reaches_the_upstream_before_the_decision(stack: &Stack, recorder: &Recorder, auth: &str) {
    let allowed = slow_post(stack, auth, "SELECT name FROM customers", Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(recorder.connections(), 0, "headers waiting for their body must not open a connection upstream");
    let reply = allowed.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let requests = recorder.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {TEST_UPSTREAM_TOKEN}").as_str()),
        "the credential goes in after the allow"
    );
    assert_eq!(requests[0].json()["sql"], "SELECT name FROM customers");

    let before = recorder.connections();
    let denied = slow_post(stack, auth, "DROP TABLE customers", Duration::from_millis(500)).join().unwrap();
    assert_eq!(denied.status, 403, "{}", denied.text());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(recorder.requests().len(), 1, "a refused body never reaches the upstream");
    assert_eq!(recorder.connections(), before, "not even a connection");
}

#[test]
fn with_the_shipped_bootstrap_nothing_reaches_the_upstream_before_the_body_decision() {
    let recorder = Recorder::start().unwrap();
    let stack = stack(builder_for(test_plugin_config(), TestKeys::shared()), &recorder);
    let alice = auth_for(TestKeys::shared(), "alice", &["analyst"]);
    assert_nothing_reaches_the_upstream_before_the_decision(&stack, &recorder, &alice);
}

#[test]
fn with_the_istio_filter_config_nothing_reaches_the_upstream_before_the_body_decision() {
    let config = istio_plugin_config().unwrap();
    let keys = TestKeys::new();
    let issuer = config["auth"]["issuers"][0].as_str().unwrap().to_string();
    let audience = config["auth"]["audiences"][0].as_str().unwrap().to_string();
    let recorder = Recorder::start().unwrap();
    let template = istio_template(&temp_dir("istio-hold")).unwrap();
    let stack = stack(builder_for(config, &keys).template(template), &recorder);
    let claims = airlock_e2e::TokenClaims::new().iss(&issuer).aud(&audience).sub("alice").groups(&["analyst"]);
    let auth = format!("Bearer {}", keys.mint(airlock_e2e::Alg::ES256, &claims));
    assert_nothing_reaches_the_upstream_before_the_decision(&stack, &recorder, &auth);
}

/// The plugin config says Envoy holds the headers, but Envoy's Wasm PluginConfig lacks
/// `allow_on_headers_stop_iteration`: the body never reaches Airlock. The request must be
/// answered, fail-closed and with the fix named, never left to hang or sent unchecked.
#[test]
fn an_envoy_without_the_hold_setting_answers_500_naming_the_fix_instead_of_hanging() {
    let template = std::fs::read_to_string(airlock_e2e::paths::template_path()).unwrap();
    let without = template.replace("allow_on_headers_stop_iteration: true", "allow_on_headers_stop_iteration: false");
    assert_ne!(without, template);
    let dir = temp_dir("no-hold-knob");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, without).unwrap();
    let mut config = test_plugin_config();
    config["hold"]["first_body_timeout_ms"] = json!(1000);
    let recorder = Recorder::start().unwrap();
    let stack = stack(builder_for(config, TestKeys::shared()).template(path), &recorder);
    let alice = auth_for(TestKeys::shared(), "alice", &["analyst"]);

    let started = Instant::now();
    let reply = slow_post(&stack, &alice, "SELECT 1", Duration::ZERO).join().unwrap();
    assert_eq!(reply.status, 500, "{}", reply.text());
    let error: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(error["error"]["code"], "airlock_misconfigured");
    assert!(error["error"]["message"].as_str().unwrap().contains("allow_on_headers_stop_iteration"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());
    assert_eq!(recorder.connections(), 0);
    assert!(stack.envoy_log().contains("allow_on_headers_stop_iteration"), "the log names the fix");
    // Requests without a body are not held and still work.
    let tables = stack.get("/tables", &[("authorization", alice.as_str())]).unwrap();
    assert_eq!(tables.status, 200, "{}", tables.text());
}
