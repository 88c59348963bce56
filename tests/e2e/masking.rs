//! Response masking by the real filter in a real Envoy: JSON stays JSON, no personal
//! data from the upstream's database reaches the client (compared against what the
//! upstream really sent), streamed and large bodies, compressed bodies decoded, counters.

use airlock_e2e::fixtures::wait_first_fetch;
use airlock_e2e::*;
use serde_json::{json, Value};

/// The shipped config plus a masked rule for the upstream's other PII endpoints.
fn masking_config() -> Value {
    let mut config = test_plugin_config();
    config["rules"].as_array_mut().unwrap().push(json!({
        "name": "support-reads-exports",
        "action": "allow",
        "when": {"groups": {"any_of": ["support"]}, "methods": ["GET"],
                 "path": {"regex": "^/(text|stream|gzip|large|escaped)$"}},
        "mask": "pii"
    }));
    config
}

fn stack() -> SharedRef {
    static STACK: SharedStack = SharedStack::new();
    STACK.get(|| {
        let stack = builder_for(masking_config(), TestKeys::shared()).start()?;
        wait_first_fetch(stack.jwks());
        Ok(stack)
    })
}

fn support() -> String {
    auth_for(TestKeys::shared(), "sam", &["support"])
}

/// What the upstream answers without Envoy in between.
fn upstream(stack: &Stack, path: &str) -> Reply {
    let reply = send(stack.agent(), "GET", &stack.upstream_url(path), &[], None).unwrap();
    assert_eq!(reply.status, 200, "upstream {path}: {}", reply.text());
    reply
}

/// Every PII value of the customer rows, plus the ones hidden in their notes.
fn pii_values(customers: &[Value]) -> Vec<String> {
    let mut values = Vec::new();
    for c in customers {
        for field in ["email", "phone", "card", "ssn", "iban"] {
            values.push(c[field].as_str().unwrap().to_string());
        }
    }
    values.push("4111-1111-1111-1111".into());
    values
}

fn assert_no_pii(text: &str, values: &[String], context: &str) {
    for value in values {
        assert!(!text.contains(value.as_str()), "{context}: `{value}` leaked:\n{text}");
    }
    // Every email of the demo data is at an example domain.
    assert!(!text.contains("@example."), "{context}: an email leaked:\n{text}");
}

fn assert_length_consistent(reply: &Reply) {
    if let Some(len) = reply.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), reply.body.len(), "stale content-length");
    }
}

