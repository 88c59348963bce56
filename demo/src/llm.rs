//! LLM-shaped endpoints of the demo upstream, for streaming-masking tests: an
//! OpenAI-compatible chat completion endpoint that streams an answer full of (synthetic)
//! personal data and secrets, cut into chunks wherever a test asks, and an NDJSON
//! endpoint streaming customer rows with lines split across writes.
//!
//! `POST /v1/chat/completions` takes the OpenAI request body (`model`, `messages`,
//! `stream`, `stream_options.include_usage`) and these extra members, which may also be
//! given as query parameters (the `openai` client's `extra_body` / `extra_query`):
//!
//! | name | default | what |
//! |---|---|---|
//! | `chunk_size` | 8 | characters of content per chunk |
//! | `split_at` | — | character offsets to cut the content at instead (JSON array, or `3,17,40` in the query) |
//! | `delay_ms` | 20 | pause between writes |
//! | `write_bytes` | 0 | also cut each SSE event into writes of at most this many bytes (0: one write per event) |
//! | `demo_text` | [`chat_text`] | the answer to stream |
//! | `repeat` | 1 | the answer this many times over, so a short text makes a long stream (benchmarks) |
//! | `stamp` | false | each event carries its send time, for delay measurements (see [`stamp_event`]) |
//!
//! With `"stream": true` the answer is `text/event-stream` in OpenAI's exact chunk
//! format: a first chunk with the role, one chunk per piece of content, a chunk with
//! `finish_reason: "stop"`, a usage chunk if asked, then `data: [DONE]`. Without it, one
//! `chat.completion` JSON object.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::pii::seed_customers;

const MAX_CHUNK_SIZE: usize = 1 << 16;
const MAX_DELAY_MS: u64 = 2000;
const MAX_TEXT_CHARS: usize = 1 << 20;
const MAX_ROWS: usize = 10_000;
/// Default pause between writes: long enough that chunks leave as separate writes and
/// incremental delivery is observable, short enough for a test to read many.
const DEFAULT_DELAY_MS: u64 = 20;

/// Every personal value and secret in [`chat_text`], by kind (the filter's detector
/// names), so tests can check that none reaches a client raw.
pub fn chat_pii() -> Vec<(&'static str, String)> {
    let mut pii = Vec::new();
    for (n, c) in seed_customers().into_iter().take(2).enumerate() {
        pii.extend([("email", c.email), ("phone", c.phone), ("credit_card", c.card), ("us_ssn", c.ssn)]);
        if n == 0 {
            pii.push(("iban", c.iban));
        }
    }
    pii.push(("api_key", "AKIAIOSFODNN7EXAMPLE".to_string()));
    pii.push(("api_key", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z".to_string()));
    pii
}

/// The default streamed answer: prose about two seed customers carrying every value of
/// [`chat_pii`] once. None of it is a real person or credential.
pub fn chat_text() -> String {
    let pii = chat_pii();
    let v = |i: usize| pii.get(i).map_or("", |(_, s)| s.as_str());
    format!(
        "Here are the two customers you asked about. Alice Martin can be reached at {} or {}; \
         her card on file is {} and her SSN is {}. Refunds go to IBAN {}.\n\
         Bob Chen ({}, phone {}) paid with card {}, SSN {}.\n\
         For the export job, use the AWS key {} and the OpenAI key {}. Anything else?",
        v(0),
        v(1),
        v(2),
        v(3),
        v(4),
        v(5),
        v(6),
        v(7),
        v(8),
        v(9),
        v(10)
    )
}

/// How the answer is cut and paced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatOptions {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub chunk_size: usize,
    pub split_at: Option<Vec<usize>>,
    pub delay: Duration,
    pub write_bytes: usize,
    pub text: String,
}

/// Reads the options from the request body and query (the body wins). The error is the
/// client-facing message.
pub fn chat_options(body: &Value, query: &HashMap<String, String>) -> Result<ChatOptions, String> {
    let get = |name: &str| -> Option<Value> {
        body.get(name).cloned().or_else(|| query.get(name).map(|s| Value::String(s.clone())))
    };
    let uint = |name: &str, default: usize, max: usize| -> Result<usize, String> {
        let bad = || format!("{name} must be an integer from 0 to {max}");
        match get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => {
                n.as_u64().and_then(|n| usize::try_from(n).ok()).filter(|&n| n <= max).ok_or_else(bad)
            }
            Some(Value::String(s)) => s.trim().parse::<usize>().ok().filter(|&n| n <= max).ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    };
    let chunk_size = uint("chunk_size", 8, MAX_CHUNK_SIZE)?.max(1);
    let delay_ms = uint("delay_ms", DEFAULT_DELAY_MS as usize, MAX_DELAY_MS as usize)?;
    let write_bytes = uint("write_bytes", 0, MAX_CHUNK_SIZE)?;
    let split_at = match get("split_at") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect::<Option<Vec<usize>>>()
                .ok_or("split_at must be an array of non-negative integers")?,
        ),
        Some(Value::String(s)) => Some(
            s.split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.trim().parse::<usize>())
                .collect::<Result<Vec<usize>, _>>()
                .map_err(|_| "split_at must be a comma-separated list of character offsets")?,
        ),
        Some(_) => return Err("split_at must be an array of character offsets".into()),
    };
    let text = match get("demo_text") {
        None | Some(Value::Null) => chat_text(),
        Some(Value::String(s)) if s.chars().count() <= MAX_TEXT_CHARS => s,
        Some(_) => return Err(format!("demo_text must be a string of at most {MAX_TEXT_CHARS} characters")),
    };
    let stream = match get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => s == "true",
        Some(_) => return Err("stream must be a boolean".into()),
    };
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let model = body.get("model").and_then(Value::as_str).unwrap_or("airlock-demo").to_string();
    Ok(ChatOptions {
        model,
        stream,
        include_usage,
        chunk_size,
        split_at,
        delay: Duration::from_millis(delay_ms as u64),
        write_bytes,
        text,
    })
}

