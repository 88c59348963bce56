//! MCP as a protocol: which requests are JSON-RPC messages (so a refusal is answered as
//! JSON-RPC, see `reply.rs`), and `tools/list`, `resources/list` and `prompts/list`
//! answers filtered per caller: a tool, resource or prompt the caller's rules would deny
//! is removed, so an agent does not plan with what it cannot use.
//!
//! The uses stay guarded either way (each `tools/call` is judged on its own); hiding is
//! about the agent's plan, so an answer that cannot be read is passed as it is rather
//! than refused. The same reading of lists and calls serves tool pinning (`pins.rs`).

use serde_json::Value;

/// The request header MCP's Streamable HTTP transport names its session in.
pub const SESSION_HEADER: &str = "mcp-session-id";

/// What a JSON-RPC request body waits for: the ids of its requests (notifications and
/// responses get no answer), and whether it was a batch (answered with an array).
#[derive(Debug, Clone, PartialEq)]
pub struct Awaited {
    pub ids: Vec<Value>,
    pub batch: bool,
}

/// The body as JSON-RPC 2.0: one message or a non-empty batch of them, each an object
/// with `"jsonrpc": "2.0"` that is a request (`method`, and an `id` that is a string or a
/// number), a notification (`method`, no `id`) or a response (`id` with `result` or
/// `error`). `None` for anything else, which keeps the plain answer.
pub fn awaited(body: &[u8]) -> Option<Awaited> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let (messages, batch) = match &body {
        Value::Array(items) if !items.is_empty() => (items.as_slice(), true),
        Value::Object(_) => (std::slice::from_ref(&body), false),
        _ => return None,
    };
    let mut ids = Vec::new();
    for message in messages {
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return None;
        }
        let id = message.get("id");
        match (message.get("method"), id) {
            (Some(Value::String(_)), None) => {}
            (Some(Value::String(_)), Some(id @ (Value::String(_) | Value::Number(_)))) => ids.push(id.clone()),
            (None, Some(_)) if message.get("result").is_some() || message.get("error").is_some() => {}
            _ => return None,
        }
    }
    Some(Awaited { ids, batch })
}

/// Whether a request's headers say it is MCP's Streamable HTTP: a JSON POST whose client
/// accepts an event stream back (the transport requires clients to list both). Such a
/// request refused before its body was read waits for the body, so that the refusal can
/// be answered as JSON-RPC with the request's id.
pub fn streamable_http(method: &str, content_type: Option<&str>, accept: Option<&str>) -> bool {
    let media = |value: Option<&str>, wanted: &str| {
        value.is_some_and(|v| {
            v.split(',').any(|m| m.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(wanted))
        })
    };
    method.eq_ignore_ascii_case("POST") && media(content_type, "application/json") && media(accept, "text/event-stream")
}

/// Whether a request may carry JSON-RPC: a POST of JSON (what MCP's Streamable HTTP
/// transport requires of every message a client sends). Pinning reads such bodies to see
/// what they list and call, whatever their `accept` says.
pub fn may_carry_jsonrpc(method: &str, content_type: Option<&str>) -> bool {
    method.eq_ignore_ascii_case("POST")
        && content_type
            .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
}

/// The audit session of an MCP session: a digest of `Mcp-Session-Id`, never the id
/// itself. Servers use the id to route and resume a session's streams, so whoever reads
/// audit records should not be able to replay it; the same session still has one name.
/// Operators find it from a server log's id with `printf %s ID | sha256sum | cut -c1-32`.
pub fn audit_session(session_id: &str) -> String {
    let digest = hmac_sha256::Hash::hash(session_id.as_bytes());
    format!("mcp-{}", crate::approval::hex(digest.get(..16).unwrap_or_default()))
}

/// The MCP lists whose answers are filtered per caller: what the caller's rules would
/// refuse to call, read or get is removed from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`: tools by `name`, judged as a `tools/call`.
    Tools,
    /// `resources/list`: resources by `uri`, judged as a `resources/read`.
    Resources,
    /// `prompts/list`: prompts by `name`, judged as a `prompts/get`.
    Prompts,
}

