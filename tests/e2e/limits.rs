//! Rate limits of rules in a real Envoy with two worker threads (two Wasm VMs counting in
//! one proxy's shared data): a caller's requests pass up to the limit, then get 429
//! `rate_limited` with `retry-after` until the window ends; other callers are not
//! affected; the counters say so. Also a rate-limited MCP tool of the reference MCP
//! server, spoken to over plain HTTP (the status is what matters here).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_e2e::paths::workspace_root;
use airlock_e2e::*;
use serde_json::{json, Value};

/// Waits for the start of the next fixed window of `per_seconds`, so that a burst of
/// requests falls into one window (windows are aligned to the Unix epoch, as the filter
/// counts them).
fn wait_for_window_start(per_seconds: u64) {
    let per_ms = per_seconds * 1000;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    std::thread::sleep(Duration::from_millis(per_ms - now_ms % per_ms + 50));
}

/// The rules of `config` with `rules` in front.
fn with_rules_first(mut config: Value, rules: Value) -> Value {
    for (i, rule) in rules.as_array().unwrap().iter().enumerate() {
        config["rules"].as_array_mut().unwrap().insert(i, rule.clone());
    }
    config
}

/// `GET` through Envoy on a connection of its own, so that the kernel spreads the
/// requests over Envoy's workers.
fn get_fresh(stack: &Stack, path: &str, authorization: &str) -> Reply {
    send(&agent(), "GET", &stack.url(path), &[("authorization", authorization)], None).unwrap()
}

/// Connections each Envoy worker accepted on the traffic listener.
fn connections_per_worker(stack: &Stack) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, value) in stack.stats().unwrap() {
        let Some(rest) = name.strip_prefix("listener.").filter(|r| !r.starts_with("admin.")) else { continue };
        let Some(rest) = rest.strip_suffix(".downstream_cx_total") else { continue };
        if let Some((_, worker)) = rest.rsplit_once(".worker_") {
            *out.entry(worker.to_string()).or_default() += value;
        }
    }
    out
}

const PER_SECONDS: u64 = 4;
const REQUESTS: u64 = 20;

#[test]
fn a_caller_over_its_limit_gets_429_with_retry_after_across_workers_others_pass_and_it_recovers() {
    let rules = json!([{"name": "echo-budget", "action": "allow", "when": {"path": {"prefix": "/echo/limited"}},
                        "limit": {"requests": REQUESTS, "per_seconds": PER_SECONDS, "by": "subject"}}]);
    let config = with_rules_first(test_plugin_config(), rules);
    let stack = builder_for(config, TestKeys::shared()).concurrency(2).start().unwrap();
    fixtures::wait_first_fetch(stack.jwks());
    let alice = auth_for(TestKeys::shared(), "alice", &["analyst"]);
    let bob = auth_for(TestKeys::shared(), "bob", &["analyst"]);

    wait_for_window_start(PER_SECONDS);
    for i in 0..REQUESTS {
        let reply = get_fresh(&stack, "/echo/limited", &alice);
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    let workers = connections_per_worker(&stack);
    assert!(
        workers.len() == 2 && workers.values().all(|n| *n > 0),
        "both workers took some of the requests, so both VMs counted: {workers:?}"
    );
    let limited = get_fresh(&stack, "/echo/limited", &alice);
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.header("x-airlock-code"), Some("rate_limited"));
    let error = error_of(&limited);
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert_eq!(error["rule"], "echo-budget", "{error}");
    assert_eq!(error["retry"], "later", "{error}");
    let retry_after: u64 = limited.header("retry-after").expect("a retry-after header").parse().unwrap();
    assert!((1..=PER_SECONDS).contains(&retry_after), "{retry_after}");
    assert_eq!(error["retry_after_seconds"], retry_after, "{error}");

    // Another caller has a count of its own.
    assert_eq!(get_fresh(&stack, "/echo/limited", &bob).status, 200);
    assert_eq!(stack.stat("wasmcustom.airlock.rate_limited"), Some(1));
    assert_eq!(stack.stat("wasmcustom.airlock.rule.echo-budget.rate_limited"), Some(1));
    assert_eq!(stack.stat("wasmcustom.airlock.rule.echo-budget.matched"), Some(REQUESTS + 2));

    // When the window is over, alice passes again.
    std::thread::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100));
    let again = get_fresh(&stack, "/echo/limited", &alice);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(stack.envoy_log().contains("decision=rate_limited"), "the refusal is logged");
}

