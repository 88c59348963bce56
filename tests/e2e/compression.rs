//! Compressed upstream answers on masked routes, through real Envoy + airlock.wasm and the
//! demo upstream, which compresses whatever the client accepts: gzip, deflate and br JSON
//! and streams are decoded by the filter and arrive masked and decoded; zstd, stacked and
//! unknown codings are refused 502 naming the coding before any byte of the body passes;
//! a gigabyte decompression bomb gets 502 without Envoy growing; identity is masked.
//! (Envoy's own decompressors are not in the shipped bootstrap: see README.md,
//! "Compressed responses".)

use airlock_e2e::fixtures::wait_first_fetch;
use airlock_e2e::*;
use serde_json::{json, Value};

/// The shipped config (its `/customers` rule masks the compressed endpoints, which live
/// under `/customers/`), plus a masked rule for `/echo`.
fn config() -> Value {
    let mut config = test_plugin_config();
    config["rules"].as_array_mut().unwrap().push(json!({
        "name": "support-echo",
        "action": "allow",
        "when": {"groups": {"any_of": ["support"]}, "methods": ["GET"], "path": {"exact": "/echo"}},
        "mask": "pii"
    }));
    config
}

fn stack() -> SharedRef {
    static STACK: SharedStack = SharedStack::new();
    STACK.get(|| {
        let stack = builder_for(config(), TestKeys::shared()).start()?;
        wait_first_fetch(stack.jwks());
        Ok(stack)
    })
}

fn support() -> String {
    auth_for(TestKeys::shared(), "sam", &["support"])
}

fn get(stack: &Stack, path: &str, coding: &str) -> Reply {
    stack.get(path, &[("authorization", &support()), ("accept-encoding", coding)]).unwrap()
}

/// The upstream really answers `path` encoded as `header` (so a refusal means something).
fn assert_upstream_encodes(stack: &Stack, path: &str, header: &str) {
    let raw = send(stack.agent(), "GET", &stack.upstream_url(path), &[], None).unwrap();
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.header("content-encoding"), Some(header), "{path}");
}

fn assert_refused_naming(reply: &Reply, header: &str, context: &str) {
    assert_eq!(reply.status, 502, "{context}: {}", reply.text());
    let error = error_of(reply);
    assert_eq!(error["code"], "response_not_maskable", "{context}: {error}");
    assert_eq!(error["retry"], "never", "{context}: {error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("`content-encoding: {header}`")), "{context}: {message}");
    assert_eq!(reply.header("content-encoding"), None, "{context}: {:?}", reply.headers);
    assert!(!reply.body.windows(2).any(|w| w == [0x1f, 0x8b]), "{context}: gzip bytes leaked");
    assert!(!reply.text().contains("@example."), "{context}: PII leaked");
}

/// Envoy's peak resident memory so far, in bytes.
fn peak_rss(stack: &Stack) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", stack.envoy_pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A decoded, masked answer: no coding left, no PII, every row's e-mail masked.
fn assert_decoded_and_masked(reply: &Reply, context: &str) {
    assert_eq!(reply.status, 200, "{context}: {}", reply.text());
    assert_eq!(reply.header("content-encoding"), None, "{context}: {:?}", reply.headers);
    if let Some(len) = reply.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), reply.body.len(), "{context}: stale content-length");
    }
    let text = String::from_utf8(reply.body.clone()).unwrap_or_else(|_| panic!("{context}: not text (still encoded?)"));
    assert!(!text.contains("@example."), "{context}: an email leaked:\n{text}");
    assert!(text.contains("[REDACTED:email]"), "{context}: nothing masked:\n{text}");
}

#[test]
fn gzip_deflate_and_br_json_answers_are_decoded_and_masked() {
    let stack = stack();
    for coding in ["gzip", "deflate", "br"] {
        let path = format!("/customers/encoded?encoding={coding}&as=json");
        assert_upstream_encodes(&stack, &path, coding);
        let reply = get(&stack, &path, coding);
        assert_decoded_and_masked(&reply, coding);
        let customers = reply.json().unwrap()["customers"].as_array().unwrap().clone();
        assert_eq!(customers.len(), 20, "{coding}");
        assert!(customers.iter().all(|c| c["email"].as_str().unwrap().contains("[REDACTED:")), "{coding}");
    }
}

#[test]
fn zstd_json_answers_are_refused_502_naming_the_coding() {
    let stack = stack();
    let before = stack.stat("wasmcustom.airlock.response_not_maskable").unwrap_or(0);
    let path = "/customers/encoded?encoding=zstd&as=json";
    assert_upstream_encodes(&stack, path, "zstd");
    assert_refused_naming(&get(&stack, path, "zstd"), "zstd", "zstd");
    assert!(stack.stat("wasmcustom.airlock.response_not_maskable").unwrap_or(0) > before);
}

