//! Tests of streaming masking. Helpers here play the client: an SSE parser written from
//! the standard (independent of the one under test) and the joining of deltas that
//! client SDKs do.

mod apis;
mod limits;
mod random;
mod splits;
mod sse;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::mask::{compile_profile, MaskProfileSpec};

pub(super) fn profile(spec: Value) -> MaskProfile {
    let spec: MaskProfileSpec = serde_json::from_value(spec).unwrap();
    compile_profile(spec, "mask_profiles.pii").unwrap()
}

pub(super) fn all() -> MaskProfile {
    profile(json!({ "detectors": ["all"] }))
}

/// One sample of every built-in detector kind (several layouts where they have them).
pub(super) const VALUES: &[(&str, &str)] = &[
    ("email", "alice@example.com"),
    ("email", "bob.smith+tag@mail.example.co.uk"),
    ("email", "zoë@bücher.de"),
    ("credit_card", "4111 1111 1111 1111"),
    ("credit_card", "5500-0000-0000-0004"),
    ("credit_card", "4111111111111111"),
    ("us_ssn", "123-45-6789"),
    ("us_ssn", "123 45 6789"),
    ("phone", "(415) 555-0134"),
    ("phone", "+1 415 555 0134"),
    ("phone", "415.555.0134"),
    ("phone", "+44 (0)20 7946 0958"),
    ("iban", "DE89370400440532013000"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"),
    ("api_key", "AKIAIOSFODNN7EXAMPLE"),
    ("api_key", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"),
    ("api_key", "ghp_a1B2c3D4e5a1B2c3D4e5a1B2c3D4e5a1B2c3"),
    ("api_key", "xoxb-123456789012-abcdefABCDEF"),
    ("api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("api_key", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc123==\n-----END RSA PRIVATE KEY-----"),
    // Written with escapes that a reader decodes (JSON, HTML, URL).
    ("email", "carol\\u0040example.com"),
    ("email", "dave&#64;example.org"),
    ("email", "erin%40example.net"),
    ("credit_card", "&#52;111 1111 1111 1111"),
    ("us_ssn", "123\\u002d45\\u002d6789"),
    ("phone", "(415)&#32;555-0134"),
    // Shapes of issue 14: spaces inside phones, dots and underscores inside cards, a
    // multi-label domain, and invisible characters inside values (masking reads through them).
    ("phone", "415 555 0132"),
    ("phone", "+44 20 7946 0958"),
    ("credit_card", "4111.1111.1111.1111"),
    ("credit_card", "4111_1111_1111_1111"),
    ("email", "carol@example.co.uk"),
    ("email", "ali\u{200b}ce@example.com"),
    ("credit_card", "4111\u{200b} 1111 1111 1111"),
    ("us_ssn", "123-45-67\u{200d}89"),
    ("iban", "GB82\u{feff} WEST 1234 5698 7654 32"),
];

/// The base64 lines of the private key sample: none may reach a client either.
pub(super) const KEY_LINES: &[&str] = &["MIIEpAIBAAKCAQEA", "abc123=="];

/// `value` in a sentence, as an LLM would write it.
pub(super) fn sentence(value: &str) -> String {
    format!("Sure, here it is: {value} (as requested).")
}

/// Asserts that no raw sample value (nor a private key line) is in `text`.
pub(super) fn assert_no_raw(text: &str, context: &dyn Fn() -> String) {
    for (kind, v) in VALUES {
        assert!(!text.contains(v), "raw {kind} `{v}` reached the client: {text:?}\n{}", context());
    }
    for line in KEY_LINES {
        assert!(!text.contains(line), "private key line reached the client: {text:?}\n{}", context());
    }
}

/// Runs a stream: every chunk through `push`, then `finish`. Returns the output of each
/// push and of finish (last).
pub(super) fn run(kind: StreamKind, p: &MaskProfile, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, StreamError> {
    run_with(kind, StreamLimits::default(), p, chunks)
}

pub(super) fn run_with(
    kind: StreamKind,
    limits: StreamLimits,
    p: &MaskProfile,
    chunks: &[&[u8]],
) -> Result<Vec<Vec<u8>>, StreamError> {
    let mut m = StreamMasker::new(kind, limits);
    let mut outs = Vec::new();
    for c in chunks {
        let mut out = Vec::new();
        m.push(p, c, &mut out)?;
        outs.push(out);
    }
    let mut out = Vec::new();
    m.finish(p, &mut out)?;
    outs.push(out);
    Ok(outs)
}

pub(super) fn concat(outs: &[Vec<u8>]) -> String {
    String::from_utf8(outs.concat()).unwrap()
}

/// A dispatched event, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Event {
    pub event: String,
    pub data: String,
    pub id: String,
}

/// Parses an event stream as the WHATWG standard's client does (lines ending in CRLF,
/// LF or CR; `data` joined with LF; events dispatched at blank lines, never at the end).
pub(super) fn client_events(stream: &str) -> Vec<Event> {
    let stream = stream.strip_prefix('\u{feff}').unwrap_or(stream);
    let mut events = Vec::new();
    let (mut data, mut event, mut id) = (String::new(), String::new(), String::new());
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut chars = stream.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(std::mem::take(&mut cur));
            }
            '\n' => lines.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    for line in lines {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                events.push(Event {
                    event: if event.is_empty() { "message".into() } else { event.clone() },
                    data: data.clone(),
                    id: id.clone(),
                });
            }
            data.clear();
            event.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
            None => (line.clone(), String::new()),
        };
        match field.as_str() {
            "data" => {
                data.push_str(&value);
                data.push('\n');
            }
            "event" => event = value,
            "id" if !value.contains('\0') => id = value,
            _ => {}
        }
    }
    events
}