/// The content cut into pieces: at `split_at` (character offsets, out-of-range and
/// repeated ones ignored) or every `chunk_size` characters. Never splits a character.
pub fn split_content(text: &str, chunk_size: usize, split_at: Option<&[usize]>) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut cuts: Vec<usize> = match split_at {
        Some(at) => at.iter().copied().filter(|&c| c > 0 && c < chars.len()).collect(),
        None => (1..chars.len()).filter(|c| c % chunk_size.max(1) == 0).collect(),
    };
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for c in cuts.into_iter().chain(std::iter::once(chars.len())) {
        pieces.push(chars.get(last..c).unwrap_or_default().iter().collect());
        last = c;
    }
    pieces
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Word-ish token counts, for the `usage` member.
fn usage(prompt: &Value, text: &str) -> Value {
    let prompt_tokens = prompt.to_string().split_whitespace().count();
    let completion_tokens = text.split_whitespace().count();
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// The SSE events of a streamed answer, in order, each ending with its blank line.
pub fn chat_events(opts: &ChatOptions, id: &str, created: u64, messages: &Value) -> Vec<String> {
    let chunk = |choices: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": opts.model,
            "system_fingerprint": "fp_airlock_demo", "choices": choices,
        })
    };
    let choice = |delta: Value, finish: Value| {
        json!([{ "index": 0, "delta": delta, "logprobs": null,
        "finish_reason": finish }])
    };
    let mut events = vec![chunk(choice(json!({ "role": "assistant", "content": "" }), Value::Null))];
    for piece in split_content(&opts.text, opts.chunk_size, opts.split_at.as_deref()) {
        events.push(chunk(choice(json!({ "content": piece }), Value::Null)));
    }
    events.push(chunk(choice(json!({}), json!("stop"))));
    if opts.include_usage {
        let mut last = chunk(json!([]));
        if let Some(obj) = last.as_object_mut() {
            obj.insert("usage".into(), usage(messages, &opts.text));
        }
        events.push(last);
    }
    let mut out: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    out.push("data: [DONE]\n\n".to_string());
    out
}

