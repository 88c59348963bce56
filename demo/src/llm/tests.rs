use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use axum::routing::{get, post};
use axum::Router;

use super::*;
use crate::pii::{luhn_valid, ssn_valid};

fn opts(body: Value) -> ChatOptions {
    chat_options(&body, &HashMap::new()).unwrap()
}

/// The content deltas of a stream's events, checking the exact chunk format.
fn contents(events: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        let data = e.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap();
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        for k in ["id", "object", "created", "model", "choices"] {
            assert!(keys.iter().any(|x| *x == k), "{k} missing in {data}");
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            out.push(c.to_string());
        }
    }
    out
}

#[test]
fn the_default_answer_carries_every_listed_value_and_they_are_valid() {
    let text = chat_text();
    let pii = chat_pii();
    assert_eq!(pii.iter().filter(|(k, _)| *k == "credit_card").count(), 2);
    for (kind, value) in &pii {
        assert_eq!(text.matches(value.as_str()).count(), 1, "{kind} {value}");
        match *kind {
            "credit_card" => assert!(luhn_valid(value), "{value}"),
            "us_ssn" => assert!(ssn_valid(value), "{value}"),
            _ => {}
        }
    }
}

#[test]
fn content_is_cut_every_chunk_size_characters_or_at_the_given_offsets() {
    let text = "añb😀cd";
    assert_eq!(split_content(text, 2, None), ["añ", "b😀", "cd"]);
    assert_eq!(split_content(text, 100, None), [text]);
    assert_eq!(split_content(text, 2, Some(&[5, 1, 1, 0, 99])), ["a", "ñb😀c", "d"]);
    assert_eq!(split_content("", 3, None), [""]);
    for size in 1..12 {
        assert_eq!(split_content(&chat_text(), size, None).concat(), chat_text());
    }
}

#[test]
fn streamed_answer_has_the_openai_chunk_sequence() {
    let o = opts(json!({"model":"gpt-test","stream":true,"chunk_size":5,"stream_options":{"include_usage":true}}));
    let events = chat_events(&o, "chatcmpl-x", 1_700_000_000, &json!([]));
    assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
    let first: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap().trim()).unwrap();
    assert_eq!(first["choices"][0]["delta"], json!({"role":"assistant","content":""}));
    assert_eq!(first["model"], "gpt-test");
    let parsed: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap().trim()).unwrap())
        .collect();
    let stop = &parsed[parsed.len() - 2];
    assert_eq!(stop["choices"][0]["finish_reason"], "stop");
    assert_eq!(stop["choices"][0]["delta"], json!({}));
    let usage = &parsed[parsed.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let pieces = contents(&events);
    assert_eq!(pieces.concat(), chat_text());
    assert!(pieces[1..pieces.len() - 1].iter().all(|p| p.chars().count() == 5));
    // Values are split across chunks: no chunk holds a whole email or card.
    for (_, v) in chat_pii() {
        assert!(pieces.iter().all(|p| !p.contains(&v)), "{v}");
    }
}

#[test]
fn options_come_from_the_body_or_the_query() {
    let q: HashMap<String, String> =
        [("split_at", "3,10"), ("delay_ms", "0"), ("stream", "true"), ("write_bytes", "7")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let o = chat_options(&json!({"demo_text":"hello there world"}), &q).unwrap();
    assert_eq!(
        (o.split_at.as_deref(), o.delay, o.stream, o.write_bytes),
        (Some(&[3, 10][..]), Duration::ZERO, true, 7)
    );
    assert_eq!(split_content(&o.text, o.chunk_size, o.split_at.as_deref()), ["hel", "lo ther", "e world"]);
    let o = chat_options(&json!({"split_at":[4],"delay_ms":5}), &q).unwrap();
    assert_eq!((o.split_at, o.delay), (Some(vec![4]), Duration::from_millis(5)));
    for bad in [
        json!({"chunk_size":-1}),
        json!({"delay_ms":99999}),
        json!({"split_at":"x"}),
        json!({"split_at":[1.5]}),
        json!({"stream":1}),
        json!({"demo_text":5}),
    ] {
        assert!(chat_options(&bad, &HashMap::new()).is_err(), "{bad}");
    }
}

#[test]
fn the_non_streamed_answer_is_one_chat_completion() {
    let v = chat_completion(&opts(json!({})), "chatcmpl-y", 1, &json!([{"role":"user","content":"hi"}]));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], chat_text());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn ndjson_lines_are_rows_split_across_writes_inside_the_email() {
    let writes = ndjson_writes(3, 0);
    assert_eq!(writes.len(), 6);
    let body: Vec<u8> = writes.iter().flat_map(|w| w.to_vec()).collect();
    let lines: Vec<Value> =
        String::from_utf8(body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["id"], 3);
    let email = lines[0]["email"].as_str().unwrap();
    assert!(writes.iter().all(|w| !String::from_utf8_lossy(w).contains(email)));
    assert!(ndjson_writes(2, 10).iter().all(|w| w.len() <= 10));
}

