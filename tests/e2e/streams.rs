//! Streams through real Envoy + airlock.wasm, read by the clients agents use: the official
//! `openai` Python client streaming a chat completion whose personal values and keys are
//! split across chunks. The text the client assembles must contain none of them, and must
//! still arrive as a stream.

use std::process::Command;

use airlock_demo::llm::chat_pii;
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
    let out = Command::new(python).arg(script).arg(stack.url("/v1")).arg(token).arg(chunk_size.to_string()).output().unwrap();
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