/// The non-streamed answer.
pub fn chat_completion(opts: &ChatOptions, id: &str, created: u64, messages: &Value) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": opts.model,
        "system_fingerprint": "fp_airlock_demo",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": opts.text, "refusal": null, "annotations": [] },
            "logprobs": null, "finish_reason": "stop",
        }],
        "usage": usage(messages, &opts.text),
    })
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    let body = json!({ "error": { "message": message, "type": "invalid_request_error", "param": null, "code": null } });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(Query(query): Query<HashMap<String, String>>, body: Bytes) -> Response {
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return openai_error(StatusCode::BAD_REQUEST, "the request body must be a JSON object"),
            Err(e) => {
                return openai_error(StatusCode::BAD_REQUEST, &format!("the request body is not valid JSON: {e}"))
            }
        }
    };
    let mut opts = match chat_options(&req, &query) {
        Ok(o) => o,
        Err(msg) => return openai_error(StatusCode::BAD_REQUEST, &msg),
    };
    let bench = match bench_options(&req, &query, &opts.text) {
        Ok(b) => b,
        Err(msg) => return openai_error(StatusCode::BAD_REQUEST, &msg),
    };
    if bench.repeat > 1 {
        opts.text = opts.text.repeat(bench.repeat);
    }
    let id = format!("chatcmpl-demo{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let created = unix_now();
    let messages = req.get("messages").cloned().unwrap_or(Value::Null);
    if !opts.stream {
        let body = chat_completion(&opts, &id, created, &messages).to_string();
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    if bench.stamp {
        return stamped(chat_events(&opts, &id, created, &messages), opts.delay);
    }
    let writes = cut_writes(chat_events(&opts, &id, created, &messages), opts.write_bytes);
    streamed(writes, opts.delay, "text/event-stream")
}

/// Largest answer `repeat` may make, in characters.
const MAX_REPEATED_CHARS: usize = 64 << 20;

/// The benchmark options of a streamed answer (`scripts/bench/stream.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// The answer is the text this many times over.
    pub repeat: usize,
    /// Every event is stamped when it is written ([`stamp_event`]).
    pub stamp: bool,
}

/// Reads `repeat` and `stamp` from the request body or query (the body wins), like
/// [`chat_options`]; `text` is the answer to repeat. The error is the client-facing message.
pub fn bench_options(body: &Value, query: &HashMap<String, String>, text: &str) -> Result<BenchOptions, String> {
    let get = |name: &str| body.get(name).cloned().or_else(|| query.get(name).map(|s| Value::String(s.clone())));
    let chars = text.chars().count().max(1);
    let max = MAX_REPEATED_CHARS / chars;
    let bad = || format!("repeat must be an integer from 1 to {max} (at most {MAX_REPEATED_CHARS} characters)");
    let repeat = match get("repeat") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(bad)?,
        Some(Value::String(s)) => s.trim().parse::<usize>().map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    if repeat == 0 || repeat > max {
        return Err(bad());
    }
    let stamp = match get("stamp") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => s == "true",
        Some(_) => return Err("stamp must be a boolean".into()),
    };
    Ok(BenchOptions { repeat, stamp })
}

/// An SSE event of [`chat_events`] with `"airlock_seq": seq` (its index in the stream) and
/// `"airlock_sent": S.NNNNNNNNN` (seconds and nanoseconds since the Unix epoch of `at`) as
/// the first members of its JSON; `data: [DONE]` is returned as it is.
///
/// The time is the wall clock (`CLOCK_REALTIME` on Linux), which every process on the
/// machine reads alike, so a client on the same machine can subtract it from its own
/// reading (Python's `time.time_ns()`). A number with a fraction is not a value any
/// detector masks, so the stamp passes a masking proxy unchanged.
pub fn stamp_event(event: &str, seq: usize, at: SystemTime) -> String {
    let Some(rest) = event.strip_prefix("data: {") else {
        return event.to_string();
    };
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("data: {{\"airlock_seq\":{seq},\"airlock_sent\":{}.{:09},{rest}", since.as_secs(), since.subsec_nanos())
}