/// Serves the two endpoints on a loopback port from a background runtime.
fn serve() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app = Router::new().route("/v1/chat/completions", post(chat_completions)).route("/ndjson", get(ndjson));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Sends a raw HTTP/1.1 request; returns the head, the de-chunked body, and when (since
/// sending) the first and the last body bytes arrived.
fn request(addr: SocketAddr, method: &str, target: &str, body: &str) -> (String, String, Duration, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: demo\r\ncontent-type: application/json\r\ncontent-length: \
            {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let start = Instant::now();
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let (mut first, mut last) = (None, Duration::ZERO);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(h) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            if raw.len() > h + 4 && first.is_none() && raw[h + 4..].windows(7).any(|w| w == b"content") {
                first = Some(start.elapsed());
            }
        }
        last = start.elapsed();
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (head.to_string(), body, first.unwrap_or(last), last)
}

#[test]
fn the_stream_arrives_incrementally_over_http() {
    let addr = serve();
    let (head, body, first, last) = request(
        addr,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"chunk_size":40,"delay_ms":60,"messages":[]}"#,
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    let events: Vec<String> = body.split_inclusive("\n\n").map(str::to_string).collect();
    assert_eq!(contents(&events).concat(), chat_text());
    assert!(body.ends_with("data: [DONE]\n\n"));
    // About 12 chunks 60 ms apart: the first content long before the last byte.
    assert!(last >= Duration::from_millis(500), "{last:?}");
    assert!(first + Duration::from_millis(300) < last, "first {first:?}, last {last:?}");

    let (head, body, _, _) = request(addr, "POST", "/v1/chat/completions?stream=false", r#"{"messages":[]}"#);
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], chat_text());

    let (head, body, _, _) = request(addr, "POST", "/v1/chat/completions", "{not json");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body.contains("invalid_request_error"));

    let (head, body, _, _) = request(addr, "GET", "/ndjson?rows=4&delay_ms=0", "");
    assert!(head.to_ascii_lowercase().contains("content-type: application/x-ndjson"), "{head}");
    assert_eq!(body, ndjson_lines(4).concat());
}

#[test]
fn bench_options_repeat_the_answer_and_stamp_events() {
    let q = HashMap::from([("repeat".to_string(), "3".to_string())]);
    assert_eq!(bench_options(&json!({}), &q, "ab").unwrap(), BenchOptions { repeat: 3, stamp: false });
    let b = bench_options(&json!({"repeat": 2, "stamp": true}), &q, "ab").unwrap();
    assert_eq!(b, BenchOptions { repeat: 2, stamp: true });
    assert_eq!(bench_options(&json!({}), &HashMap::new(), "ab").unwrap().repeat, 1);
    for bad in [json!({"repeat": 0}), json!({"repeat": -1}), json!({"repeat": "x"}), json!({"stamp": 1})] {
        assert!(bench_options(&bad, &HashMap::new(), "ab").is_err(), "{bad}");
    }
    // The cap is on the repeated answer's characters.
    assert!(bench_options(&json!({"repeat": MAX_REPEATED_CHARS / 4 + 1}), &HashMap::new(), "abcd").is_err());
    assert!(bench_options(&json!({"repeat": MAX_REPEATED_CHARS / 4}), &HashMap::new(), "abcd").is_ok());
}

#[test]
fn a_stamped_event_is_the_same_chunk_with_its_sequence_number_and_exact_send_time() {
    let events = chat_events(&opts(json!({"stream": true})), "chatcmpl-x", 1, &Value::Null);
    let at = UNIX_EPOCH + Duration::new(1_700_000_000, 4_005);
    for (seq, event) in events.iter().enumerate() {
        let stamped = stamp_event(event, seq, at);
        if event == "data: [DONE]\n\n" {
            assert_eq!(&stamped, event);
            continue;
        }
        let data = stamped.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap();
        assert!(data.starts_with(&format!("{{\"airlock_seq\":{seq},\"airlock_sent\":1700000000.000004005,")));
        let mut v: Value = serde_json::from_str(data).unwrap();
        let obj = v.as_object_mut().unwrap();
        assert_eq!(obj.remove("airlock_seq"), Some(json!(seq)));
        assert!(obj.remove("airlock_sent").unwrap().is_f64());
        let original: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(v, original);
    }
}

#[test]
fn a_repeated_stamped_stream_arrives_whole_over_http() {
    let addr = serve();
    let body = r#"{"stream":true,"chunk_size":5,"delay_ms":1,"repeat":3,"stamp":true,"demo_text":"one two three "}"#;
    let (head, body, _, _) = request(addr, "POST", "/v1/chat/completions", body);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let events: Vec<String> = body.split_inclusive("\n\n").map(str::to_string).collect();
    assert_eq!(contents(&events).concat(), "one two three ".repeat(3));
    assert_eq!(body.matches("\"airlock_sent\":").count(), events.len() - 1);
}