/// An OpenAI chat completion chunk carrying `content` for choice `index`.
pub(super) fn chat_chunk(index: u64, content: &str) -> String {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-test",
        "choices": [{ "index": index, "delta": { "content": content }, "logprobs": null, "finish_reason": null }],
    });
    format!("data: {chunk}\n\n")
}

pub(super) fn chat_stop(index: u64) -> String {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-test",
        "choices": [{ "index": index, "delta": {}, "logprobs": null, "finish_reason": "stop" }],
    });
    format!("data: {chunk}\n\n")
}

/// A whole OpenAI stream: `deltas` of choice 0, the stop chunk and `[DONE]`.
pub(super) fn chat_stream(deltas: &[&str]) -> String {
    let mut s: String = deltas.iter().map(|d| chat_chunk(0, d)).collect();
    s.push_str(&chat_stop(0));
    s.push_str("data: [DONE]\n\n");
    s
}

/// What an OpenAI client assembles: content (and tool arguments, as `tool<i>`) per
/// choice index. Every event's data must be JSON (or `[DONE]`, which must come last).
pub(super) fn chat_texts(stream: &str) -> BTreeMap<String, String> {
    let events = client_events(stream);
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for (n, e) in events.iter().enumerate() {
        if e.data == "[DONE]" {
            assert_eq!(n + 1, events.len(), "[DONE] must be last: {stream}");
            continue;
        }
        let v: Value =
            serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("event is not JSON ({err}): {:?}", e.data));
        for c in v["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap();
            for field in ["content", "reasoning_content", "refusal"] {
                if let Some(s) = c["delta"][field].as_str() {
                    texts.entry(format!("{i}.{field}")).or_default().push_str(s);
                }
            }
            if let Some(calls) = c["delta"]["tool_calls"].as_array() {
                for t in calls {
                    let j = t["index"].as_u64().unwrap();
                    if let Some(s) = t["function"]["arguments"].as_str() {
                        texts.entry(format!("{i}.tool{j}")).or_default().push_str(s);
                    }
                }
            }
        }
    }
    texts
}

/// The joined content of choice 0.
pub(super) fn chat_content(stream: &str) -> String {
    chat_texts(stream).remove("0.content").unwrap_or_default()
}

/// Splits `s` at the given byte offsets (ascending).
pub(super) fn split_at<'a>(s: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut last = 0;
    for &c in cuts {
        parts.push(&s[last..c]);
        last = c;
    }
    parts.push(&s[last..]);
    parts
}

/// Char boundaries of `s` strictly inside it.
pub(super) fn inner_boundaries(s: &str) -> Vec<usize> {
    (1..s.len()).filter(|&i| s.is_char_boundary(i)).collect()
}

/// `s` cut into pieces at the given char boundaries.
pub(super) fn pieces<'a>(s: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    split_at(s.as_bytes(), cuts).into_iter().map(|b| std::str::from_utf8(b).unwrap()).collect()
}

/// What masking the whole text at once gives.
pub(super) fn whole(p: &MaskProfile, text: &str) -> String {
    p.mask_text(text).0.into_owned()
}