impl ListKind {
    const ALL: [ListKind; 3] = [ListKind::Tools, ListKind::Resources, ListKind::Prompts];

    fn list_method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Resources => "resources/list",
            ListKind::Prompts => "prompts/list",
        }
    }

    /// Where the answer holds the items, and the member that names one.
    fn items_and_key(self) -> (&'static str, &'static str) {
        match self {
            ListKind::Tools => ("/result/tools", "name"),
            ListKind::Resources => ("/result/resources", "uri"),
            ListKind::Prompts => ("/result/prompts", "name"),
        }
    }

    /// The request a listed item would be used with: what the policy judges to decide
    /// whether the item is shown. Arguments are empty, so a rule that denies only some
    /// arguments of a tool or prompt does not hide it.
    pub fn use_of(self, item: &str) -> Value {
        let (method, params) = match self {
            ListKind::Tools => ("tools/call", serde_json::json!({"name": item, "arguments": {}})),
            ListKind::Resources => ("resources/read", serde_json::json!({"uri": item})),
            ListKind::Prompts => ("prompts/get", serde_json::json!({"name": item, "arguments": {}})),
        };
        serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": method, "params": params})
    }
}

/// Which list a request body asks for: one JSON-RPC request (not a batch, whose answers
/// are matched to requests by id, which this filter does not follow).
pub fn lists(body: &Value) -> Option<ListKind> {
    // A notification (no `id`) gets no answer to filter.
    body.get("id")?;
    let method = body.get("method").and_then(Value::as_str)?;
    ListKind::ALL.into_iter().find(|k| k.list_method() == method)
}

/// Removes from one JSON-RPC answer the items of `kind` that `hide` names. Returns how
/// many it removed.
fn filter_answer(answer: &mut Value, kind: ListKind, hide: &mut dyn FnMut(&str) -> bool) -> usize {
    let (items, key) = kind.items_and_key();
    let Some(items) = answer.pointer_mut(items).and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = items.len();
    // An item without a name cannot be used; it is kept as the server sent it.
    items.retain(|item| !item.get(key).and_then(Value::as_str).is_some_and(&mut *hide));
    before - items.len()
}

/// The JSON-RPC message of one Server-Sent Event: its `data:` lines joined.
fn event_message(event: &str) -> Option<Value> {
    let data: Vec<&str> =
        event.lines().filter_map(|line| line.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
    (!data.is_empty()).then(|| serde_json::from_str::<Value>(&data.join("\n")).ok()).flatten()
}

/// The named tools of a `tools/list` answer (JSON, or the events of `is_sse`), each with
/// its definition's fingerprint (`pins::fingerprint`). Empty when it cannot be read.
pub fn listed_tools(body: &[u8], is_sse: bool) -> Vec<(String, String)> {
    let answers: Vec<Value> = if is_sse {
        let Ok(text) = std::str::from_utf8(body) else { return Vec::new() };
        text.split_inclusive("\n\n").filter_map(event_message).collect()
    } else {
        serde_json::from_slice(body).into_iter().collect()
    };
    let mut tools = Vec::new();
    for answer in &answers {
        for tool in answer.pointer("/result/tools").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = tool.get("name").and_then(Value::as_str) {
                tools.push((name.to_string(), crate::pins::fingerprint(tool)));
            }
        }
    }
    tools
}

/// The tools a JSON-RPC body calls (`tools/call` requests, in a batch too).
pub fn called_tools(body: &Value) -> Vec<&str> {
    let messages = match body {
        Value::Array(items) => items.as_slice(),
        one => std::slice::from_ref(one),
    };
    messages
        .iter()
        .filter(|m| m.get("method").and_then(Value::as_str) == Some("tools/call"))
        .filter_map(|m| m.pointer("/params/name").and_then(Value::as_str))
        .collect()
}

