//! MCP `tools/list` answers filtered per caller: a tool the caller's rules would deny is
//! removed, so an agent does not plan with tools it cannot use.
//!
//! The calls stay guarded either way (each `tools/call` is judged on its own); hiding is
//! about the agent's plan, so an answer that cannot be read is passed as it is rather
//! than refused.

use serde_json::Value;

/// Whether a request body asks for the tool list: one JSON-RPC request (not a batch,
/// whose answers are matched to requests by id, which this filter does not follow).
pub fn lists_tools(body: &Value) -> bool {
    body.get("method").and_then(Value::as_str) == Some("tools/list") && body.get("id").is_some()
}

/// The `tools/call` a listed tool would be called with: what the policy judges to decide
/// whether the tool is shown. Arguments are empty, so a rule that denies only some
/// arguments of a tool does not hide it.
pub fn call_of(tool: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
}

/// Removes from `result.tools` of one JSON-RPC answer the tools `hide` names. Returns how
/// many it removed.
fn filter_answer(answer: &mut Value, hide: &mut dyn FnMut(&str) -> bool) -> usize {
    let Some(tools) = answer.pointer_mut("/result/tools").and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = tools.len();
    // A tool without a name cannot be called; it is kept as the server sent it.
    tools.retain(|tool| !tool.get("name").and_then(Value::as_str).is_some_and(&mut *hide));
    before - tools.len()
}

/// Filters a whole `tools/list` answer, JSON (`is_sse: false`) or Server-Sent Events
/// (MCP's Streamable HTTP answers a POST with either). `None`: nothing was removed, the
/// body stays as it is.
pub fn filter_tool_list(body: &[u8], is_sse: bool, hide: &mut dyn FnMut(&str) -> bool) -> Option<(Vec<u8>, usize)> {
    if !is_sse {
        let mut answer: Value = serde_json::from_slice(body).ok()?;
        let removed = filter_answer(&mut answer, hide);
        return (removed > 0).then(|| (serde_json::to_vec(&answer).unwrap_or_default(), removed));
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    // One event at a time: its `data:` lines joined are one JSON-RPC message.
    for event in text.split_inclusive("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let parsed = (!data.is_empty()).then(|| serde_json::from_str::<Value>(&data.join("\n")).ok()).flatten();
        let Some(mut answer) = parsed else {
            out.push_str(event);
            continue;
        };
        let n = filter_answer(&mut answer, hide);
        if n == 0 {
            out.push_str(event);
            continue;
        }
        removed += n;
        // The event's other fields (`id:`, `event:`) kept; its data as one line.
        let mut wrote_data = false;
        for line in event.lines() {
            if line.starts_with("data:") {
                if !wrote_data {
                    out.push_str("data: ");
                    out.push_str(&answer.to_string());
                    out.push('\n');
                    wrote_data = true;
                }
            } else if !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    (removed > 0).then(|| (out.into_bytes(), removed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hide_env(name: &str) -> bool {
        name == "get-env"
    }

    fn listing() -> Value {
        json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": [
            {"name": "echo", "inputSchema": {}}, {"name": "get-env", "inputSchema": {}}, {"description": "nameless"}
        ]}})
    }

    fn names(answer: &Value) -> Vec<&str> {
        answer["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect()
    }

    #[test]
    fn only_a_single_tools_list_request_is_a_listing() {
        assert!(lists_tools(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})));
        assert!(!lists_tools(&json!({"jsonrpc": "2.0", "method": "tools/list"})), "a notification gets no answer");
        assert!(!lists_tools(&json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}])));
        assert!(!lists_tools(&json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/list"})));
    }

    #[test]
    fn json_answer_loses_the_hidden_tool_and_keeps_the_rest() {
        let body = serde_json::to_vec(&listing()).unwrap();
        let (out, removed) = filter_tool_list(&body, false, &mut hide_env).unwrap();
        assert_eq!(removed, 1);
        let answer: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(names(&answer), ["echo"]);
        assert_eq!(answer["result"]["tools"].as_array().unwrap().len(), 2, "the nameless tool stays");
        assert_eq!(answer["id"], 7);
    }

    #[test]
    fn sse_answer_is_rewritten_event_by_event_keeping_ids_and_other_events() {
        let notification = r#"{"jsonrpc":"2.0","method":"notifications/x"}"#;
        let body = format!("event: message\nid: 1\ndata: {}\n\n: keep-alive\n\ndata: {notification}\n\n", listing());
        let (out, removed) = filter_tool_list(body.as_bytes(), true, &mut hide_env).unwrap();
        assert_eq!(removed, 1);
        let out = String::from_utf8(out).unwrap();
        let events: Vec<&str> = out.split_inclusive("\n\n").collect();
        assert_eq!(events.len(), 3, "{out}");
        assert!(events[0].starts_with("event: message\nid: 1\ndata: "), "{out}");
        let answer: Value =
            serde_json::from_str(events[0].lines().nth(2).unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(names(&answer), ["echo"]);
        assert_eq!(events[1], ": keep-alive\n\n");
        assert!(!out.contains("get-env"), "{out}");
    }

    #[test]
    fn sse_data_split_over_several_lines_is_one_message() {
        let body = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: \"result\":{\"tools\":[{\"name\":\"get-env\"}]}}\n\n";
        let (out, removed) = filter_tool_list(body.as_bytes(), true, &mut hide_env).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[]}}\n\n"
        );
    }

    #[test]
    fn nothing_hidden_or_unreadable_leaves_the_body_alone() {
        let body = serde_json::to_vec(&listing()).unwrap();
        assert!(filter_tool_list(&body, false, &mut |_| false).is_none());
        assert!(filter_tool_list(b"{not json", false, &mut hide_env).is_none());
        assert!(filter_tool_list(b"\xff\xfe", true, &mut hide_env).is_none());
        assert!(filter_tool_list(br#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#, false, &mut hide_env).is_none());
    }
}