#[test]
fn gzip_deflate_and_br_streams_arrive_decoded_and_masked_event_by_event() {
    let stack = stack();
    for coding in ["gzip", "deflate", "br"] {
        for kind in ["sse", "ndjson"] {
            let path = format!("/customers/encoded?encoding={coding}&as={kind}&delay_ms=5");
            assert_upstream_encodes(&stack, &path, coding);
            let reply = get(&stack, &path, coding);
            let context = format!("{coding} {kind}");
            assert_decoded_and_masked(&reply, &context);
            let text = reply.text();
            if kind == "sse" {
                let plain = get(&stack, &format!("/customers/encoded?encoding=identity&as={kind}"), "identity").text();
                assert_eq!(text.matches("data:").count(), plain.matches("data:").count(), "{context}: {text}");
                assert!(text.matches("data:").count() >= 5, "{context}: {text}");
            } else {
                let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
                assert_eq!(rows.len(), 10, "{context}: {text}");
            }
        }
    }
}

#[test]
fn zstd_streams_are_refused_before_any_event_passes() {
    let stack = stack();
    for kind in ["sse", "ndjson"] {
        let path = format!("/customers/encoded?encoding=zstd&as={kind}&delay_ms=5");
        assert_upstream_encodes(&stack, &path, "zstd");
        let reply = get(&stack, &path, "zstd");
        assert_refused_naming(&reply, "zstd", &format!("zstd {kind}"));
        assert!(!reply.text().contains("data:"), "zstd {kind}: an event passed");
    }
}

#[test]
fn stacked_and_unknown_codings_are_refused_502_naming_them() {
    let stack = stack();
    for (encoding, header) in [("gzip,br", "gzip, br"), ("identity,zstd", "zstd"), ("compress", "compress")] {
        let path = format!("/customers/encoded?encoding={encoding}&as=json");
        let raw = if encoding == "identity,zstd" { "identity, zstd" } else { header };
        assert_upstream_encodes(&stack, &path, raw);
        assert_refused_naming(&get(&stack, &path, "*"), header, encoding);
    }
}

#[test]
fn an_identity_answer_is_masked_like_an_unencoded_one() {
    let stack = stack();
    let reply = get(&stack, "/customers/encoded?encoding=identity&as=json", "identity");
    assert_eq!(reply.status, 200, "{}", reply.text());
    if let Some(len) = reply.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), reply.body.len(), "stale content-length");
    }
    let customers = reply.json().unwrap()["customers"].as_array().unwrap().clone();
    assert_eq!(customers.len(), 20);
    assert!(customers.iter().all(|c| c["email"].as_str().unwrap().contains("[REDACTED:")));
    assert!(!reply.text().contains("@example."), "an email leaked");
}

#[test]
fn a_gzip_bomb_on_a_masked_route_gets_502_not_memory() {
    let stack = stack();
    let before = peak_rss(&stack);
    for coding in ["gzip", "deflate", "br", "zstd"] {
        // 1 GiB of JSON once decoded; about 1 MB on the wire for gzip, far less for the others.
        let reply = get(&stack, &format!("/customers/bomb?encoding={coding}&bytes=1073741824"), coding);
        if matches!(coding, "gzip" | "deflate" | "br") {
            // Decoded by the filter up to the masking limit, then refused with a real status.
            assert_eq!(reply.status, 502, "{coding} bomb: {}", reply.text());
            let error = error_of(&reply);
            assert_eq!(error["code"], "response_too_large", "{coding} bomb: {error}");
            assert_eq!(reply.header("content-encoding"), None, "{coding} bomb");
        } else {
            assert_refused_naming(&reply, coding, &format!("{coding} bomb"));
        }
        assert!(!reply.text().contains("xxxxxxxx"), "{coding}: bomb bytes passed");
    }
    let after = peak_rss(&stack);
    assert!(after < before + 64 * 1024 * 1024, "Envoy's peak memory grew from {before} to {after} bytes");
}

#[test]
fn a_masked_route_asks_the_upstream_for_no_compression() {
    let stack = stack();
    let reply = get(&stack, "/echo", "gzip, br, zstd");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echoed = reply.json().unwrap();
    assert_eq!(echoed["headers"].get("accept-encoding"), None, "{echoed}");
    assert_eq!(echoed["path"], "/echo");
}
