//! The edges of response masking, through the real filter in a real Envoy in front of the
//! real demo upstream: NDJSON masked line by line as it streams, `Range` and `HEAD` on
//! masked routes, bodies in charsets the masker cannot read, bodies that are not what their
//! `content-type` says, the length a masked body is sent with, and the last words of a
//! stream. Every check compares with what the upstream really sends, read off the wire.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use airlock_demo::pii::seed_customers;
use airlock_e2e::fixtures::wait_first_fetch;
use airlock_e2e::raw::parse_reply;
use airlock_e2e::*;
use serde_json::{json, Value};

/// The shipped config plus masked rules for the demo endpoints these tests use (GET and
/// HEAD), and for the LLM API.
fn edges_config() -> Value {
    let mut config = test_plugin_config();
    let rules = config["rules"].as_array_mut().unwrap();
    rules.push(json!({
        "name": "support-reads-exports",
        "action": "allow",
        "when": {"groups": {"any_of": ["support"]}, "methods": ["GET", "HEAD"],
                 "path": {"regex": "^/(customers|ndjson|jsonl|ranged|odd/[a-z0-9-]+|echo/[a-z]+)$"}},
        "mask": "pii"
    }));
    rules.push(json!({
        "name": "agents-call-the-llm",
        "action": "allow",
        "when": {"methods": ["POST"], "path": {"prefix": "/v1/chat/"}},
        "mask": "pii"
    }));
    config
}

fn stack() -> SharedRef {
    static STACK: SharedStack = SharedStack::new();
    STACK.get(|| {
        let stack = builder_for(edges_config(), TestKeys::shared()).start()?;
        wait_first_fetch(stack.jwks());
        Ok(stack)
    })
}

fn support() -> String {
    auth_for(TestKeys::shared(), "sam", &["support"])
}

/// Every PII value of the seed customers.
fn pii_values() -> Vec<String> {
    seed_customers().into_iter().flat_map(|c| [c.email, c.phone, c.card, c.ssn, c.iban]).collect()
}

fn assert_no_pii(bytes: &[u8], context: &str) {
    let text = String::from_utf8_lossy(bytes);
    for value in pii_values() {
        assert!(!text.contains(value.as_str()), "{context}: `{value}` leaked:\n{text}");
    }
    assert!(!text.contains("@example."), "{context}: an email leaked:\n{text}");
    // The same values in UTF-16LE: a body the masker could not read must not pass either.
    let utf16 = |s: &str| s.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>();
    let needle = utf16("@example.");
    assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_slice()), "{context}: a UTF-16 email leaked");
}

/// One request written by hand, read until the peer closes: the raw reply bytes, and
/// when each read arrived (relative to sending).
fn exchange(stack: &Stack, method: &str, path: &str, headers: &[(&str, &str)]) -> (Vec<u8>, Vec<(Duration, usize)>) {
    let mut conn = TcpStream::connect(("127.0.0.1", stack.listen_port())).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: airlock.test\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let sent = Instant::now();
    conn.write_all(request.as_bytes()).unwrap();
    let (mut raw, mut reads, mut buf) = (Vec::new(), Vec::new(), [0u8; 16 * 1024]);
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                reads.push((sent.elapsed(), raw.len()));
            }
            Err(e) => panic!("reading {path}: {e} after {} bytes", raw.len()),
        }
    }
    (raw, reads)
}