/// Like [`streamed`], one event per write, each stamped ([`stamp_event`]) just before it
/// is handed to the connection, after the pause.
fn stamped(events: Vec<String>, delay: Duration) -> Response {
    let body =
        futures_util::stream::unfold((events.into_iter().enumerate(), true), move |(mut it, first)| async move {
            let (seq, event) = it.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let write = Bytes::from(stamp_event(&event, seq, SystemTime::now()));
            Some((Ok::<Bytes, Infallible>(write), (it, false)))
        });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Cuts every event into writes of at most `write_bytes` bytes (0: whole events).
fn cut_writes(events: Vec<String>, write_bytes: usize) -> Vec<Bytes> {
    if write_bytes == 0 {
        return events.into_iter().map(Bytes::from).collect();
    }
    let mut writes = Vec::new();
    for e in events {
        let bytes = Bytes::from(e);
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + write_bytes).min(bytes.len());
            writes.push(bytes.slice(at..end));
            at = end;
        }
    }
    writes
}

/// A chunked response writing `writes` one by one with `delay` between them.
fn streamed(writes: Vec<Bytes>, delay: Duration, content_type: &'static str) -> Response {
    let body = futures_util::stream::unfold((writes.into_iter(), true), move |(mut it, first)| async move {
        let write = it.next()?;
        if !first && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<Bytes, Infallible>(write), (it, false)))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The lines of `/ndjson`: `rows` customer rows (seed customers repeated with growing
/// ids), each one JSON object and a line feed.
pub fn ndjson_lines(rows: usize) -> Vec<String> {
    let seeds = seed_customers();
    seeds
        .iter()
        .cycle()
        .take(rows)
        .enumerate()
        .map(|(i, c)| {
            let row = json!({
                "id": i + 1, "name": c.name, "email": c.email, "phone": c.phone, "card": c.card,
                "ssn": c.ssn, "iban": c.iban, "notes": c.notes,
            });
            format!("{row}\n")
        })
        .collect()
}

/// The writes of `/ndjson`: every line cut in the middle of its email (so each line
/// arrives in two writes and the email is split), or into `write_bytes` pieces.
pub fn ndjson_writes(rows: usize, write_bytes: usize) -> Vec<Bytes> {
    let lines = ndjson_lines(rows);
    if write_bytes > 0 {
        return cut_writes(vec![lines.concat()], write_bytes);
    }
    let mut writes = Vec::with_capacity(lines.len() * 2);
    for line in lines {
        let cut = line.find('@').unwrap_or(line.len() / 2);
        let (a, b) = line.split_at(cut);
        writes.push(Bytes::from(a.to_string()));
        writes.push(Bytes::from(b.to_string()));
    }
    writes
}

/// `GET /ndjson?rows=N&delay_ms=D&write_bytes=B`: `application/x-ndjson`.
pub async fn ndjson(Query(q): Query<HashMap<String, String>>, _body: Bytes) -> Response {
    let num = |name: &str, default: usize, max: usize| -> Result<usize, String> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or(format!("{name} must be an integer from 0 to {max}")),
        }
    };
    let parsed = num("rows", 10, MAX_ROWS).and_then(|rows| {
        let delay = num("delay_ms", DEFAULT_DELAY_MS as usize, MAX_DELAY_MS as usize)?;
        Ok((rows, delay, num("write_bytes", 0, MAX_CHUNK_SIZE)?))
    });
    let (rows, delay_ms, write_bytes) = match parsed {
        Ok(p) => p,
        Err(msg) => {
            let body = json!({ "error": msg }).to_string();
            return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
    };
    streamed(ndjson_writes(rows, write_bytes), Duration::from_millis(delay_ms as u64), "application/x-ndjson")
}

/// `GET /jsonl?...`: the rows of [`ndjson`] under `application/jsonl`, the other name
/// JSON Lines go by.
pub async fn jsonl(query: Query<HashMap<String, String>>, body: Bytes) -> Response {
    let mut response = ndjson(query, body).await;
    if response.status() == StatusCode::OK {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl"));
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