/// Filters a whole list answer of `kind`, JSON (`is_sse: false`) or Server-Sent Events
/// (MCP's Streamable HTTP answers a POST with either). `None`: nothing was removed, the
/// body stays as it is.
pub fn filter_list(
    body: &[u8],
    is_sse: bool,
    kind: ListKind,
    hide: &mut dyn FnMut(&str) -> bool,
) -> Option<(Vec<u8>, usize)> {
    if !is_sse {
        let mut answer: Value = serde_json::from_slice(body).ok()?;
        let removed = filter_answer(&mut answer, kind, hide);
        return (removed > 0).then(|| (serde_json::to_vec(&answer).unwrap_or_default(), removed));
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    // One event at a time: its `data:` lines joined are one JSON-RPC message.
    for event in text.split_inclusive("\n\n") {
        let Some(mut answer) = event_message(event) else {
            out.push_str(event);
            continue;
        };
        let n = filter_answer(&mut answer, kind, hide);
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

    fn ids(body: &Value) -> Option<(Vec<Value>, bool)> {
        awaited(&serde_json::to_vec(body).unwrap()).map(|a| (a.ids, a.batch))
    }

    #[test]
    fn requests_wait_for_answers_by_id_and_notifications_and_responses_for_none() {
        let call = json!({"jsonrpc": "2.0", "id": "c1", "method": "tools/call"});
        assert_eq!(ids(&call), Some((vec![json!("c1")], false)));
        assert_eq!(ids(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})), Some((vec![], false)));
        assert_eq!(ids(&json!({"jsonrpc": "2.0", "id": 3, "result": {}})), Some((vec![], false)));
        let batch = json!([call, {"jsonrpc": "2.0", "method": "n"}, {"jsonrpc": "2.0", "id": 9, "method": "ping"}]);
        assert_eq!(ids(&batch), Some((vec![json!("c1"), json!(9)], true)));
    }

    #[test]
    fn what_is_not_json_rpc_2_keeps_the_plain_answer() {
        for body in [
            json!({"id": 1, "method": "tools/call"}),
            json!({"jsonrpc": "1.0", "id": 1, "method": "tools/call"}),
            json!({"jsonrpc": "2.0", "id": null, "method": "tools/call"}),
            json!({"jsonrpc": "2.0", "id": {"x": 1}, "method": "tools/call"}),
            json!({"jsonrpc": "2.0", "id": 1}),
            json!({"jsonrpc": "2.0", "method": 5}),
            json!([]),
            json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, 5]),
            json!({"sql": "select 1"}),
        ] {
            assert_eq!(ids(&body), None, "{body}");
        }
        assert!(awaited(b"{not json").is_none());
    }

    #[test]
    fn streamable_http_is_a_json_post_accepting_an_event_stream() {
        let both = Some("application/json, text/event-stream");
        assert!(streamable_http("POST", Some("application/json; charset=utf-8"), both));
        assert!(streamable_http("post", Some("Application/JSON"), Some("text/event-stream;q=0.9, */*")));
        assert!(!streamable_http("GET", Some("application/json"), both));
        assert!(!streamable_http("POST", Some("text/plain"), both));
        assert!(!streamable_http("POST", Some("application/json"), Some("application/json")));
        assert!(!streamable_http("POST", None, both));
        assert!(may_carry_jsonrpc("POST", Some("application/json; charset=utf-8")));
        assert!(!may_carry_jsonrpc("GET", Some("application/json")));
        assert!(!may_carry_jsonrpc("POST", Some("text/plain")));
    }

    #[test]
    fn only_a_single_list_request_is_a_listing() {
        assert_eq!(lists(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})), Some(ListKind::Tools));
        assert_eq!(lists(&json!({"jsonrpc": "2.0", "id": 1, "method": "resources/list"})), Some(ListKind::Resources));
        assert_eq!(lists(&json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/list"})), Some(ListKind::Prompts));
        assert_eq!(lists(&json!({"jsonrpc": "2.0", "method": "tools/list"})), None, "a notification gets no answer");
        assert_eq!(lists(&json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}])), None);
        assert_eq!(lists(&json!({"jsonrpc": "2.0", "id": 1, "method": "resources/templates/list"})), None);
    }

    #[test]
    fn json_answer_loses_the_hidden_tool_and_keeps_the_rest() {
        let body = serde_json::to_vec(&listing()).unwrap();
        let (out, removed) = filter_list(&body, false, ListKind::Tools, &mut hide_env).unwrap();
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
        let (out, removed) = filter_list(body.as_bytes(), true, ListKind::Tools, &mut hide_env).unwrap();
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
        let (out, removed) = filter_list(body.as_bytes(), true, ListKind::Tools, &mut hide_env).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[]}}\n\n"
        );
    }

    #[test]
    fn listed_tools_are_read_from_json_and_event_answers_with_their_fingerprints() {
        let body = serde_json::to_vec(&listing()).unwrap();
        let tools = listed_tools(&body, false);
        let names: Vec<&str> = tools.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["echo", "get-env"], "the nameless tool cannot be called, nor pinned");
        assert_eq!(tools[0].1, crate::pins::fingerprint(&json!({"name": "echo", "inputSchema": {}})));
        let sse = format!("event: message\ndata: {}\n\n", listing());
        assert_eq!(listed_tools(sse.as_bytes(), true), tools);
        assert!(listed_tools(b"{not json", false).is_empty());
    }

    #[test]
    fn called_tools_are_named_by_single_calls_and_batches() {
        let call =
            |id: u32, name: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name}});
        assert_eq!(called_tools(&call(1, "echo")), ["echo"]);
        let batch = json!([call(1, "echo"), {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, call(3, "add")]);
        assert_eq!(called_tools(&batch), ["echo", "add"]);
        assert!(called_tools(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).is_empty());
    }

    #[test]
    fn resource_and_prompt_answers_lose_hidden_items_by_uri_and_name() {
        let resources = json!({"jsonrpc": "2.0", "id": 3, "result": {"resources": [
            {"uri": "secret://vault/key", "name": "key"}, {"uri": "file:///readme", "name": "readme"}
        ]}});
        let body = serde_json::to_vec(&resources).unwrap();
        let (out, removed) =
            filter_list(&body, false, ListKind::Resources, &mut |uri| uri.starts_with("secret://")).unwrap();
        assert_eq!(removed, 1);
        let answer: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(answer["result"]["resources"], json!([{"uri": "file:///readme", "name": "readme"}]));
        let prompts =
            json!({"jsonrpc": "2.0", "id": 4, "result": {"prompts": [{"name": "exfiltrate"}, {"name": "summarise"}]}});
        let body = serde_json::to_vec(&prompts).unwrap();
        let (out, _) = filter_list(&body, false, ListKind::Prompts, &mut |name| name == "exfiltrate").unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["result"]["prompts"], json!([{"name": "summarise"}]));
        assert!(
            filter_list(&body, false, ListKind::Tools, &mut |_| true).is_none(),
            "another kind's list is left alone"
        );
    }

    #[test]
    fn the_use_a_listed_item_is_judged_by_is_its_call_read_or_get() {
        assert_eq!(ListKind::Tools.use_of("echo")["params"], json!({"name": "echo", "arguments": {}}));
        assert_eq!(ListKind::Resources.use_of("file:///a")["method"], "resources/read");
        assert_eq!(ListKind::Resources.use_of("file:///a")["params"]["uri"], "file:///a");
        assert_eq!(ListKind::Prompts.use_of("p")["method"], "prompts/get");
    }

    #[test]
    fn nothing_hidden_or_unreadable_leaves_the_body_alone() {
        let body = serde_json::to_vec(&listing()).unwrap();
        assert!(filter_list(&body, false, ListKind::Tools, &mut |_| false).is_none());
        assert!(filter_list(b"{not json", false, ListKind::Tools, &mut hide_env).is_none());
        assert!(filter_list(b"\xff\xfe", true, ListKind::Tools, &mut hide_env).is_none());
        assert!(filter_list(br#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#, false, ListKind::Tools, &mut hide_env)
            .is_none());
    }
}