/// The reply head (status line and headers, lower-cased names) and every byte after it.
fn split_head(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete reply head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, raw[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// A refusal answered with its real status while the headers could still change: 502,
/// the reply JSON, the code in `x-airlock-code`, and nothing of the upstream's body.
fn assert_refused_not_maskable(stack: &Stack, path: &str) {
    let before = stack.stat("wasmcustom.airlock.response_not_maskable").unwrap_or(0);
    let (raw, _) = exchange(stack, "GET", path, &[("authorization", &support())]);
    assert_no_pii(&raw, path);
    let reply = parse_reply(&raw).unwrap();
    assert_eq!(reply.status, 502, "{path}: {}", reply.text());
    assert_eq!(reply.header("x-airlock-code"), Some("response_not_maskable"), "{path}: {:?}", reply.headers);
    assert_eq!(reply.header("content-type"), Some("application/json"), "{path}");
    let error = error_of(&reply);
    assert_eq!(error["code"], "response_not_maskable", "{path}: {}", reply.text());
    assert_eq!(error["status"], 502, "{path}");
    assert!(stack.stat("wasmcustom.airlock.response_not_maskable").unwrap_or(0) > before, "{path}: not counted");
}

// ---- NDJSON ---------------------------------------------------------------------------

/// Reads an NDJSON stream through Airlock and checks it the way a client would: the
/// rows arrive one by one, every line is JSON, nothing personal is in them.
fn assert_rows_stream_masked(path: &str, content_type: &str, rows: usize) {
    let stack = stack();
    let raw_upstream = send(stack.agent(), "GET", &stack.upstream_url(path), &[], None).unwrap();
    assert_eq!(raw_upstream.header("content-type"), Some(content_type));
    assert!(raw_upstream.text().contains("@example."), "the upstream streams PII");
    let stat = |kind: &str| stack.stat(&format!("wasmcustom.airlock.masked.pii.{kind}")).unwrap_or(0);
    let (emails, cards) = (stat("email"), stat("credit_card"));

    let (raw, reads) = exchange(&stack, "GET", path, &[("authorization", &support())]);
    assert_no_pii(&raw, path);
    let reply = parse_reply(&raw).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some(content_type));
    let text = reply.text();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.len(), rows, "{text}");
    assert!(text.ends_with('\n'));
    for (i, line) in lines.iter().enumerate() {
        let row: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {i} is not JSON ({e}): {line}"));
        assert_eq!(row["id"], i + 1, "{line}");
        assert_eq!(row["email"], "[REDACTED:email]", "{line}");
        assert_eq!(row["name"], seed_customers()[i % 20].name, "non-PII values pass untouched");
    }
    // Incremental: the first row's end was on the client's side well before the stream's.
    let first_row_end = find(&raw, b"}\n").unwrap();
    let first_at = reads.iter().find(|(_, len)| *len > first_row_end).unwrap().0;
    let total = reads.last().unwrap().0;
    assert!(total > Duration::from_millis(1500), "the upstream paces its writes: {total:?}");
    assert!(first_at < total / 4, "the first row came at {first_at:?} of {total:?}: the stream was buffered");
    assert!(reply.header("content-length").is_none(), "a stream's length cannot be known: {:?}", reply.headers);
    assert!(stat("email") >= emails + rows as u64, "email count did not move");
    assert!(stat("credit_card") >= cards + rows as u64, "card count did not move");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn ndjson_rows_split_mid_email_arrive_masked_line_by_line_as_they_stream() {
    assert_rows_stream_masked("/ndjson?rows=10&delay_ms=100", "application/x-ndjson", 10);
}

#[test]
fn json_lines_under_application_jsonl_are_masked_like_ndjson() {
    assert_rows_stream_masked("/jsonl?rows=10&delay_ms=100", "application/jsonl", 10);
}

#[test]
fn ndjson_declared_in_utf16_is_refused_before_its_headers_leave() {
    assert_refused_not_maskable(&stack(), "/odd/utf16-ndjson");
}

// ---- Range ----------------------------------------------------------------------------

#[test]
fn a_range_request_on_a_masked_route_gets_the_whole_body_masked_never_a_fragment() {
    let stack = stack();
    let ranges = ["bytes=0-40", "bytes=30-", "bytes=-60", "bytes=0-10,40-80"];
    for range in ranges {
        // The upstream honours `Range`: had it reached it, a fragment would come back.
        let direct = send(stack.agent(), "GET", &stack.upstream_url("/ranged"), &[("range", range)], None).unwrap();
        assert_eq!(direct.status, 206, "{range}: the demo upstream serves ranges");

        for extra in [None, Some(("if-range", "\"any-etag\""))] {
            let mut headers = vec![("authorization", support()), ("range", range.to_string())];
            headers.extend(extra.map(|(n, v)| (n, v.to_string())));
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let (raw, _) = exchange(&stack, "GET", "/ranged", &headers);
            assert_no_pii(&raw, range);
            let reply = parse_reply(&raw).unwrap();
            assert_eq!(reply.status, 200, "{range} {extra:?}: {}", reply.text());
            assert!(reply.header("content-range").is_none(), "{range}: {:?}", reply.headers);
            let body = reply.json().unwrap();
            let customers = body["customers"].as_array().unwrap();
            assert_eq!(customers.len(), 20, "{range}: the whole body, masked");
            assert!(customers.iter().all(|c| c["email"] == "[REDACTED:email]"), "{range}");
        }
    }
    // What the upstream received: no `range`, no `if-range`.
    let reply = stack
        .get("/echo/headers", &[("authorization", &support()), ("range", "bytes=0-40"), ("if-range", "\"any-etag\"")])
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json().unwrap();
    assert_eq!(seen["headers"]["x-airlock-subject"], "sam", "the echo went through Airlock: {seen}");
    assert!(seen["headers"].get("range").is_none(), "`range` reached the upstream: {seen}");
}

// ---- HEAD -----------------------------------------------------------------------------

#[test]
fn a_head_request_on_a_masked_route_does_not_reveal_the_unmasked_length() {
    let stack = stack();
    let full = send(stack.agent(), "GET", &stack.upstream_url("/customers"), &[], None).unwrap();
    let head = send(stack.agent(), "HEAD", &stack.upstream_url("/customers"), &[], None).unwrap();
    let unmasked_len = full.body.len().to_string();
    assert_eq!(head.header("content-length"), Some(unmasked_len.as_str()), "the upstream tells the length on HEAD");

    let (raw, _) = exchange(&stack, "HEAD", "/customers", &[("authorization", &support())]);
    let (status, headers, rest) = split_head(&raw);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
    assert!(rest.is_empty(), "a HEAD answer has no body: {}", String::from_utf8_lossy(&rest));
    assert_eq!(header(&headers, "content-type"), Some("application/json"), "{headers:?}");
    // Without a length Envoy's HTTP/1.1 codec says `transfer-encoding: chunked`: the
    // masked length is not known without the body, and the unmasked one must not be told.
    assert_eq!(header(&headers, "content-length"), None, "HEAD told a length: {headers:?}");
}

// ---- charsets and bodies that are not what they say ------------------------------------

#[test]
fn a_json_response_in_utf16_or_latin1_is_refused_with_a_real_502() {
    let stack = stack();
    let direct = send(stack.agent(), "GET", &stack.upstream_url("/odd/utf16"), &[], None).unwrap();
    assert_eq!(&direct.body[..2], &[0xFF, 0xFE], "the upstream sends UTF-16");
    for variant in ["utf16", "utf16-bom", "latin1"] {
        assert_refused_not_maskable(&stack, &format!("/odd/{variant}"));
    }
}

#[test]
fn a_text_body_in_utf16_without_bom_or_charset_is_refused_not_passed_unread() {
    let stack = stack();
    let direct = send(stack.agent(), "GET", &stack.upstream_url("/odd/utf16-text"), &[], None).unwrap();
    assert_eq!(direct.header("content-type"), Some("text/plain"));
    assert!(std::str::from_utf8(&direct.body).is_ok(), "UTF-16 of ASCII text is valid UTF-8, with NULs");
    assert_refused_not_maskable(&stack, "/odd/utf16-text");
}

#[test]
fn a_json_response_that_is_not_json_or_not_utf8_is_refused_with_a_real_502() {
    let stack = stack();
    for variant in ["not-json", "not-utf8"] {
        assert_refused_not_maskable(&stack, &format!("/odd/{variant}"));
    }
}

#[test]
fn a_json_response_with_a_utf8_bom_is_masked_as_json_and_keeps_its_bom() {
    let stack = stack();
    let (raw, _) = exchange(&stack, "GET", "/odd/utf8-bom", &[("authorization", &support())]);
    assert_no_pii(&raw, "/odd/utf8-bom");
    let reply = parse_reply(&raw).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.body.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).expect("the BOM is kept");
    let masked: Value = serde_json::from_slice(body).unwrap();
    let customers = masked["customers"].as_array().unwrap();
    assert_eq!(customers.len(), 20);
    assert!(customers.iter().all(|c| c["email"] == "[REDACTED:email]"), "masked as JSON: {masked}");
}

