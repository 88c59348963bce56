//! Streams through real Envoy + airlock.wasm, read by the clients agents use: the official
//! `openai` Python client streaming a chat completion whose personal values and keys are
//! split across chunks. The text the client assembles must contain none of them, and must
//! still arrive as a stream.

use std::process::Command;

use airlock_demo::llm::chat_pii;
use airlock_e2e::control::{ControlService, DBA_BOB};
use airlock_e2e::fixtures::{auth_for, builder_for, test_plugin_config};
use airlock_e2e::paths::workspace_root;
use airlock_e2e::{Stack, TestKeys};
use serde_json::{json, Value};

/// The shipped config, plus the rule an operator writes for an LLM API: agents may call
/// it, and what comes back is masked.
fn llm_stack() -> Stack {
    let mut config = test_plugin_config();
    let rule = json!({
        "name": "agents-call-the-llm",
        "action": "allow",
        "when": {"methods": ["POST"], "path": {"prefix": "/v1/chat/"}},
        "mask": "pii"
    });
    config["rules"].as_array_mut().unwrap().insert(0, rule);
    builder_for(config, TestKeys::shared()).start().unwrap()
}

fn stream_with_openai(stack: &Stack, token: &str, chunk_size: usize) -> Value {
    let python = workspace_root().join(".venv").join("bin").join("python");
    let script = workspace_root().join("tests").join("e2e").join("clients").join("openai_stream.py");
    let out =
        Command::new(python).arg(script).arg(stack.url("/v1")).arg(token).arg(chunk_size.to_string()).output().unwrap();
    assert!(out.status.success(), "openai client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_openai_client_streams_a_completion_whose_split_values_all_arrive_masked() {
    let stack = llm_stack();
    let auth = auth_for(TestKeys::shared(), "agent-7", &["analyst"]);
    let token = auth.trim_start_matches("Bearer ").to_string();
    for chunk_size in [1, 3, 7, 16] {
        let got = stream_with_openai(&stack, &token, chunk_size);
        let text = got["text"].as_str().unwrap();
        for (kind, value) in chat_pii() {
            assert!(!text.contains(&value), "{kind} `{value}` reached the client (chunks of {chunk_size}): {text}");
        }
        assert!(text.contains("[REDACTED:email]"), "{text}");
        let (first, total) = (got["first_s"].as_f64().unwrap(), got["total_s"].as_f64().unwrap());
        assert!(got["chunks"].as_u64().unwrap() > 5, "{got}");
        assert!(first < total / 2.0, "the first words came at {first:.3}s of {total:.3}s: the stream was buffered");
    }
    assert!(stack.stat("wasmcustom.airlock.masked.pii.email").unwrap_or(0) >= 8);
}

/// The MCP reference server (npm `@modelcontextprotocol/server-everything`, Streamable
/// HTTP transport) on a free port; killed when dropped.
fn mcp_server() -> (airlock_e2e::process::ChildGuard, u16) {
    let port = airlock_e2e::free_port().unwrap();
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the MCP server did not start on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (child, port)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("airlock-e2e-{name}-{}-{nanos}", std::process::id()))
}