#[test]
fn a_limit_on_a_deny_rule_stops_envoy_and_the_log_names_the_field() {
    let rules = json!([{"name": "never", "action": "deny", "when": {"path": {"prefix": "/x"}},
                        "limit": {"requests": 1, "per_seconds": 1, "by": "subject"}}]);
    let config = with_rules_first(test_plugin_config(), rules);
    let log = builder_for(config, TestKeys::shared()).start_expecting_failure().unwrap();
    let line = log.lines().find(|l| l.contains("invalid Airlock plugin config")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("`rules[0].limit`") && line.contains("deny"), "{line}");
}

/// The MCP reference server (npm `@modelcontextprotocol/server-everything`, Streamable
/// HTTP transport) on a free port; killed when dropped.
fn mcp_server() -> (airlock_e2e::process::ChildGuard, u16) {
    let port = free_port().unwrap();
    let dir = workspace_root().join("tests").join("e2e").join("clients");
    let entry = dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(entry.is_file(), "{} is missing: run scripts/setup.sh", entry.display());
    let mut cmd = Command::new("node");
    cmd.arg(entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = airlock_e2e::process::ChildGuard::spawn(cmd, "mcp server-everything").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the MCP server did not start on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

/// One JSON-RPC message to the MCP endpoint, as a Streamable HTTP client sends it.
fn mcp_post(stack: &Stack, authorization: &str, session: Option<&str>, message: &Value) -> Reply {
    let mut headers = vec![
        ("authorization", authorization),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    if let Some(id) = session {
        headers.push(("mcp-session-id", id));
    }
    stack.request("POST", "/mcp", &headers, Some(message.to_string().as_bytes())).unwrap()
}

#[test]
fn a_rate_limited_mcp_tool_is_refused_429_then_answers_again_after_the_window() {
    let (_server, port) = mcp_server();
    let rules = json!([
        {"name": "echo-tool-budget", "action": "allow",
         "when": {"methods": ["POST"], "path": {"exact": "/mcp"}, "mcp_tool": {"exact": "echo"}},
         "limit": {"requests": 2, "per_seconds": 3, "by": "subject"}},
        {"name": "agents-use-mcp", "action": "allow", "when": {"path": {"exact": "/mcp"}}}
    ]);
    let config = with_rules_first(test_plugin_config(), rules);
    let stack = builder_for(config, TestKeys::shared()).set("UPSTREAM_PORT", &port.to_string()).start().unwrap();
    let auth = auth_for(TestKeys::shared(), "agent-7", &["analyst"]);

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}});
    let reply = mcp_post(&stack, &auth, None, &init);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let session = reply.header("mcp-session-id").expect("the server names a session").to_string();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(mcp_post(&stack, &auth, Some(&session), &initialized).status, 202);

    let call = |id: u64| {
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                             "params": {"name": "echo", "arguments": {"message": format!("call {id}")}}});
        mcp_post(&stack, &auth, Some(&session), &message)
    };
    wait_for_window_start(3);
    for id in [2, 3] {
        let reply = call(id);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.text().contains(&format!("Echo: call {id}")), "{}", reply.text());
    }
    let limited = call(4);
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.header("x-airlock-code"), Some("rate_limited"));
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    // An MCP client that reads the body gets a JSON-RPC error for its own id.
    let error: serde_json::Value = serde_json::from_str(&limited.text()).unwrap();
    assert_eq!(error["id"], 4, "{error}");
    assert_eq!(error["error"]["code"], -32074, "`rate_limited`'s JSON-RPC code: {error}");
    assert_eq!(error["error"]["data"]["code"], "rate_limited", "{error}");
    assert_eq!(error["error"]["data"]["retry_after_seconds"], retry_after, "{error}");
    // Other methods of the session are not limited by the tool's budget.
    let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
    assert_eq!(mcp_post(&stack, &auth, Some(&session), &list).status, 200);

    std::thread::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100));
    let again = call(6);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(again.text().contains("Echo: call 6"), "{}", again.text());
    assert_eq!(stack.stat("wasmcustom.airlock.rule.echo-tool-budget.rate_limited"), Some(1));
}