#[test]
fn a_masked_json_response_is_sent_with_the_length_of_the_masked_body() {
    let stack = stack();
    let unmasked = send(stack.agent(), "GET", &stack.upstream_url("/customers"), &[], None).unwrap();
    let (raw, _) = exchange(&stack, "GET", "/customers", &[("authorization", &support())]);
    let (status, headers, rest) = split_head(&raw);
    assert_eq!(status, 200);
    assert!(header(&headers, "transfer-encoding").is_none(), "{headers:?}");
    let len: usize = header(&headers, "content-length").expect("a content-length").parse().unwrap();
    assert_eq!(len, rest.len(), "content-length {len}, but {} bytes came", rest.len());
    assert_ne!(len, unmasked.body.len(), "masking changed the size");
    assert_no_pii(&rest, "/customers");
    let masked: Value = serde_json::from_slice(&rest).unwrap();
    assert_eq!(masked["customers"].as_array().unwrap().len(), 20);
}

// ---- the end of a stream -----------------------------------------------------------------

#[test]
fn the_last_words_of_a_streamed_completion_arrive_masked_when_the_stream_ends() {
    let stack = stack();
    let auth = auth_for(TestKeys::shared(), "agent-7", &["analyst"]);
    let text = "Send the refund to alice.martin@example.com";
    let request = json!({"model": "demo", "stream": true, "chunk_size": 5, "delay_ms": 5,
                         "messages": [{"role": "user", "content": "hi"}], "demo_text": text});
    let reply = stack.post_json("/v1/chat/completions", &[("authorization", &auth)], &request).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_no_pii(&reply.body, "completion");
    let said: String = reply
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(said, "Send the refund to [REDACTED:email]", "{}", reply.text());
    assert!(reply.text().ends_with("data: [DONE]\n\n"), "{}", reply.text());
}

#[test]
fn the_last_words_of_a_text_event_stream_arrive_masked_when_the_upstream_ends_it() {
    let stack = stack();
    let direct = send(stack.agent(), "GET", &stack.upstream_url("/odd/sse-tail"), &[], None).unwrap();
    assert!(direct.text().ends_with("write to alice.martin@example.com\n\n"), "{}", direct.text());
    let (raw, _) = exchange(&stack, "GET", "/odd/sse-tail", &[("authorization", &support())]);
    assert_no_pii(&raw, "/odd/sse-tail");
    let reply = parse_reply(&raw).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    // Events carry one text, which the masker may hold back across them; the held-back end
    // of it is released by the end of the stream alone.
    let said = data.concat();
    let expected = "Refund approved for Alice Martin.Tell her the reference is R-2291 andwrite to [REDACTED:email]";
    assert_eq!(said, expected, "the last words are missing: {text}");
}