/// The audit session Airlock names an MCP session by: a digest of its id (README).
fn audit_session_of(mcp_session_id: &str) -> String {
    let digest: String =
        hmac_sha256::Hash::hash(mcp_session_id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("mcp-{}", &digest[..32])
}

#[test]
fn an_mcp_session_works_through_airlock_with_denied_tools_resources_and_prompts_unlisted_and_refused_and_results_masked(
) {
    let (_server, port) = mcp_server();
    let control = ControlService::start(&temp_dir("mcp"), &[DBA_BOB], "").unwrap();
    let mut config = test_plugin_config();
    let rules = json!([
        {"name": "guests-stay-out", "action": "deny",
         "when": {"path": {"exact": "/mcp"}, "groups": {"any_of": ["guests"]}}},
        {"name": "agents-never-read-env", "action": "deny",
         "when": {"methods": ["POST"], "path": {"exact": "/mcp"}, "mcp_tool": {"exact": "get-env"}}},
        {"name": "no-instructions-doc", "action": "deny",
         "when": {"path": {"exact": "/mcp"}, "mcp_resource": {"suffix": "/instructions.md"}}},
        {"name": "no-args-prompt", "action": "deny",
         "when": {"path": {"exact": "/mcp"}, "mcp_prompt": {"exact": "args-prompt"}}},
        {"name": "agents-use-mcp", "action": "allow", "when": {"path": {"exact": "/mcp"}}, "mask": "pii"}
    ]);
    for (i, rule) in rules.as_array().unwrap().iter().enumerate() {
        config["rules"].as_array_mut().unwrap().insert(i, rule.clone());
    }
    config["audit"]["flush_interval_ms"] = json!(200);
    let stack = builder_for(config, TestKeys::shared())
        .set("UPSTREAM_PORT", &port.to_string())
        .control_port(control.port())
        .start()
        .unwrap();
    let message = "mail alice@example.com, card 4111 1111 1111 1111, ssn 123-45-6789";
    let seen = mcp_session(&stack, &["analyst"], message, "get-env", Some(INSTRUCTIONS));

    let tools: Vec<&str> = seen["tools"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    // The tool the agent may not call is not even listed to it; the others are.
    assert!(tools.contains(&"echo") && !tools.contains(&"get-env"), "{seen}");
    assert!(tools.len() > 3, "the server's other tools are all listed: {seen}");
    assert!(stack.stat("wasmcustom.airlock.mcp.tools_hidden").unwrap_or(0) >= 1);
    let echo = seen["echo"].as_str().unwrap();
    assert!(echo.starts_with("Echo: mail "), "the tool answered through Airlock: {seen}");
    for raw in ["alice@example.com", "4111 1111 1111 1111", "123-45-6789"] {
        assert!(!echo.contains(raw), "`{raw}` came back unmasked: {echo}");
    }
    assert!(echo.contains("[REDACTED:email]"), "{echo}");

    // Resources and prompts the rules refuse are not listed either, the rest are; a read
    // of the hidden resource anyway is refused as a JSON-RPC error.
    let listed = |key: &str| -> Vec<String> {
        seen[key].as_array().unwrap().iter().filter_map(Value::as_str).map(String::from).collect()
    };
    let resources = listed("resources");
    assert!(!resources.iter().any(|r| r == INSTRUCTIONS), "{seen}");
    assert!(resources.iter().any(|r| r.ends_with("/architecture.md")), "the other documents stay: {seen}");
    let prompts = listed("prompts");
    assert!(!prompts.iter().any(|p| p == "args-prompt") && prompts.iter().any(|p| p == "simple-prompt"), "{seen}");
    assert!(stack.stat("wasmcustom.airlock.mcp.resources_hidden").unwrap_or(0) >= 1);
    assert!(stack.stat("wasmcustom.airlock.mcp.prompts_hidden").unwrap_or(0) >= 1);
    assert_eq!(seen["denied_read"]["code"], -32061, "{seen}");
    assert_eq!(seen["denied_read"]["data"]["rule"], "no-instructions-doc", "{seen}");

    // Called anyway, the denied tool is a JSON-RPC error the SDK raises as such, with
    // Airlock's answer in its data; the session goes on.
    let denied = &seen["denied"];
    assert_eq!(denied["exception"], "MCPError", "{denied}");
    assert_eq!(denied["code"], -32061, "`denied_by_rule`'s JSON-RPC code: {denied}");
    assert_eq!(denied["data"]["code"], "denied_by_rule", "{denied}");
    assert_eq!(denied["data"]["rule"], "agents-never-read-env", "{denied}");
    assert_eq!(denied["data"]["retry"], "never", "{denied}");
    assert!(!denied.to_string().contains("PATH"), "nothing of the environment came back: {denied}");
    assert_eq!(seen["echo_after"], "Echo: still here", "{seen}");
    assert!(stack.stat("wasmcustom.airlock.rule.agents-never-read-env.matched").unwrap_or(0) >= 1);
    assert!(stack.stat("wasmcustom.airlock.mcp.jsonrpc_refusals").unwrap_or(0) >= 1);

    // The audit trail files the session's requests under its MCP session.
    let ids = seen["session_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "the server assigned one session: {seen}");
    let session = audit_session_of(ids[0].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let records = loop {
        let got = control.get(&format!("/v1/sessions/{session}"), DBA_BOB.token).unwrap_or_default();
        let records = got["records"].as_array().cloned().unwrap_or_default();
        if records.iter().any(|r| r["decision"] == "denied_by_rule") || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let decisions: Vec<&str> = records.iter().filter_map(|r| r["decision"].as_str()).collect();
    assert!(decisions.contains(&"denied_by_rule") && decisions.contains(&"allow"), "{decisions:?}");
    let denied_record = records.iter().find(|r| r["decision"] == "denied_by_rule").unwrap();
    assert_eq!(denied_record["status"], 200, "the status the client got: {denied_record}");
    assert_eq!(denied_record["subject"], "agent-7");
    assert!(!records.iter().any(|r| r.to_string().contains(ids[0].as_str().unwrap())), "no raw MCP session id");

    // A caller refused on the path alone, before any body was needed: Airlock still reads
    // the body to answer the SDK's `initialize` by its id.
    let seen = mcp_session(&stack, &["guests"], "hello", "echo", None);
    let refused = &seen["initialize_error"];
    assert_eq!(refused["code"], -32061, "{seen}");
    assert_eq!(refused["data"]["rule"], "guests-stay-out", "{seen}");
}

/// A document of the reference server that a rule in the MCP test refuses to read.
const INSTRUCTIONS: &str = "demo://resource/static/document/instructions.md";

/// One SDK session (`mcp_session.py`) as agent-7 in `groups`: what the client saw.
fn mcp_session(stack: &Stack, groups: &[&str], message: &str, denied_tool: &str, denied_read: Option<&str>) -> Value {
    let auth = auth_for(TestKeys::shared(), "agent-7", groups);
    let python = workspace_root().join(".venv").join("bin").join("python");
    let script = workspace_root().join("tests").join("e2e").join("clients").join("mcp_session.py");
    let out = Command::new(python)
        .arg(script)
        .arg(stack.url("/mcp"))
        .arg(auth.trim_start_matches("Bearer "))
        .arg(message)
        .arg(denied_tool)
        .args(denied_read)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mcp client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stack.envoy_log_tail()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