#[test]
fn customers_through_a_masked_rule_stay_valid_json_without_any_pii() {
    let stack = stack();
    let raw = upstream(&stack, "/customers").json().unwrap();
    let raw_customers = raw["customers"].as_array().unwrap();
    assert!(raw.to_string().contains("alice.martin@example.com"), "the upstream serves PII");

    let reply = stack.get("/customers", &[("authorization", &support())]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_length_consistent(&reply);
    let masked = reply.json().unwrap();
    let customers = masked["customers"].as_array().unwrap();
    assert_eq!(customers.len(), raw_customers.len());
    assert_no_pii(&reply.text(), &pii_values(raw_customers), "/customers");
    for (c, r) in customers.iter().zip(raw_customers) {
        // Structure and non-PII values are untouched.
        assert_eq!(c["id"], r["id"]);
        assert_eq!(c["name"], r["name"]);
        assert_eq!(c.as_object().unwrap().len(), r.as_object().unwrap().len());
        assert!(c["email"].as_str().unwrap().contains("REDACTED"), "{c}");
    }
    // A notes line without PII survives word for word.
    assert!(customers.iter().any(|c| c["notes"] == "Prefers paper statements."));

    let one = stack.get("/customers/3", &[("authorization", &support())]).unwrap();
    assert_eq!(one.status, 200, "{}", one.text());
    assert_length_consistent(&one);
    assert_no_pii(&one.text(), &pii_values(raw_customers), "/customers/3");
    assert_eq!(one.json().unwrap()["name"], "Carla Diaz");
}

#[test]
fn plain_text_export_is_masked_including_secrets() {
    let stack = stack();
    let raw = upstream(&stack, "/text").text();
    let customers = upstream(&stack, "/customers").json().unwrap()["customers"].clone();
    let secrets = [
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAZGVtby1vbmx5LW5v",
    ];
    for s in secrets {
        assert!(raw.contains(s), "the upstream text holds {s}");
    }

    let reply = stack.get("/text", &[("authorization", &support())]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_length_consistent(&reply);
    let text = reply.text();
    let shown: Vec<Value> = customers.as_array().unwrap().iter().take(8).cloned().collect();
    assert_no_pii(&text, &pii_values(&shown), "/text");
    for s in secrets {
        assert!(!text.contains(s), "{s} leaked:\n{text}");
    }
    assert!(text.starts_with("Customer export"), "{text}");
    assert!(text.contains("Alice Martin <[REDACTED:email]>"), "{text}");
}

#[test]
fn text_bodies_hiding_values_behind_escapes_are_masked_as_a_reader_decodes_them() {
    let stack = stack();
    let customers = upstream(&stack, "/customers").json().unwrap()["customers"].clone();
    let shown: Vec<&Value> = customers.as_array().unwrap().iter().take(8).collect();
    for kind in ["html", "text", "none"] {
        let path = format!("/escaped?type={kind}");
        let raw = upstream(&stack, &path).text();
        assert!(!raw.contains("@example."), "the upstream writes every address escaped: {raw}");
        assert!(raw.contains("\\u0040") && raw.contains("&#64;") && raw.contains("%40"), "{raw}");

        let reply = stack.get(&path, &[("authorization", &support())]).unwrap();
        assert_eq!(reply.status, 200, "{kind}: {}", reply.text());
        assert_length_consistent(&reply);
        let text = reply.text();
        for c in &shown {
            let local = c["email"].as_str().unwrap().split('@').next().unwrap();
            assert!(!text.contains(local), "{kind}: the address of {local} leaked:\n{text}");
            let card = c["card"].as_str().unwrap();
            assert!(!text.contains(&card[1..]), "{kind}: card {card} leaked:\n{text}");
            let ssn_tail = c["ssn"].as_str().unwrap().rsplit('-').next().unwrap();
            assert!(!text.contains(&format!("u002d{ssn_tail}")), "{kind}: ssn leaked:\n{text}");
        }
        for marker in ["[REDACTED:email]", "[REDACTED:credit_card]", "[REDACTED:us_ssn]"] {
            assert_eq!(text.matches(marker).count(), 8, "{kind}: {marker} in\n{text}");
        }
    }
}

#[test]
fn server_sent_events_split_across_chunks_are_masked() {
    let stack = stack();
    let raw = upstream(&stack, "/stream?events=6&delay_ms=10").text();
    assert!(raw.contains("alice.martin@example.com"));
    let reply = stack.get("/stream?events=6&delay_ms=10", &[("authorization", &support())]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let text = reply.text();
    let customers = upstream(&stack, "/customers").json().unwrap()["customers"].clone();
    let streamed: Vec<Value> = customers.as_array().unwrap().iter().take(6).cloned().collect();
    assert_no_pii(&text, &pii_values(&streamed), "/stream");
    assert_eq!(text.matches("data: {").count(), 6, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // Every event is still one JSON object per `data:` line.
    for line in text.lines().filter(|l| l.starts_with("data: {")) {
        let event: Value = serde_json::from_str(&line["data: ".len()..]).unwrap();
        assert!(event["email"].as_str().unwrap().contains("REDACTED"), "{event}");
    }
}

#[test]
fn a_gzip_answer_sent_whatever_the_client_accepts_arrives_decoded_and_masked() {
    let stack = stack();
    let raw = upstream(&stack, "/gzip");
    assert_eq!(raw.header("content-encoding"), Some("gzip"), "the upstream compresses regardless");
    let reply = stack.get("/gzip", &[("authorization", &support()), ("accept-encoding", "gzip")]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.header("content-encoding").is_none(), "{:?}", reply.headers);
    assert_length_consistent(&reply);
    assert!(!reply.body.windows(2).any(|w| w == [0x1f, 0x8b]), "gzip bytes passed");
    let customers = reply.json().unwrap()["customers"].as_array().unwrap().clone();
    assert_eq!(customers.len(), 20);
    assert!(!reply.text().contains("example.com"), "{}", reply.text());
    assert!(reply.text().contains("[REDACTED:email]"));
}

#[test]
fn response_over_the_masking_limit_is_refused_never_sent_unmasked() {
    let stack = stack();
    // The shipped limit is 4 MiB.
    match stack.get("/large?bytes=5000000", &[("authorization", &support())]) {
        Ok(reply) => {
            assert_eq!(reply.status, 502, "{} bytes", reply.body.len());
            assert_eq!(error_of(&reply)["code"], "response_too_large");
            assert!(!reply.text().contains("@example."), "unmasked body leaked");
        }
        // A reset after the headers is also acceptable: nothing unmasked was sent.
        Err(e) => assert!(!e.contains("@example."), "{e}"),
    }
    assert!(stack.stat("wasmcustom.airlock.response_over_limit").unwrap_or(0) >= 1);
}

#[test]
fn large_response_under_the_limit_is_masked_as_a_whole() {
    let stack = stack();
    let reply = stack.get("/large?bytes=300000", &[("authorization", &support())]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_length_consistent(&reply);
    let body = reply.json().unwrap();
    assert!(body["customers"].as_array().unwrap().len() > 100);
    assert!(!reply.text().contains("@example."), "an email leaked");
    assert!(!reply.text().contains("4111 1111 1111 1111"), "a card leaked");
}

#[test]
fn masked_value_counters_move_per_kind() {
    let stack = stack();
    let kinds = ["email", "credit_card", "us_ssn", "iban", "phone"];
    let stat = |kind: &str| stack.stat(&format!("wasmcustom.airlock.masked.pii.{kind}")).unwrap_or(0);
    let before: Vec<u64> = kinds.iter().map(|k| stat(k)).collect();
    let responses = stack.stat("wasmcustom.airlock.masked_responses").unwrap_or(0);
    let reply = stack.get("/customers", &[("authorization", &support())]).unwrap();
    assert_eq!(reply.status, 200);
    for (kind, before) in kinds.iter().zip(before) {
        // 20 customers, each with one value of every kind (notes add more).
        assert!(stat(kind) >= before + 20, "{kind}: {before} -> {}", stat(kind));
    }
    assert!(stack.stat("wasmcustom.airlock.masked_responses").unwrap_or(0) > responses);
}
