//! The bytes the masker writes itself: SSE `data:` lines, and the messages made to carry
//! a held-back tail when a text ends in a message that has no delta of it.

use serde_json::{Map, Value};

use super::keys::{Family, Field, NONE};
use super::Entry;

/// How messages are framed in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::stream) enum Framing {
    Sse,
    Ndjson,
}

impl Framing {
    /// Writes one made message (no `id`: it is not the upstream's event).
    pub(super) fn write_json(self, out: &mut Vec<u8>, event: &str, json: &[u8]) {
        match self {
            Framing::Sse => {
                if !event.is_empty() {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(event.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
            }
            Framing::Ndjson => {
                out.extend_from_slice(json);
                out.push(b'\n');
            }
        }
    }
}

/// Writes `text` as SSE `data:` lines (every line break starts a new line, so the client
/// joins them back with `\n`).
pub(in crate::stream) fn write_data_lines(out: &mut Vec<u8>, text: &str) {
    for line in text.split(['\n', '\r']) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// A message carrying `text` (already masked) as the next delta of `e`'s text, shaped
/// like the text's last delta message.
pub(super) fn made_message(e: &Entry, text: String) -> Value {
    let template: Map<String, Value> = match serde_json::from_slice(&e.template) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let k = &e.key;
    let mut obj = Map::new();
    let keep = |obj: &mut Map<String, Value>, names: &[&str]| {
        for name in names {
            if let Some(v) = template.get(*name) {
                obj.insert((*name).to_string(), v.clone());
            }
        }
    };
    let num = |n: u64| Value::from(n);
    match k.family {
        Family::Chat => {
            for (name, v) in &template {
                if !matches!(name.as_str(), "choices" | "usage" | "obfuscation") {
                    obj.insert(name.clone(), v.clone());
                }
            }
            obj.entry("object").or_insert_with(|| Value::from("chat.completion.chunk"));
            let mut choice = Map::new();
            choice.insert("index".into(), num(k.a));
            let member = |name: &str, text: String| {
                let mut m = Map::new();
                m.insert(name.to_string(), Value::String(text));
                Value::Object(m)
            };
            match k.field {
                Field::LegacyText => {
                    choice.insert("text".into(), Value::String(text));
                }
                Field::ToolArguments => {
                    let mut call = Map::new();
                    call.insert("index".into(), num(k.b));
                    call.insert("function".into(), member("arguments", text));
                    let mut delta = Map::new();
                    delta.insert("tool_calls".into(), Value::Array(vec![Value::Object(call)]));
                    choice.insert("delta".into(), Value::Object(delta));
                }
                field => {
                    let name = match field {
                        Field::ReasoningContent => "reasoning_content",
                        Field::Reasoning => "reasoning",
                        Field::Refusal => "refusal",
                        _ => "content",
                    };
                    choice.insert("delta".into(), member(name, text));
                }
            }
            choice.insert("finish_reason".into(), Value::Null);
            obj.insert("choices".into(), Value::Array(vec![Value::Object(choice)]));
        }
        Family::Responses => {
            for (name, v) in &template {
                if !matches!(name.as_str(), "logprobs" | "obfuscation") {
                    obj.insert(name.clone(), v.clone());
                }
            }
            if !obj.contains_key("type") {
                let (base, item) = k.name.split_once('\0').unwrap_or((&k.name, ""));
                obj.insert("type".into(), Value::from(format!("{base}.delta")));
                obj.insert("item_id".into(), Value::from(item));
                for (name, n) in [("output_index", k.a), ("content_index", k.b), ("summary_index", k.c)] {
                    if n != NONE {
                        obj.insert(name.into(), num(n));
                    }
                }
            }
            obj.insert("delta".into(), Value::String(text));
        }
        Family::Anthropic => {
            let delta_type = match e.member {
                "partial_json" => "input_json_delta",
                "thinking" => "thinking_delta",
                _ => "text_delta",
            };
            obj.insert("type".into(), Value::from("content_block_delta"));
            obj.insert("index".into(), num(k.a));
            let mut delta = Map::new();
            delta.insert("type".into(), Value::from(delta_type));
            delta.insert(e.member.into(), Value::String(text));
            obj.insert("delta".into(), Value::Object(delta));
        }
        Family::Ollama => {
            keep(&mut obj, &["model", "created_at"]);
            let mut message = Map::new();
            message.insert("role".into(), Value::from("assistant"));
            match k.field {
                Field::MessageContent => {
                    message.insert("content".into(), Value::String(text));
                    obj.insert("message".into(), Value::Object(message));
                }
                Field::MessageThinking => {
                    message.insert("content".into(), Value::from(""));
                    message.insert("thinking".into(), Value::String(text));
                    obj.insert("message".into(), Value::Object(message));
                }
                Field::Thinking => {
                    obj.insert("response".into(), Value::from(""));
                    obj.insert("thinking".into(), Value::String(text));
                }
                _ => {
                    obj.insert("response".into(), Value::String(text));
                }
            }
            obj.insert("done".into(), Value::Bool(false));
        }
        Family::Plain => {}
    }
    Value::Object(obj)
}
